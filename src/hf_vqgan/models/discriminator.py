"""The PatchGAN discriminator VQGAN trains against (Isola et al. 2017, "Image-to-Image Translation with
Conditional Adversarial Networks"; used unchanged by Esser et al. 2021, Sec. 3.1).

A stack of 4x4 convolutions classifies overlapping patches as real or fake: `num_layers` stride-2 convolutions
halve the resolution, one stride-1 convolution widens the receptive field, and a final stride-1 convolution gives
one logit per patch. Widths double per layer up to 8 x `base_channels`. Shapes: B batch, C channels, H/W pixels,
h/w patch grid.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

NORM_TYPES = ("batch", "group", "instance", "none")

# Every convolution is 4x4 with padding 1, as in pix2pix: stride 2 halves the size, stride 1 shrinks it by one.
_KERNEL_SIZE = 4
_PADDING = 1
# Widths stop growing at 8 x base_channels (512 for the default 64), as in pix2pix.
_MAX_WIDTH_MULTIPLIER = 8


def _make_norm(norm_type: str, channels: int, num_groups: int) -> nn.Module:
    if norm_type == "batch":
        return nn.BatchNorm2d(channels)
    if norm_type == "group":
        return nn.GroupNorm(num_groups, channels)
    if norm_type == "instance":
        # Affine so that every norm type has a learnable scale and shift and the convolutions can drop their bias.
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DiscriminatorBlock(nn.Module):
    """4x4 convolution, optional normalization, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_type: str, num_groups: int):
        super().__init__()
        # A norm with its own shift makes a conv bias redundant; keep the bias only without a norm.
        self.conv = nn.Conv2d(
            in_channels, out_channels, _KERNEL_SIZE, stride=stride, padding=_PADDING, bias=norm_type == "none"
        )
        self.norm = _make_norm(norm_type, out_channels, num_groups)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PatchGANDiscriminator(ModelMixin, ConfigMixin):
    r"""
    The N-layer PatchGAN discriminator: one real/fake logit per overlapping image patch.

    For an input of `height` x `width` pixels the logit map is `(height // 2**num_layers - 2)` x
    `(width // 2**num_layers - 2)`; with the defaults each logit sees a 70 x 70 pixel patch.

    Args:
        in_channels (`int`, defaults to 3): Channels of the images to judge.
        base_channels (`int`, defaults to 64): Width of the first convolution (`ndf` in pix2pix); later layers
            double it, up to 8 times.
        num_layers (`int`, defaults to 3): Number of stride-2 convolutions.
        norm_type (`str`, defaults to `"batch"`): Normalization after every convolution but the first and the
            last: `"batch"` (the reference), `"group"`, `"instance"` or `"none"`.
        norm_num_groups (`int`, defaults to 32): Groups for `norm_type="group"`; must divide `base_channels`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        num_layers: int = 3,
        norm_type: str = "batch",
        norm_num_groups: int = 32,
    ):
        super().__init__()
        _validate_config(
            in_channels=in_channels,
            base_channels=base_channels,
            num_layers=num_layers,
            norm_type=norm_type,
            norm_num_groups=norm_num_groups,
        )
        widths = [base_channels * min(2**i, _MAX_WIDTH_MULTIPLIER) for i in range(num_layers + 1)]
        # The first layer sees raw pixels and has no norm (normalizing a 3-channel input would discard its contrast).
        self.conv_in = nn.Conv2d(in_channels, widths[0], _KERNEL_SIZE, stride=2, padding=_PADDING)
        self.act_in = nn.LeakyReLU(0.2)
        strides = [2] * (num_layers - 1) + [1]
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(widths[i], widths[i + 1], stride, norm_type, norm_num_groups)
            for i, stride in enumerate(strides)
        )
        self.conv_out = nn.Conv2d(widths[-1], 1, _KERNEL_SIZE, stride=1, padding=_PADDING)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # N(0, 0.02) as in pix2pix / taming (DCGAN's recipe); zero bias as pix2pix's `init_weights`.
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d):
                # Scale N(1, 0.02) and zero shift, as the reference initializes its BatchNorm.
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    @property
    def min_input_size(self) -> int:
        """The smallest height or width that leaves at least one patch logit."""
        return 3 * 2**self.config.num_layers

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        Judge images of shape `(batch_size, in_channels, height, width)` in [-1, 1]; returns patch logits of shape
        `(batch_size, 1, height // 2**num_layers - 2, width // 2**num_layers - 2)` (positive means "real").
        """
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            )
            raise ValueError(f"`pixel_values` must have shape (batch_size, channels, height, width), got {shape}.")
        if pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`pixel_values` has {pixel_values.shape[1]} channels, but this discriminator expects "
                f"{self.config.in_channels} (shape {tuple(pixel_values.shape)})."
            )
        H, W = pixel_values.shape[-2:]
        if min(H, W) < self.min_input_size:
            raise ValueError(
                f"`pixel_values` of {H}x{W} pixels is too small for a {self.config.num_layers}-layer discriminator; "
                f"height and width must be at least {self.min_input_size}."
            )
        h = self.act_in(self.conv_in(pixel_values))  # (B, C, H/2, W/2)
        for block in self.blocks:
            h = block(h)  # (B, C', H/2^n, W/2^n), then one pixel smaller per side after the stride-1 block
        return self.conv_out(h)  # (B, 1, h, w)


def _validate_config(*, in_channels, base_channels, num_layers, norm_type, norm_num_groups) -> None:
    for name, value in [
        ("in_channels", in_channels),
        ("base_channels", base_channels),
        ("num_layers", num_layers),
        ("norm_num_groups", norm_num_groups),
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if norm_type not in NORM_TYPES:
        raise ValueError(f"`norm_type` must be one of {list(NORM_TYPES)}, got {norm_type!r}.")
    # Every width is base_channels times a power of two, so divisibility of base_channels suffices.
    if norm_type == "group" and base_channels % norm_num_groups:
        raise ValueError(
            f"With norm_type='group', `base_channels`={base_channels} must be divisible by "
            f"`norm_num_groups`={norm_num_groups}."
        )
