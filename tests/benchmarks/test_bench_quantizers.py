"""benchmarks/bench_quantizers.py: four quantizers on one architecture, through `examples/train.py` (issue 18)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hf_vqgan import VQGANModel

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_quantizers.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module (benchmarks/ on `sys.path`, as `test_benchmark_scripts.py` imports its helpers)."""
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    return importlib.import_module("bench_quantizers")


def run_bench(tmp_path: Path, *arguments: str) -> tuple[str, str]:
    """Run the script in a subprocess; its stdout and the raw-output file's text."""
    output = tmp_path / "raw.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path / "runs"), "--output", str(output),
               "--batch_size", "4", *arguments]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, output.read_text()


@pytest.mark.parametrize("data", ["photos", "digits"])
def test_every_quantizer_is_the_same_architecture_with_about_the_same_codes(bench, data):
    configs = {name: bench.quantizer_config(name, data) for name in bench.QUANTIZERS}
    models = {name: VQGANModel(**config) for name, config in configs.items()}
    shared = {k: v for k, v in configs["vq-l2"].items() if k not in bench.QUANTIZER_KEYS}
    for name, config in configs.items():
        assert {k: v for k, v in config.items() if k not in bench.QUANTIZER_KEYS} == shared, name
        assert models[name].config.quantizer_type == ("vq" if name.startswith("vq") else name)
    sizes = {name: model.config.codebook_size for name, model in models.items()}
    assert sizes["vq-plain"] == sizes["vq-l2"] == (1024 if data == "photos" else 128)
    assert all(0.9 * sizes["vq-l2"] <= size <= 1.1 * sizes["vq-l2"] for size in sizes.values()), sizes
    if data == "photos":
        assert sizes["fsq"] == 1000 and models["lfq"].config.code_dim == 10
    # Plain VQ: full-width codes, nothing nursing the codebook; the recommended one: l2, 8 dimensions, restarts.
    assert (
        configs["vq-plain"]["code_dim"] == shared["latent_channels"] and not configs["vq-plain"]["l2_normalize_codes"]
    )
    assert configs["vq-plain"]["dead_code_steps"] == 0
    assert configs["vq-l2"]["code_dim"] == 8 and configs["vq-l2"]["l2_normalize_codes"]
    assert configs["vq-l2"]["dead_code_steps"] > 0


def test_unknown_quantizer_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--quantizers", "vq-l2,rvq"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert result.returncode == 2
    assert "unknown ['rvq']" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # two trainings through train.py subprocesses, then a reuse run: ~50 s on a quiet 2-core CPU
def test_photos_run_prints_a_row_per_quantizer_and_writes_the_grid(tmp_path):
    """Two of the four quantizers (a learned codebook and a fixed grid; the four configs are checked above), so
    that the suite stays short: every row, the grid and `--reuse`."""
    grid = tmp_path / "grid.png"
    stdout, raw = run_bench(tmp_path, "--data", "photos", "--steps", "2", "--quantizers", "vq-l2,fsq", "--grid",
                            str(grid))  # fmt: skip
    for text in (stdout, raw):
        rows = [line for line in text.splitlines() if line.startswith("| ")]
        assert rows[0].startswith("| quantizer | codes | code dim | PSNR dB | SSIM | rel. sharpness |")
        assert [row.split(" | ")[0][2:] for row in rows[1:]] == ["vq-l2", "fsq"]
        assert [row.split(" | ")[1] for row in rows[1:]] == ["1024", "1000"]
    command = next(line for line in raw.splitlines() if line.startswith("$ python benchmarks/bench_quantizers.py "))
    assert "--data photos --steps 2" in command and "load average" in raw
    # Rows: held-out originals and the two reconstructions, 8 patches of 32 px each at scale 4 with 4 px padding.
    assert Image.open(grid).size == (8 * (128 + 4) + 4, 3 * (128 + 4) + 4)
    results = json.loads((tmp_path / "runs" / "results.json").read_text())["results"]
    assert all(0 < r["codebook_usage"] <= 1 and r["codebook_perplexity"] >= 1 for r in results.values())

    # --reuse keeps finished runs: the same figures, the recorded times, no training.
    stdout_again, _ = run_bench(tmp_path, "--data", "photos", "--steps", "2", "--quantizers", "fsq", "--reuse")
    assert "reusing" in stdout_again and f"training {tmp_path}" not in stdout_again
    again = json.loads((tmp_path / "runs" / "results.json").read_text())["results"]["fsq"]
    assert again["psnr"] == pytest.approx(results["fsq"]["psnr"]) and again["seconds"] == results["fsq"]["seconds"]


@pytest.mark.slow
def test_digits_run_trains_the_prior_and_scores_its_samples(tmp_path):
    stdout, raw = run_bench(tmp_path, "--data", "digits", "--quantizers", "lfq", "--steps", "2", "--prior_steps", "2",
                            "--samples_per_class", "1")  # fmt: skip
    rows = [line for line in raw.splitlines() if line.startswith("| ")]
    assert rows[0].endswith("| prior s (CPU s) | sample accuracy |") and rows[1].startswith("| lfq | 128 | 7 |")
    accuracy = float(rows[1].split(" | ")[-1].rstrip(" |"))
    assert 0 <= accuracy <= 1
    assert Image.open(tmp_path / "runs" / "lfq" / "samples.png").size[0] > 0
