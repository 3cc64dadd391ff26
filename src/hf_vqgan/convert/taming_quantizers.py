"""The quantizer half of converting taming-transformers first stages: which `VQGANModel` quantizer options each
taming quantizer maps to, and where a remapped codebook's used indices come from.

- `VectorQuantizer2` (`VQModel`, `VQNoDiscModel`, `VQSegmentationModel`): `quantizer_type="vq"`, beta 0.25 on the
  codebook term (`legacy_beta=True`, the default `legacy=True` of taming).
- `GumbelQuantize` (`GumbelVQ`): `quantizer_type="gumbel"`, `gumbel_kl_weight` = the config's `kl_weight` (taming's
  default 1e-8), straight-through, initial temperature 1.0 (the temperature schedule is training-only). Its `proj`
  takes `z_channels` inputs from a `quant_conv` that gives `embed_dim`, so the original runs only when they are equal.
- `EMAVectorQuantizer` (`EMAVQ`): `use_ema=True`, decay 0.99, epsilon 1e-5, and a loss of `0.25 * ||z - sg[e]||^2`
  alone (no codebook term), which is `commitment_beta=0.25, legacy_beta=False`. Its `embedding.cluster_size` and
  `embedding.embed_avg` become our `ema_cluster_size` and `ema_embed_sum`.
- `remap`: the whole table converts; the used rows (taming's `quantize.used` buffer, saved in its checkpoints, or the
  `.npy` file the config names) become `quantizer.remap.used`, and `codebook_size` counts token values.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch

GUMBEL_TARGET = "taming.models.vqgan.GumbelVQ"
EMAVQ_TARGET = "taming.models.vqgan.EMAVQ"

# `model.params` each family accepts beyond `ddconfig`, `n_embed`, `embed_dim` and the inert ones.
QUANTIZER_PARAMS = {
    GUMBEL_TARGET: {"kl_weight", "temperature_scheduler_config", "remap"},
    EMAVQ_TARGET: {"remap"},
}


def load_used_indices(path: str | PathLike) -> torch.Tensor:
    """The used codebook rows of a taming `remap` file: a `.npy` of integer row numbers, as a 1-D int64 tensor."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"The remap file {str(path)!r} (the config's `remap`) is not on this machine and the checkpoint holds "
            "no `quantize.used` buffer: pass the `.npy` file with `remap_file=` (`--remap-file` on the command line)."
        )
    try:
        used = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"The remap file {path} is not a readable `.npy` array ({err}).") from err
    if used.ndim != 1 or used.dtype.kind not in "iu":
        raise ValueError(f"The remap file {path} must hold a 1-D integer array, got {used.dtype} {used.shape}.")
    return torch.from_numpy(used.astype("int64"))


def resolve_used_indices(
    params: Mapping,
    state_dict: Mapping[str, torch.Tensor] | None,
    remap_file: str | PathLike | None,
) -> torch.Tensor | None:
    """
    The used rows of a remapped quantizer, or `None` without `remap`: from `remap_file` when given, else from the
    checkpoint's `quantize.used` buffer, else from the file the config names. When two of them exist they must agree.
    """
    if params.get("remap") is None:
        return None
    from_checkpoint = None if state_dict is None else state_dict.get("quantize.used")
    if remap_file is not None:
        used = load_used_indices(remap_file)
    elif from_checkpoint is not None:
        used = from_checkpoint.long()
    else:
        used = load_used_indices(params["remap"])
    if from_checkpoint is not None and not torch.equal(from_checkpoint.long(), used):
        raise ValueError(
            f"The remap file {str(remap_file)!r} holds {len(used)} used indices that differ from the checkpoint's "
            f"`quantize.used` ({len(from_checkpoint)} indices): it belongs to another model."
        )
    n_embed = int(params["n_embed"])
    if used.ndim != 1 or len(used) == 0 or int(used.min()) < 0 or int(used.max()) >= n_embed:
        raise ValueError(f"The used indices must be a non-empty 1-D list of rows in [0, {n_embed}).")
    if len(torch.unique(used)) != len(used):
        raise ValueError("The used indices of the remap repeat a row; each token must name one row.")
    return used


def quantizer_kwargs(
    target: str,
    params: Mapping,
    ddconfig: Mapping,
    used: torch.Tensor | None,
    unknown_index: str | int = "random",
) -> dict:
    """`VQGANModel` keyword arguments for the quantizer of a taming first stage of class `target`."""
    n_embed = int(params["n_embed"])
    kwargs: dict = {"codebook_size": n_embed}
    if used is not None:
        if target == EMAVQ_TARGET:
            raise ValueError(
                f"Cannot convert `{EMAVQ_TARGET}` with `remap`: taming's EMAVectorQuantizer stores the used indices "
                "but never applies them (its forward emits table rows), so the checkpoint has no consistent meaning."
            )
        kwargs.update(codebook_size=len(used) + (unknown_index == "extra"), remap_table_size=n_embed,
                      remap_unknown_index=unknown_index)  # fmt: skip
    if target == GUMBEL_TARGET:
        if int(ddconfig["z_channels"]) != int(params["embed_dim"]):
            raise ValueError(
                f"Cannot convert this `{GUMBEL_TARGET}`: its quantizer's `proj` takes z_channels="
                f"{ddconfig['z_channels']} inputs but `quant_conv` gives embed_dim={params['embed_dim']}, so the "
                "original model cannot run either."
            )
        kwargs.update(quantizer_type="gumbel", gumbel_kl_weight=float(params.get("kl_weight", 1e-8)),
                      gumbel_straight_through=True, gumbel_temperature=1.0)  # fmt: skip
    elif target == EMAVQ_TARGET:
        kwargs.update(use_ema=True, ema_decay=0.99, commitment_beta=0.25, legacy_beta=False)
    else:
        kwargs.update(commitment_beta=0.25, legacy_beta=True)
    return kwargs


def quantizer_state(kwargs: Mapping, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with a remap's `quantize.used` made int64 (taming saves what `np.load` gave)."""
    weights = dict(state_dict)
    if kwargs.get("remap_table_size") is not None and "quantize.used" in weights:
        weights["quantize.used"] = weights["quantize.used"].long()
    return weights
