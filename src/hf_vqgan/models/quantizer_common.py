"""What every quantizer (`VectorQuantizer`, `GridQuantizer`) does the same way: input checks and code-usage
statistics.

Shapes: K codebook size, W usage window (training steps).
"""

from __future__ import annotations

import torch
from torch import nn


def check_indices(indices: torch.Tensor, codebook_size: int) -> None:
    """Refuse anything but an integer tensor of shape `(batch_size, h, w)` with values in `[0, codebook_size)`."""
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"`indices` must be a torch.Tensor, got {type(indices).__name__}.")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"`indices` must be an integer tensor, got dtype {indices.dtype}.")
    if indices.ndim != 3:
        raise ValueError(f"`indices` must have shape (batch_size, h, w), got {tuple(indices.shape)}.")
    if indices.numel():
        low, high = torch.stack(torch.aminmax(indices)).tolist()  # one read back to the host
        if low < 0 or high >= codebook_size:
            raise ValueError(f"`indices` must lie in [0, {codebook_size}), got values in [{low}, {high}].")


def check_latents(latents: torch.Tensor, code_dim: int) -> None:
    """Refuse anything but a non-empty floating-point tensor of shape `(batch_size, code_dim, h, w)`."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}.")
    if latents.ndim != 4 or latents.shape[1] != code_dim:
        raise ValueError(f"Expected latents of shape (batch_size, {code_dim}, h, w), got {tuple(latents.shape)}.")
    if not latents.is_floating_point():
        raise TypeError(f"`latents` must be a floating-point tensor, got dtype {latents.dtype}.")
    if latents.numel() == 0:  # its losses and statistics would be NaN
        raise ValueError(f"`latents` is empty (shape {tuple(latents.shape)}); pass at least one latent vector.")


def perplexity_and_usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`exp(entropy)` of the code distribution `counts` (K,), and the fraction of codes counted at least once."""
    total = counts.sum().clamp_min(1)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-10))).sum()
    return entropy.exp(), (counts > 0).float().mean()


@torch.no_grad()
def windowed_usage(usage_history: torch.Tensor, usage_step: torch.Tensor) -> dict[str, float]:
    """Perplexity and usage of the counts in `usage_history` (W, K), of which `usage_step` rows were written."""
    filled = min(int(usage_step), usage_history.shape[0])
    if filled == 0:
        return {"perplexity": 0.0, "usage": 0.0}
    perplexity, usage = perplexity_and_usage(usage_history[:filled].sum(0))
    return {"perplexity": float(perplexity), "usage": float(usage)}


def load_statistics(module: nn.Module, state: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
    """Copy the buffers `names` of `module` from `state` (a training checkpoint's), after checking all are there
    with the module's shapes: nothing is copied when one is missing or mis-shaped."""
    missing = [name for name in names if name not in state]
    if missing:
        raise ValueError(f"Quantizer statistics are missing {missing}; expected the keys {list(names)}.")
    for name in names:
        expected = tuple(getattr(module, name).shape)
        if tuple(state[name].shape) != expected:
            raise ValueError(
                f"`{name}` has shape {tuple(state[name].shape)}, expected {expected} (codebook_size and "
                "usage_window must match the checkpoint's)."
            )
    for name in names:
        getattr(module, name).copy_(state[name])
