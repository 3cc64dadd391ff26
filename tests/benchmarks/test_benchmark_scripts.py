"""The benchmark scripts' helpers and a tiny run of the GPU benchmark on the CPU."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import torch

from hf_vqgan import VQGANModel

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))  # the inference helpers the benchmarks time
from testing_utils import seeded, vqgan_config  # noqa: E402
from vqgan_inference import prepare_vqgan_for_inference, reconstruct_images, tokenize_images  # noqa: E402


# -------------------------------------------------------------------------------------------------- inference
def test_fast_tokenize_and_reconstruct_match_the_plain_verbs():
    torch.manual_seed(0)
    plain = VQGANModel(**vqgan_config()).eval()
    fast = prepare_vqgan_for_inference(copy.deepcopy(plain))
    assert not any(p.requires_grad for p in fast.parameters())
    pixels = torch.rand(5, 3, 32, 32, generator=seeded(0)) * 2 - 1
    with torch.no_grad():
        indices = plain.tokenize(pixels)
        reconstruction = plain(pixels).sample
    fast_indices = tokenize_images(fast, pixels, batch_size=2)  # batches of 2, 2, 1
    assert fast_indices.shape == indices.shape and (fast_indices == indices).float().mean() > 0.99
    torch.testing.assert_close(reconstruct_images(fast, pixels, batch_size=2), reconstruction, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------- benchmarks
def test_gpu_benchmark_script_runs_tiny_on_cpu(tmp_path):
    output = tmp_path / "raw.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}  # tiny sizes: threads only spin
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--tiny", "--output", str(output)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = output.read_text()
    for figure in ("sampling", "re-run the prefix", "dynamic KV cache", "captured decode",
                   "training step", "encode+decode", "== quantizers"):  # fmt: skip
        assert figure in text, figure
    # Issue 18: one timed training step per quantizer type, each with its images/s.
    for quantizer in ("vq", "fsq", "lfq"):
        line = next(line for line in text.splitlines() if line.startswith(f"tiny, {quantizer} "))
        assert f" {quantizer} " in line and "images/s" in line, line
    assert "ERROR" not in text
