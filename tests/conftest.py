"""Session-wide fixtures; the tiny configs and builders they use live in tests/testing_utils.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing_utils import vqgan_config, write_random_vgg16_features


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run many small ops: one thread avoids oversubscribing a 2-core machine (20x faster here)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_vqgan_config() -> dict:
    """`testing_utils.vqgan_config()`: builds and runs in milliseconds (f=2, attention at 16x16, level 1 of 32 px)."""
    return vqgan_config()


@pytest.fixture(scope="session")
def random_vgg16_file(tmp_path_factory) -> Path:
    """A random VGG16 backbone file (`write_random_vgg16_features`, seed 0), written once per session: LPIPS runs
    with it where the pretrained weights cannot be downloaded."""
    from hf_vqgan.losses.perceptual import VGG16_WEIGHTS_FILENAME

    path = tmp_path_factory.mktemp("random_vgg16") / VGG16_WEIGHTS_FILENAME
    write_random_vgg16_features(path)
    return path
