# `make test` and `make demo` work on a fresh machine with only Python: they create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch and torchvision are pinned to the releases this project's machines provide; raise them together.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install test test-browser demo demo-app demo-screenshots lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.py
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The web demo in headless Chromium and under load (also part of `make test`); needs Debian's chromium on PATH.
test-browser: $(STAMP)
	$(BIN)/python -m pytest -q -m browser tests/demo

# Rerun the browser tests, saving their screenshots of each tab into docs/ (for the README).
demo-screenshots: $(STAMP)
	DEMO_SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q tests/demo/test_browser.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

demo: $(STAMP)
	$(BIN)/python examples/demo.py --output_dir outputs

# The web app on what `make demo` trained: open http://127.0.0.1:7860
demo-app: $(STAMP)
	$(BIN)/hf-vqgan demo --model outputs/pipeline --port 7860

clean:
	rm -rf $(VENV) outputs build *.egg-info src/*.egg-info
