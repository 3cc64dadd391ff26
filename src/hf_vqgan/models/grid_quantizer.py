"""The common part of quantizers whose codes are a fixed grid instead of a learned codebook (FSQ, LFQ).

Such a quantizer has no learned parameters: its `state_dict` is empty, and a code index maps to its code by
arithmetic (`lookup`). What it shares with `VectorQuantizer` is the surface the rest of the library relies on:
`forward(latents) -> QuantizerOutput`, `lookup(indices)`, the attributes `codebook_size` and `code_dim`, and the
usage statistics of training (`usage_statistics`, `statistics_state_dict`, `load_statistics_state_dict`), reduced
across processes exactly as `VectorQuantizer` reduces them, so every rank keeps what one process holding the whole
batch would keep. A batch with a non-finite latent on any process writes no statistics (the training loop skips it).

Shapes: B batch, D code dimension, h/w latent grid, N = B*h*w vectors, K codebook size.
"""

from __future__ import annotations

import torch

from .quantizer import QuantizerOutput, UsageTracking, _all_reduce_sum
from .quantizer_common import check_indices, check_latents, perplexity_and_usage


class GridQuantizer(UsageTracking):
    """
    Base class of the fixed-grid quantizers. Subclasses implement `_quantize` (latents to codes with
    straight-through gradients, and their indices), `_codes` (indices to codes) and `_losses`.

    Args:
        codebook_size (`int`): Number of distinct codes `K` (what the prior's image vocabulary holds).
        code_dim (`int`): Dimension `D` of each code.
        usage_window (`int`, defaults to 100): Number of training steps over which `usage_statistics()` counts.
    """

    def __init__(self, codebook_size: int, code_dim: int, usage_window: int = 100):
        super().__init__()
        if not isinstance(usage_window, int) or isinstance(usage_window, bool) or usage_window < 1:
            raise ValueError(f"`usage_window` must be an int >= 1, got {usage_window!r}.")
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self._init_usage(codebook_size, usage_window)  # training-time statistics, saved with training checkpoints

    # ---------------------------------------------------------------------------------------- subclass hooks
    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """`z` of shape (N, D) float32 -> codes (N, D) with straight-through gradients, indices (N,)."""
        raise NotImplementedError

    def _codes(self, indices: torch.LongTensor) -> torch.Tensor:
        """Indices of any shape (...) -> their codes (..., D), float32."""
        raise NotImplementedError

    def _losses(
        self, z: torch.Tensor, codes: torch.Tensor, num_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The weighted loss, the commitment term and the entropy term (or None) of `z` (N, D) and its `codes`;
        `num_vectors` counts the vectors of the whole batch (of every process in training)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ verbs
    def lookup(self, indices: torch.LongTensor) -> torch.Tensor:
        """Codes for `indices` of shape `(batch_size, h, w)`, returned as `(batch_size, code_dim, h, w)` float32."""
        check_indices(indices, self.codebook_size)
        return self._codes(indices.long()).permute(0, 3, 1, 2).contiguous()

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """Quantize latents of shape `(batch_size, code_dim, h, w)`; the codes keep the input's dtype."""
        check_latents(latents, self.code_dim)
        input_dtype = latents.dtype
        B, D, h, w = latents.shape
        # float32 whatever the autocast state: rounding and signs of bf16 values would move codes.
        with torch.autocast(device_type=latents.device.type, enabled=False):
            z = latents.float().permute(0, 2, 3, 1).reshape(-1, D)  # (N, D)
            codes, indices = self._quantize(z)
            update_statistics = False
            # One reduction carries the code counts and a flag for non-finite latents on any process (that step is
            # skipped by the training loop, so it must not write statistics). Evaluation may run on one process
            # only (validation on the main process): no collective there.
            stats = torch.cat([torch.bincount(indices.detach(), minlength=self.codebook_size).float(),
                               (~torch.isfinite(z.detach())).any().float()[None]])  # fmt: skip
            if self.training:
                stats = _all_reduce_sum(stats)
                update_statistics = not bool(stats[-1] > 0)
            counts = stats[:-1]
            loss, commitment_loss, entropy_loss = self._losses(z, codes, counts.sum())

        with torch.no_grad():
            perplexity, usage = perplexity_and_usage(counts)
            if update_statistics:
                self._track_usage(counts)
        return QuantizerOutput(
            quantized=codes.reshape(B, h, w, D).permute(0, 3, 1, 2).contiguous().to(input_dtype),
            indices=indices.reshape(B, h, w),
            loss=loss,
            codebook_loss=torch.zeros((), device=z.device),  # no codebook to learn
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage=usage,
            entropy_loss=entropy_loss,
        )
