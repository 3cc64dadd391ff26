"""Layers point one way: inference code (`models/`, `losses/`, `pipelines/`, `convert/`, `cli.py`, the processors)
never imports `hf_vqgan.training`, and a saved pipeline of every condition type loads and samples where the
training-only dependencies cannot be imported at all."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from testing_utils import prior_config, small_vqgan_config

SRC = Path(__file__).resolve().parents[1] / "src" / "hf_vqgan"
INFERENCE = ["models", "losses", "pipelines", "convert", "cli.py", "image_processor.py", "image_utils.py",
             "conditions.py", "hub.py"]  # fmt: skip
BLOCKED = ["datasets", "accelerate", "lpips", "sklearn", "skimage", "hf_vqgan.training"]


def _imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]  # ("hf_vqgan", "pipelines")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _inference_files() -> list[Path]:
    files = []
    for name in INFERENCE:
        path = SRC / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_inference_modules_never_import_training():
    files = _inference_files()
    assert len(files) > 10 and all(path.is_file() for path in files)
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in files
        for line, module in _imports_of(path)
        if module == "hf_vqgan.training" or module.startswith("hf_vqgan.training.")
    ]
    assert offenders == []


def test_the_import_walker_sees_relative_imports():
    # The static check would pass vacuously if relative imports were misread: check it where they are known.
    modules = {module for _, module in _imports_of(SRC / "training" / "data.py")}
    assert {"hf_vqgan.image_processor", "hf_vqgan.image_processor.VQGANImageProcessor"} <= modules
    modules = {module for _, module in _imports_of(SRC / "pipelines" / "pipeline_vqgan_transformer.py")}
    assert "hf_vqgan.models.prior.VQGANPriorForCausalLM" in modules


# A `None` entry in `sys.modules` is Python's own "not installed" marker: `import` raises ModuleNotFoundError and
# `importlib.util.find_spec` answers None, so libraries probing for optional packages see them missing.
BLOCKER = """
import sys

for name in {blocked!r}:
    sys.modules[name] = None
"""

SCRIPT = """
import sys

import numpy as np
import PIL.Image
import torch

for name in {blocked!r}:
    try:
        __import__(name)
    except ImportError:
        continue
    raise AssertionError(f"{{name}} should not be importable here")

from hf_vqgan import VQGANImageProcessor, VQGANModel, VQGANPriorConfig, VQGANPriorForCausalLM, VQGANTransformerPipeline

TINY = {tiny!r}  # testing_utils.small_vqgan_config(3): the script runs where tests/ is not importable
PRIOR = {prior!r}  # testing_utils.prior_config(n_embd=16)
SIZE, FACTOR = 16, 4
rng = np.random.default_rng(0)
photo = PIL.Image.fromarray(np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8)))
CASES = {{
    "class": (None, None),
    "segmentation": (3, rng.integers(0, 3, (SIZE, SIZE))),
    "depth": (1, rng.random((SIZE, SIZE)).astype(np.float32)),
    "edges": (1, photo),
    "lowres": (3, photo),
}}
for case, (channels, condition) in CASES.items():
    torch.manual_seed(0)
    vqgan = VQGANModel(**TINY).eval()
    kwargs, parts = {{}}, {{}}
    if condition is not None:
        size = SIZE // FACTOR if case == "lowres" else SIZE
        cond_vqgan = VQGANModel(**{{**TINY, "in_channels": channels, "out_channels": channels,
                                    "channel_multipliers": (1,), "sample_size": size}}).eval()
        kwargs = dict(cond_codebook_size=16, cond_length=size * size)
        parts = dict(cond_vqgan=cond_vqgan, condition_processor=VQGANImageProcessor(
            resolution=SIZE, condition_type=case, num_labels=3 if case == "segmentation" else None,
            lowres_factor=FACTOR))
    config = VQGANPriorConfig(**PRIOR, num_classes=2 if case == "class" else 0, **kwargs)
    pipe = VQGANTransformerPipeline(vqgan=vqgan, transformer=VQGANPriorForCausalLM(config).eval(), **parts)
    folder = f"{{sys.argv[1]}}/{{case}}"
    pipe.save_pretrained(folder)
    loaded = VQGANTransformerPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    call = dict(class_labels=1) if case == "class" else dict(condition_image=condition)
    images = loaded(**call, generator=torch.Generator().manual_seed(0), output_type="pil").images
    assert len(images) == 1 and images[0].size == (SIZE, SIZE), case
    print("sampled", case)
for name in {blocked!r}:
    assert sys.modules[name] is None, name  # still blocked: nothing imported it behind the marker's back
"""


def test_saved_pipelines_of_every_condition_type_sample_without_training_dependencies(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=BLOCKED)))
    python_path = [str(site), str(SRC.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = SCRIPT.format(blocked=BLOCKED, tiny=small_vqgan_config(3), prior=prior_config(n_embd=16))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pipelines")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split() == [word for case in ("class", "segmentation", "depth", "edges", "lowres")
                                     for word in ("sampled", case)]  # fmt: skip
