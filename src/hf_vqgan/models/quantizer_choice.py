"""Which quantizer a `VQGANModel` builds (`quantizer_type`), and the code shape each one implies.

`codebook_size` always means the number of distinct token values the tokenizer emits (the prior's image
vocabulary), whatever the quantizer: a VQ codebook's entries, FSQ's `prod(fsq_levels)` grid points, LFQ's `2^bits`
sign patterns. FSQ and LFQ derive `code_dim` (and FSQ `codebook_size`) from their options; left `None` these are
filled in, given explicitly they must agree, else a `ValueError` says what they should be.
"""

from __future__ import annotations

from torch import nn

from .fsq import FiniteScalarQuantizer, fsq_code_shape
from .lfq import LookupFreeQuantizer, lfq_code_shape

QUANTIZER_TYPES = ("vq", "fsq", "lfq")
# What a plain VQGANModel() gets (taming's f16 ImageNet tokenizer: 1,024 codes of 256 dimensions).
DEFAULT_CODE_DIM, DEFAULT_CODEBOOK_SIZE = 256, 1024


def resolve_code_shape(
    quantizer_type: str, code_dim: int | None, codebook_size: int | None, fsq_levels
) -> tuple[int, int]:
    """`(code_dim, codebook_size)` of a `VQGANModel` config, derived where the quantizer fixes them."""
    if quantizer_type not in QUANTIZER_TYPES:
        raise ValueError(f"Unknown `quantizer_type` {quantizer_type!r}; expected one of {list(QUANTIZER_TYPES)}.")
    if quantizer_type == "fsq":
        if fsq_levels is None:
            raise ValueError("quantizer_type='fsq' needs `fsq_levels`, e.g. [8, 5, 5, 5] for 1,000 codes.")
        return fsq_code_shape(fsq_levels, code_dim, codebook_size)
    if fsq_levels is not None:
        raise ValueError(
            f"`fsq_levels`={fsq_levels!r} applies to quantizer_type='fsq' only, got quantizer_type={quantizer_type!r}."
        )
    if quantizer_type == "lfq":
        return lfq_code_shape(DEFAULT_CODEBOOK_SIZE if codebook_size is None else codebook_size, code_dim)
    return (
        DEFAULT_CODE_DIM if code_dim is None else code_dim,
        DEFAULT_CODEBOOK_SIZE if codebook_size is None else codebook_size,
    )


def build_grid_quantizer(
    quantizer_type: str,
    *,
    fsq_levels,
    codebook_size: int,
    lfq_entropy_weight: float,
    lfq_commitment_weight: float,
    lfq_entropy_temperature: float,
    usage_window: int,
    vq_options: dict,
) -> nn.Module:
    """The FSQ or LFQ quantizer of a `VQGANModel` config; `vq_options` (the codebook options, by config name) must
    be at their defaults, since a fixed grid has no codebook to normalise, average or restart."""
    set_options = {name: value for name, value in vq_options.items() if value}
    if set_options:
        raise ValueError(
            f"{sorted(set_options)} configure a learned VQ codebook, which quantizer_type={quantizer_type!r} does "
            f"not have; leave them at their defaults (got {set_options})."
        )
    if quantizer_type == "fsq":
        return FiniteScalarQuantizer(fsq_levels, usage_window=usage_window)
    return LookupFreeQuantizer(
        codebook_size,
        entropy_weight=lfq_entropy_weight,
        commitment_weight=lfq_commitment_weight,
        entropy_temperature=lfq_entropy_temperature,
        usage_window=usage_window,
    )
