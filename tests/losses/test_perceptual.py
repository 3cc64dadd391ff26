from __future__ import annotations

import socket
import time

import pytest
import torch

from hf_vqgan.losses.perceptual import (
    VGG16_WEIGHTS_FILENAME,
    LPIPSLoss,
    LPIPSWeightsUnavailableError,
    vgg16_cache_path,
)

torchvision = pytest.importorskip("torchvision")
pytest.importorskip("lpips")
from testing_utils import write_random_vgg16_features  # noqa: E402


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and no network: every connection attempt fails at once (and is counted)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """A randomly initialized torchvision VGG16 state dict (its `features.*`), saved like `vgg16-397923af.pth`."""
    path = tmp_path_factory.mktemp("vgg") / VGG16_WEIGHTS_FILENAME
    return path, write_random_vgg16_features(path)


@pytest.fixture(scope="module")
def random_lpips(random_vgg16_file):
    """One LPIPSLoss with a random backbone for the module (building VGG16 takes a second or two)."""
    return LPIPSLoss(vgg_weights_path=random_vgg16_file)


def _assert_backbone_equals(loss: LPIPSLoss, state_dict: dict[str, torch.Tensor]) -> None:
    backbone = {name: t for s in loss.lpips.net.children() for name, t in s.state_dict().items()}
    assert len(backbone) == 26  # 13 convolutions, weight and bias
    for name, tensor in backbone.items():
        torch.testing.assert_close(tensor, state_dict[f"features.{name}"], rtol=0, atol=0)


def test_random_backbone_file_is_what_lpips_runs(random_lpips, random_vgg16_file):
    state_dict = torch.load(random_vgg16_file, weights_only=True)
    _assert_backbone_equals(random_lpips, state_dict)


def test_random_backbone_distances_and_gradients(random_lpips):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    assert random_lpips(x, x).abs().max() < 1e-6
    x = x.requires_grad_()
    distance = random_lpips(x, y)
    assert distance.shape == (2,) and torch.all(distance > 1e-3)
    distance.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_frozen_and_stays_in_eval(random_lpips):
    assert not any(p.requires_grad for p in random_lpips.parameters())
    random_lpips.train()
    assert not any(m.training for m in random_lpips.modules())
    # In train mode the heads' dropout would make two calls differ.
    x, y = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16) * 0.5
    torch.testing.assert_close(random_lpips(x, y), random_lpips(x, y), rtol=0, atol=0)


def test_shape_mismatch_raises(random_lpips):
    with pytest.raises(ValueError, match="same shape|shape"):
        random_lpips(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 16, 16))


def test_default_without_weights_fails_fast_with_both_ways_out(offline):
    start = time.perf_counter()
    with pytest.raises(LPIPSWeightsUnavailableError) as info:
        LPIPSLoss()
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"construction took {elapsed:.1f}s to fail"
    assert len(offline) >= 1  # the default did try to download, and the failure was caught
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    for needle in (
        "vgg_weights_path",
        "--lpips_vgg_weights",
        VGG16_WEIGHTS_FILENAME,
        "TORCH_HOME",
        "--perceptual_weight 0",
    ):
        assert needle in message


def test_local_weights_file_is_loaded(offline, vgg_features_file):
    path, state_dict = vgg_features_file
    loss = LPIPSLoss(vgg_weights_path=path)
    _assert_backbone_equals(loss, state_dict)
    assert offline == []  # no download attempted


def test_weights_in_torch_hub_cache_are_used(offline, vgg_features_file):
    path, state_dict = vgg_features_file
    cached = vgg16_cache_path()
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    _assert_backbone_equals(LPIPSLoss(), state_dict)
    assert offline == []


def test_bad_weights_files_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="--lpips_vgg_weights"):
        LPIPSLoss(vgg_weights_path=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"classifier.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="features.0.weight"):
        LPIPSLoss(vgg_weights_path=wrong)
    with pytest.raises(TypeError, match="random_backbone"):  # the test-only switch is gone from the library
        LPIPSLoss(random_backbone=True)
