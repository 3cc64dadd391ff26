"""Vector quantization with straight-through gradients (VQ-VAE, van den Oord et al. 2017; VQGAN, Esser et al. 2021).

The quantizer works on latents already projected into code space, of shape `(batch_size, code_dim, h, w)`.
It offers the options that lift codebook usage from a few percent to near 100%:

- l2-normalised codes (cosine-similarity lookup, as in ViT-VQGAN and LlamaGen);
- a low-dimensional code space: the surrounding model projects into `code_dim` (8 in LlamaGen) channels;
- EMA codebook updates instead of the codebook loss (VQ-VAE appendix, Razavi et al. 2019);
- dead-code restarts from recent encoder outputs (Dhariwal et al. 2020, Jukebox).

Distances are always computed in float32, also under bf16 autocast, and every statistic that depends on the batch
(EMA sums, usage counts, restarts) is reduced across processes when `torch.distributed` is initialised, so every
rank keeps the same codebook, the one a single process with the whole batch would keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

from .quantizer_common import check_indices, check_latents, load_statistics, perplexity_and_usage, windowed_usage


@dataclass
class QuantizerOutput(BaseOutput):
    """
    Args:
        quantized (`torch.Tensor` of shape `(batch_size, code_dim, h, w)`):
            The nearest codebook entries, with straight-through gradients to the input.
        indices (`torch.LongTensor` of shape `(batch_size, h, w)`):
            The index of the nearest codebook entry at each position.
        loss (`torch.Tensor`):
            The weighted sum of the codebook and commitment losses (a scalar).
        codebook_loss (`torch.Tensor`):
            `||sg[z] - e||^2`, moves codes toward encoder outputs (zero when the codebook is updated by EMA).
        commitment_loss (`torch.Tensor`):
            `||z - sg[e]||^2`, keeps encoder outputs close to their codes.
        perplexity (`torch.Tensor`):
            `exp(entropy)` of the code usage in this batch (across all processes in training mode).
        usage (`torch.Tensor`):
            The fraction of codes used at least once in this batch (across all processes in training mode).
        entropy_loss (`torch.Tensor`, *optional*):
            LFQ's entropy penalty, unweighted (per-sample entropy minus codebook entropy, in nats); `None` for
            quantizers without one.
    """

    # None defaults: under mixed precision accelerate's `convert_to_fp32` rebuilds an output as `type(out)(dict)`,
    # which BaseOutput unpacks only when every field but the first has a default.
    quantized: torch.Tensor | None = None
    indices: torch.LongTensor | None = None
    loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    # FSQ/LFQ (issue 18): LFQ's entropy term.
    entropy_loss: torch.Tensor | None = None


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class VectorQuantizer(nn.Module):
    r"""
    Nearest-neighbour vector quantizer with a learned codebook.

    Args:
        codebook_size (`int`): Number of codebook entries `K`.
        code_dim (`int`): Dimension `D` of each entry (the channel count of the latents it quantizes).
        beta (`float`, defaults to 0.25): Commitment weight.
        legacy_beta (`bool`, defaults to `False`):
            The paper's loss is `||sg[z] - e||^2 + beta * ||z - sg[e]||^2`. taming-transformers' released
            checkpoints were trained with beta on the other term, `beta * ||sg[z] - e||^2 + ||z - sg[e]||^2`;
            set this to reproduce them.
        l2_normalize (`bool`, defaults to `False`): Normalise latents and codes to unit length before the lookup.
        use_ema (`bool`, defaults to `False`): Update the codebook by exponential moving averages instead of the
            codebook loss.
        ema_decay (`float`, defaults to 0.99): Decay of the EMA statistics.
        dead_code_steps (`int`, defaults to 0): Re-initialise codes unused for this many training steps from
            encoder outputs of the current batch; 0 disables restarts.
        usage_window (`int`, defaults to 100): Number of training steps over which `usage_statistics()` counts.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        beta: float = 0.25,
        legacy_beta: bool = False,
        l2_normalize: bool = False,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        dead_code_steps: int = 0,
        usage_window: int = 100,
        ema_epsilon: float = 1e-5,
    ):
        super().__init__()
        if not isinstance(codebook_size, int) or codebook_size < 2:
            raise ValueError(f"`codebook_size` must be an int >= 2, got {codebook_size!r}.")
        if not isinstance(code_dim, int) or code_dim < 1:
            raise ValueError(f"`code_dim` must be a positive int, got {code_dim!r}.")
        if beta < 0:
            raise ValueError(f"`beta` must be >= 0, got {beta}.")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in (0, 1), got {ema_decay}.")
        if dead_code_steps < 0:
            raise ValueError(f"`dead_code_steps` must be >= 0 (0 disables restarts), got {dead_code_steps}.")
        if usage_window < 1:
            raise ValueError(f"`usage_window` must be >= 1, got {usage_window}.")
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.legacy_beta = legacy_beta
        self.l2_normalize = l2_normalize
        self.use_ema = use_ema
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.dead_code_steps = dead_code_steps
        self.usage_window = usage_window

        self.embedding = nn.Embedding(codebook_size, code_dim)
        # Uniform in +-1/K, as in the VQ-VAE reference and taming: small codes that the encoder output reaches.
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if use_ema:
            self.embedding.weight.requires_grad_(False)
            # Start as if every code had been assigned once, to itself (the convention restarts use too): a code
            # unused in the first steps then keeps its value instead of being divided by the Laplace epsilon.
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())
        # Training-time statistics: not part of a released model, saved with training checkpoints instead
        # (see `statistics_state_dict`).
        self.register_buffer("steps_since_used", torch.zeros(codebook_size, dtype=torch.long), persistent=False)
        self.register_buffer("usage_history", torch.zeros(usage_window, codebook_size), persistent=False)
        self.register_buffer("usage_step", torch.zeros((), dtype=torch.long), persistent=False)

    # ----------------------------------------------------------------------------------------------- lookup
    def codebook(self) -> torch.Tensor:
        """The codebook as used for lookup, of shape `(codebook_size, code_dim)`, float32."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    def _nearest(self, flat: torch.Tensor) -> torch.LongTensor:
        codes = self.codebook()  # (K, D)
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, in float32 whatever the autocast state.
        with torch.autocast(device_type=flat.device.type, enabled=False):
            distances = (
                flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)[None, :]
            )  # (N, K)
        return distances.argmin(dim=1)

    def _gather(self, indices: torch.LongTensor) -> torch.Tensor:
        # Normalise the gathered rows rather than the whole table: the autograd graph then holds no reference to
        # the weight itself, which a dead-code restart rewrites in place before the backward pass.
        codes = self.embedding.weight[indices].float()  # (..., D)
        return F.normalize(codes, dim=-1) if self.l2_normalize else codes

    def lookup(self, indices: torch.LongTensor) -> torch.Tensor:
        """Codes for `indices` of shape `(batch_size, h, w)`, returned as `(batch_size, code_dim, h, w)` float32."""
        check_indices(indices, self.codebook_size)
        return self._gather(indices.long()).permute(0, 3, 1, 2).contiguous()

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        check_latents(latents, self.code_dim)
        input_dtype = latents.dtype
        B, D, h, w = latents.shape
        z = latents.float().permute(0, 2, 3, 1).reshape(-1, D)  # (B*h*w, D)
        if self.l2_normalize:
            z = F.normalize(z, dim=-1)
        indices = self._nearest(z.detach())  # (N,)
        z_q = self._gather(indices)  # (N, D)

        counts, update_statistics = None, False
        if self.training:
            # One reduction carries the code counts and a flag for non-finite latents on any process: such a step is
            # skipped by the training loop, so it must not write into the codebook or its statistics either.
            stats = torch.cat([torch.bincount(indices, minlength=self.codebook_size).float(),
                               (~torch.isfinite(z)).any().float()[None]])  # fmt: skip
            stats = _all_reduce_sum(stats)
            counts, update_statistics = stats[:-1], not bool(stats[-1] > 0)
            if self.use_ema and update_statistics:
                self._ema_update(z.detach(), indices, counts)
                z_q = self._gather(indices)

        commitment_loss = F.mse_loss(z, z_q.detach())
        if self.use_ema:
            codebook_loss = torch.zeros((), device=z.device)
        else:
            codebook_loss = F.mse_loss(z_q, z.detach())
        if self.legacy_beta:
            loss = self.beta * codebook_loss + commitment_loss
        else:
            loss = codebook_loss + self.beta * commitment_loss

        z_q = z + (z_q - z).detach()  # straight-through estimator
        quantized = z_q.reshape(B, h, w, D).permute(0, 3, 1, 2).contiguous().to(input_dtype)
        indices = indices.reshape(B, h, w)

        with torch.no_grad():
            if counts is None:
                # Evaluation may run on one process only (validation on the main process): no collective here.
                counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
            perplexity, usage = perplexity_and_usage(counts)
            if update_statistics:
                self._track_usage(counts)
                if self.dead_code_steps > 0:
                    self._restart_dead_codes(z.detach())
        return QuantizerOutput(
            quantized=quantized,
            indices=indices,
            loss=loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage=usage,
        )

    # ----------------------------------------------------------------------------------- training statistics
    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.LongTensor, counts: torch.Tensor) -> None:
        sums = torch.zeros(self.codebook_size, self.code_dim, device=z.device)
        sums.index_add_(0, indices, z)  # (K, D)
        sums = _all_reduce_sum(sums)
        self.ema_cluster_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.ema_embed_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        # Laplace smoothing keeps never-used codes from dividing by zero.
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_epsilon) / (n + self.codebook_size * self.ema_epsilon) * n
        self.embedding.weight.copy_(self.ema_embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _track_usage(self, counts: torch.Tensor) -> None:
        slot = int(self.usage_step) % self.usage_window
        self.usage_history[slot] = counts
        self.usage_step += 1
        self.steps_since_used += 1
        self.steps_since_used[counts > 0] = 0

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> None:
        dead = (self.steps_since_used >= self.dead_code_steps).nonzero().flatten()
        if dead.numel() == 0:
            return
        if not _distributed():
            new_codes = z[torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)]
        else:
            # Replacements come from the global batch, as for one process holding all of it: rank 0's draw of row
            # numbers in the concatenation of every rank's rows is broadcast, each rank fills in the rows it holds,
            # and a sum assembles them. Every rank writes the same codebook, whatever the per-rank batch sizes.
            rank, world = dist.get_rank(), dist.get_world_size()
            sizes = torch.zeros(world, dtype=torch.long, device=z.device)
            sizes[rank] = z.shape[0]
            dist.all_reduce(sizes, op=dist.ReduceOp.SUM)
            offset = int(sizes[:rank].sum())
            picks = torch.randint(0, int(sizes.sum()), (dead.numel(),), device=z.device)
            dist.broadcast(picks, src=0)
            mine = (picks >= offset) & (picks < offset + z.shape[0])
            new_codes = torch.zeros(dead.numel(), z.shape[1], device=z.device, dtype=z.dtype)
            new_codes[mine] = z[picks[mine] - offset]
            dist.all_reduce(new_codes, op=dist.ReduceOp.SUM)
        self.embedding.weight[dead] = new_codes.to(self.embedding.weight.dtype)
        if self.use_ema:
            self.ema_cluster_size[dead] = 1.0
            self.ema_embed_sum[dead] = new_codes
        self.steps_since_used[dead] = 0

    @torch.no_grad()
    def usage_statistics(self) -> dict[str, float]:
        """Perplexity and fraction of codes used over the last `usage_window` training steps."""
        return windowed_usage(self.usage_history, self.usage_step)

    def statistics_state_dict(self) -> dict[str, torch.Tensor]:
        """Training statistics that are not saved with the model, for training checkpoints."""
        return {
            "steps_since_used": self.steps_since_used.clone(),
            "usage_history": self.usage_history.clone(),
            "usage_step": self.usage_step.clone(),
        }

    def load_statistics_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `statistics_state_dict` returned (from a training checkpoint)."""
        load_statistics(self, state, ("steps_since_used", "usage_history", "usage_step"))
