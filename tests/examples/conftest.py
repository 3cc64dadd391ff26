"""Helpers for the examples/train.py tests: the script imported in-process, `accelerate launch` runs, tiny models.

Most tests call `main(argv)` in-process (torch is imported once, a run takes about a second); a few go through
`accelerate launch` in a subprocess, as users do. Every run uses tiny models, `--report_to none` and `tmp_path`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from testing_utils import prior_size, small_vqgan_config, tiny_vqgan

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"


@pytest.fixture(scope="session")
def train_script():
    """examples/train.py imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("hf_vqgan_examples_train", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Run:
    """What one in-process `main(argv)` returned and logged."""

    returncode: int
    logs: list[tuple[int, dict]] = field(default_factory=list)  # (step, values) of every `accelerator.log`

    def train_logs(self) -> dict[int, dict]:
        """The per-step training logs (validation logs are the `val/...` ones), by step."""
        return {step: values for step, values in self.logs if not any(k.startswith("val/") for k in values)}


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def run_train(train_script, monkeypatch):
    """Call `train.main(argv)` in this process, recording what it logs; accelerate's singletons are reset after."""
    from accelerate import Accelerator

    original_log = Accelerator.log

    def run(argv: list[str]) -> Run:
        result = Run(returncode=-1)

        def recording_log(self, values, step=None, log_kwargs=None):
            result.logs.append((step, dict(values)))
            return original_log(self, values, step=step, log_kwargs=log_kwargs or {})

        monkeypatch.setattr(Accelerator, "log", recording_log)
        _reset_accelerate()
        try:
            result.returncode = train_script.main([str(a) for a in argv])
        finally:
            _reset_accelerate()
            monkeypatch.setattr(Accelerator, "log", original_log)
        return result

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate_launch(
    argv: list[str], num_processes: int = 1, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run examples/train.py through `accelerate launch` on the CPU, offline, with its own rendezvous port; `env`
    adds variables, `check=False` returns a failed run instead of failing the test.

    One process: `accelerate launch --cpu`. Several: `accelerate launch --multi_gpu` with `ACCELERATE_USE_CPU=1`,
    which starts real gloo processes; `--cpu --num_processes 2` would silently start a single process (accelerate's
    simple launcher only spreads CPU runs over processes through MPI).
    """
    if num_processes == 1:
        topology = ["--cpu", "--num_processes", "1"]
    else:
        topology = ["--multi_gpu", "--num_processes", str(num_processes)]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *topology, "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(TRAIN_SCRIPT), *[str(a) for a in argv],
    ]  # fmt: skip
    environment = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # tiny models, shared CPUs: intra-op threads only spin
        "TQDM_DISABLE": "1",
        **(env or {}),
    }
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    message = f"exit code {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert not check or result.returncode == 0, message
    return result


@pytest.fixture
def accelerate_launch():
    """`accelerate_launch(argv, num_processes=1)`: run examples/train.py through `accelerate launch --cpu`."""
    return _accelerate_launch


@pytest.fixture
def tiny_train_config() -> dict:
    """`small_vqgan_config()` (one channel, 16x16 images, about a second per short run) as JSON reads it back."""
    return json.loads(json.dumps(small_vqgan_config()))


@pytest.fixture
def tiny_prior_config() -> dict:
    """`prior_size()`: the `VQGANPriorConfig` size kwargs of a one-layer prior."""
    return prior_size()


@pytest.fixture
def tiny_vqgan_json(tmp_path, tiny_train_config) -> str:
    """`tiny_train_config` as a `--model_config` file."""
    path = tmp_path / "tiny_vqgan.json"
    path.write_text(json.dumps(tiny_train_config))
    return str(path)


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """12 small PNGs of mixed sizes and modes (RGB, grayscale, one RGBA) for `--train_data_dir`."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        height, width = (20 + i, 24) if i % 2 else (24, 18 + i)
        if i == 0:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode="RGBA")
        elif i % 3 == 0:
            image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")
        image.save(folder / f"image_{i:02d}.png")
    return folder


@pytest.fixture
def tokenizer_dir(tmp_path, tiny_train_config):
    """An (untrained) tiny VQGANModel folder: stage 2 only needs a frozen tokenizer."""
    folder = tmp_path / "tokenizer"
    tiny_vqgan(0, **tiny_train_config).save_pretrained(folder)
    return folder


@pytest.fixture
def prior_json(tmp_path, tiny_prior_config) -> str:
    """`tiny_prior_config` as a `--prior_config` file."""
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(tiny_prior_config))
    return str(path)
