"""benchmarks/bench_vqgan_vs_vqvae.py: the photo-patch data keeps held-out photos out of training (issue 3's figure)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANImageProcessor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location(
        "bench_vqgan_vs_vqvae", REPO / "benchmarks" / "bench_vqgan_vs_vqvae.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("channels", [1, 3])
def test_photo_patches_hold_out_whole_photos(bench, channels, tmp_path):
    train_dir, held_out = bench.write_photo_patches(tmp_path, channels)
    files = sorted(train_dir.glob("*.png"))
    photos = {f.name.rsplit("_", 2)[0] for f in files}
    assert photos == set(bench.PHOTOS) - set(bench.HELD_OUT_PHOTOS)
    # Training patches overlap (stride 16 in 128 px: 7 x 7 per photo); held-out ones tile (4 x 4 per photo).
    assert len(files) == 49 * len(photos)
    assert held_out.shape == (16 * len(bench.HELD_OUT_PHOTOS), channels, 32, 32)
    assert held_out.min() >= -1 and held_out.max() <= 1 and held_out.std() > 0.1
    first = Image.open(files[0])
    assert first.size == (32, 32) and first.mode == ("L" if channels == 1 else "RGB")
    # No held-out patch appears among the training patches.
    transform = VQGANImageProcessor(32, channels=channels)
    train = torch.stack([transform(Image.open(f)) for f in files])
    distances = torch.cdist(held_out.flatten(1), train.flatten(1))
    assert distances.min() > 0


def test_grid_has_a_row_per_model(bench, tmp_path):
    images = torch.rand(10, 1, 32, 32) * 2 - 1
    bench.write_grid(tmp_path / "grid.png", images, {"a": images, "b": -images}, count=4)
    grid = Image.open(tmp_path / "grid.png")
    # 3 rows (originals, a, b) x 4 columns of 32 px images at scale 4 with 4 px padding.
    assert grid.size == (4 * (128 + 4) + 4, 3 * (128 + 4) + 4)
