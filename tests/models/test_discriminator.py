from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_vqgan.models.discriminator import NORM_TYPES, PatchGANDiscriminator


def tiny(**overrides) -> PatchGANDiscriminator:
    config = dict(in_channels=3, base_channels=8, num_layers=3, norm_type="batch", norm_num_groups=4)
    config.update(overrides)
    return PatchGANDiscriminator(**config)


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_output_shape(num_layers, size):
    torch.manual_seed(0)
    H, W = size
    logits = tiny(num_layers=num_layers)(torch.randn(2, 3, H, W))
    assert logits.shape == (2, 1, H // 2**num_layers - 2, W // 2**num_layers - 2)


def test_layer_layout_follows_pix2pix():
    disc = tiny(base_channels=8, num_layers=4)
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(4, 4)] * 6
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1, 1]
    # Widths double per layer and stop at 8 x base_channels.
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 64, 1]
    # Norm after every conv but the first and the last.
    assert [type(b.norm) for b in disc.blocks] == [nn.BatchNorm2d] * 4


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_norm_types_run_and_backprop(norm_type):
    torch.manual_seed(0)
    disc = tiny(norm_type=norm_type)
    expected = {"batch": nn.BatchNorm2d, "group": nn.GroupNorm, "instance": nn.InstanceNorm2d, "none": nn.Identity}
    assert all(type(b.norm) is expected[norm_type] for b in disc.blocks)
    # Conv bias only where no norm provides a shift.
    assert all((b.conv.bias is not None) == (norm_type == "none") for b in disc.blocks)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    logits = disc(x)
    assert logits.shape == (2, 1, 2, 2)
    logits.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert disc.conv_in.weight.grad.abs().sum() > 0


def test_initialization():
    torch.manual_seed(0)
    disc = tiny(base_channels=64, num_layers=3)
    big_conv = disc.blocks[-1].conv.weight  # 256 -> 512, 2M weights: the sample std is tight
    assert abs(big_conv.mean().item()) < 1e-3
    assert abs(big_conv.std().item() - 0.02) < 1e-3
    norm = disc.blocks[-1].norm
    assert abs(norm.weight.mean().item() - 1.0) < 0.01 and abs(norm.weight.std().item() - 0.02) < 0.005
    assert torch.all(norm.bias == 0)
    assert torch.all(disc.conv_in.bias == 0) and torch.all(disc.conv_out.bias == 0)


@pytest.mark.parametrize("norm_type", ["batch", "group"])
def test_save_and_load_round_trip(tmp_path, norm_type):
    torch.manual_seed(0)
    disc = tiny(norm_type=norm_type)
    x = torch.randn(2, 3, 32, 32)
    disc.train()
    disc(x)  # moves the BatchNorm running statistics away from their initial values, so the buffers must be saved
    disc.eval()
    disc.save_pretrained(tmp_path)
    loaded = PatchGANDiscriminator.from_pretrained(tmp_path).eval()
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in disc.config.items() if not k.startswith("_")
    }
    torch.testing.assert_close(loaded(x), disc(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(num_layers=0), "num_layers"),
        (dict(base_channels=0), "base_channels"),
        (dict(in_channels=2.5), "in_channels"),
        (dict(norm_type="layer"), "norm_type"),
        (dict(norm_type="group", base_channels=12, norm_num_groups=8), "norm_num_groups"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_bad_inputs_raise():
    disc = tiny(num_layers=3)
    with pytest.raises(ValueError, match="at least 24"):
        disc(torch.randn(1, 3, 23, 64))
    with pytest.raises(ValueError, match="channels"):
        disc(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="shape"):
        disc(torch.randn(3, 32, 32))
    assert disc(torch.randn(1, 3, 24, 24)).shape == (1, 1, 1, 1)
