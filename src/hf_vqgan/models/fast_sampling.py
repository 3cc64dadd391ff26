"""Temporary compatibility for the old import path: `FastImageSampler(model, mode).sample(...)` is
`model.sample(..., decode_step=StaticCacheDecodeStep(mode))`. Delete once the pipeline and the old tests use
`hf_vqgan.models.sampling.StaticCacheDecodeStep` (issue 13)."""

from __future__ import annotations

import torch

from .prior import VQGANPriorForCausalLM
from .sampling import StaticCacheDecodeStep
from .sampling import _StaticDecoder as _Decoder  # noqa: F401 (old tests patch its `_eager_step`)


class FastImageSampler:
    """`model.sample()` with one [`StaticCacheDecodeStep`] kept across calls (old API)."""

    def __init__(self, model: VQGANPriorForCausalLM, mode: str = "auto", compile_kwargs: dict | None = None):
        if not isinstance(model, VQGANPriorForCausalLM):
            raise TypeError(f"`model` must be a VQGANPriorForCausalLM, got {type(model).__name__}.")
        self.model = model
        self.step = StaticCacheDecodeStep(mode=mode, compile_kwargs=compile_kwargs)

    @property
    def setup_seconds(self) -> dict:
        return self.step.setup_seconds

    def sample(self, **kwargs) -> torch.LongTensor:
        return self.model.sample(**kwargs, decode_step=self.step)
