"""Finite scalar quantization (FSQ; Mentzer, Minnen, Agustsson & Tschannen 2023, "Finite Scalar Quantization:
VQ-VAE Made Simple").

Each of the `D = len(levels)` channels is bounded to `levels[i]` values and rounded to the nearest one, with a
straight-through gradient. The codebook is the implied grid, of `prod(levels)` codes: nothing is learned, so no
codebook can collapse and there is no codebook or commitment loss.

Shapes: D code dimension, N vectors, K codebook size.
"""

from __future__ import annotations

import math

import torch

from .grid_quantizer import GridQuantizer

# FSQ paper, Sec. 4.1: the bound's margin, so that tanh never reaches the outermost rounding boundary.
_BOUND_EPS = 1e-3


def fsq_code_shape(levels, code_dim: int | None = None, codebook_size: int | None = None) -> tuple[int, int]:
    """
    Check `levels` and return `(code_dim, codebook_size)` = `(len(levels), prod(levels))`.

    `code_dim` and `codebook_size` may be left `None` (they follow from the levels); given, they must agree.
    """
    if (
        not isinstance(levels, list | tuple)
        or not levels
        or any(not isinstance(level, int) or isinstance(level, bool) or level < 3 for level in levels)
    ):
        # A level of 2 has its one rounding boundary where tanh(z + shift) = 0, at z = -atanh(1 / (1 + eps)) ~ -3.8:
        # the channel would hardly ever change. LFQ is the quantizer for binary codes.
        raise ValueError(
            f"`fsq_levels` must be a non-empty list of ints >= 3 (e.g. [8, 5, 5, 5] for 1,000 codes; for binary "
            f"codes use quantizer_type='lfq'), got {levels!r}."
        )
    derived_dim, derived_size = len(levels), math.prod(levels)
    if code_dim is not None and code_dim != derived_dim:
        raise ValueError(
            f"`code_dim`={code_dim!r} disagrees with `fsq_levels`={list(levels)}, which give {derived_dim} "
            "dimensions; leave `code_dim` unset (None) for FSQ."
        )
    if codebook_size is not None and codebook_size != derived_size:
        raise ValueError(
            f"`codebook_size`={codebook_size!r} disagrees with `fsq_levels`={list(levels)}, whose product is "
            f"{derived_size}; leave `codebook_size` unset (None) for FSQ."
        )
    return derived_dim, derived_size


class FiniteScalarQuantizer(GridQuantizer):
    r"""
    FSQ: round each bounded channel to one of `levels[i]` values. No learned parameters.

    The codes lie in [-1, 1]: channel `i` takes the values `(j - levels[i] // 2) / (levels[i] // 2)` for `j` in
    `0 .. levels[i] - 1` (an even level has one more value below zero than above, the paper's half-integer offset).
    The index of a code is the mixed-radix number of its digits `j`, the first channel the least significant.

    Args:
        levels (`list[int]`): Number of values per channel, each >= 3; the paper's choices are `[8, 6, 5]` (240
            codes), `[8, 5, 5, 5]` (1,000), `[7, 5, 5, 5, 5]` (4,375), `[8, 8, 8, 6, 5]` (15,360) and
            `[8, 8, 8, 5, 5, 5]` (64,000).
        usage_window (`int`, defaults to 100): Number of training steps over which `usage_statistics()` counts.
    """

    def __init__(self, levels: list[int] | tuple[int, ...], usage_window: int = 100):
        code_dim, codebook_size = fsq_code_shape(levels)
        super().__init__(codebook_size, code_dim, usage_window)
        self.levels = tuple(levels)
        levels_tensor = torch.tensor(self.levels)
        # Fixed by `levels`, so not saved (`persistent=False`): the state_dict stays empty.
        self.register_buffer("_levels", levels_tensor, persistent=False)  # (D,)
        self.register_buffer("_radix", torch.cumprod(torch.tensor((1,) + self.levels[:-1]), 0), persistent=False)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        # FSQ paper, Appendix A.1: f(z) = tanh(z + shift) * half_l - offset maps onto (-(L//2) - 1/2, L - L//2 - 1/2)
        # minus a margin, so rounding gives exactly L integers, -(L//2) .. L - 1 - L//2 (an even L is offset by 1/2).
        levels = self._levels.float()
        half_l = (levels - 1) * (1 + _BOUND_EPS) / 2
        offset = (self._levels % 2 == 0).float() * 0.5
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        bounded = self._bound(z)  # (N, D)
        # A NaN latent (a step the training loop then skips) still gets an index in range: bincount needs one.
        digits = bounded.detach().nan_to_num(0.0).round().long() + self._levels // 2  # (N, D), in [0, L)
        indices = (digits * self._radix).sum(-1)  # (N,)
        # Straight-through rounding written as code + (x - sg[x]): the value is exactly the code `lookup` gives
        # (x - x is exactly zero in floating point), the gradient that of the bounded latent.
        half_width = (self._levels // 2).float()
        return self._codes(indices) + (bounded - bounded.detach()) / half_width, indices

    def _codes(self, indices: torch.LongTensor) -> torch.Tensor:
        digits = (indices[..., None] // self._radix) % self._levels  # (..., D)
        half_width = self._levels // 2
        return (digits - half_width).float() / half_width.float()

    def _losses(self, z, codes, num_vectors):
        zero = torch.zeros((), device=z.device)
        return zero, zero, None

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}, codebook_size={self.codebook_size}"
