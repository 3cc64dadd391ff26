"""Gumbel-softmax quantization (Jang et al. 2017; as in DALL-E's dVAE and taming-transformers' `GumbelQuantize`).

Instead of a nearest-neighbour search, a 1x1 convolution turns each latent vector into `K` logits, one per codebook
entry. In training the quantizer draws a Gumbel-softmax sample at a temperature (annealed by the training script):
a soft mixture of codes, or with `straight_through` a one-hot choice whose gradient is the soft one's. A KL term
pulls the code distribution toward the uniform prior. In evaluation mode the choice is deterministic: the argmax of
the logits, with no noise (taming's own `forward` adds Gumbel noise even in eval mode, so its indices vary from run
to run; the argmax is the mode of that draw and what tokenization needs).

Shapes: B batch, D code dimension, h/w latent grid, K codebook size, N = B*h*w vectors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import IndexRemap, QuantizerOutput, UsageTracking, _all_reduce_sum, check_sizes
from .quantizer_common import check_indices, check_latents, perplexity_and_usage


class GumbelQuantizer(UsageTracking):
    r"""
    Quantize by a Gumbel-softmax choice among `codebook_size` codes, from logits a 1x1 convolution computes.

    Args:
        codebook_size (`int`): Rows `K` of the code table (`embed`), and logits per position.
        code_dim (`int`): Channels `D` of the latents and of each code.
        temperature (`float`, defaults to 1.0): Gumbel-softmax temperature in training; the training script anneals
            it by setting `quantizer.temperature`.
        kl_weight (`float`, defaults to 5e-4): Weight of the KL-to-uniform term in `loss`.
        straight_through (`bool`, defaults to `True`): In training, emit the one-hot choice with the soft sample's
            gradient (`hard=True`), instead of the soft mixture of codes.
        usage_window (`int`, defaults to 100): Training steps over which `usage_statistics()` counts.
        remap (`IndexRemap`, *optional*): Choose only among the rows `remap.used` and emit their positions there
            (taming's `remap`); `codebook_size` then counts token values and `table_size` the table's rows.

    The weights have taming's names: `proj` (the logits convolution, `D -> K`) and `embed` (the `(K, D)` table).
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        temperature: float = 1.0,
        kl_weight: float = 5e-4,
        straight_through: bool = True,
        usage_window: int = 100,
        remap: IndexRemap | None = None,
    ):
        super().__init__()
        check_sizes(codebook_size, code_dim)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if kl_weight < 0:
            raise ValueError(f"`kl_weight` must be >= 0, got {kl_weight}.")
        if remap is not None and remap.table_size != codebook_size:
            raise ValueError(f"A remap over {remap.table_size} rows needs `codebook_size`={remap.table_size}.")
        self.table_size = codebook_size
        self.codebook_size = remap.num_tokens if remap is not None else codebook_size
        self.code_dim = code_dim
        self.temperature = float(temperature)
        self.kl_weight = kl_weight
        self.straight_through = straight_through
        self.remap = remap
        self.proj = nn.Conv2d(code_dim, codebook_size, 1)
        self.embed = nn.Embedding(codebook_size, code_dim)
        self._init_usage(self.codebook_size, usage_window)

    # ----------------------------------------------------------------------------------------------- lookup
    def lookup(self, indices: torch.LongTensor) -> torch.Tensor:
        """Codes for `indices` of shape `(batch_size, h, w)`, returned as `(batch_size, code_dim, h, w)` float32."""
        check_indices(indices, self.codebook_size)
        indices = indices.long() if self.remap is None else self.remap.to_table(indices.long())
        return self.embed.weight[indices].float().permute(0, 3, 1, 2).contiguous()

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """The code logits of latents `(batch_size, code_dim, h, w)`: `(batch_size, K, h, w)` float32, where `K` is
        the table size, or under a remap the number of used rows (in the order of `remap.used`)."""
        logits = self.proj(latents).float()  # (B, K, h, w)
        return logits if self.remap is None else logits[:, self.remap.used]

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        check_latents(latents, self.code_dim)
        input_dtype = latents.dtype
        logits = self.logits(latents)  # (B, n, h, w), n = table rows or used rows
        table = self.embed.weight.float()
        if self.remap is not None:
            table = table[self.remap.used]  # (n, D)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.temperature, dim=1, hard=self.straight_through)
            quantized = torch.einsum("bnhw,nd->bdhw", one_hot, table)  # (B, D, h, w)
            indices = one_hot.argmax(dim=1)  # (B, h, w)
        else:  # deterministic: the most likely code, no noise
            indices = logits.argmax(dim=1)  # (B, h, w)
            quantized = table[indices].permute(0, 3, 1, 2)  # (B, D, h, w)
        # KL(q || uniform over the table) = sum_k q_k log(q_k K); taming adds 1e-10 inside the log.
        probs = F.softmax(logits, dim=1)
        kl_loss = (probs * torch.log(probs * self.table_size + 1e-10)).sum(dim=1).mean()
        zero = torch.zeros((), device=latents.device)

        with torch.no_grad():
            counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
            if self.training:
                # Counts and a non-finite flag in one reduction; a step with non-finite latents anywhere is skipped
                # by the training loop and must not enter the statistics.
                stats = _all_reduce_sum(torch.cat([counts, (~torch.isfinite(latents)).any().float()[None]]))
                counts = stats[:-1]
                if not bool(stats[-1] > 0):
                    self._track_usage(counts)
            perplexity, usage = perplexity_and_usage(counts)
        return QuantizerOutput(
            quantized=quantized.contiguous().to(input_dtype),
            indices=indices,
            loss=self.kl_weight * kl_loss,
            codebook_loss=zero,
            commitment_loss=zero,
            perplexity=perplexity,
            usage=usage,
            kl_loss=kl_loss,
        )


def annealed_temperature(
    step: int, start: float, peak: float, end: float, warmup_steps: int = 0, decay_steps: int = 1
) -> float:
    """
    The Gumbel temperature at optimizer step `step`: linear from `start` to `peak` over `warmup_steps`, then a
    cosine from `peak` down to `end`, reached at step `decay_steps` and held after. This is taming's
    `LambdaWarmUpCosineScheduler` (its `lr_start`, `lr_max`, `lr_min`, `warm_up_steps`, `max_decay_steps`), which
    `GumbelVQ` applies to the temperature; the released f8 model used start = peak = 0.9, end 1e-6, no warm-up,
    decay over 1,000,001 steps.
    """
    if step < warmup_steps:
        return start + (peak - start) * step / warmup_steps
    progress = min((step - warmup_steps) / max(decay_steps - warmup_steps, 1), 1.0)
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * progress))
