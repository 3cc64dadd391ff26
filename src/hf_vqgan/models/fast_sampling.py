"""Fast sampling of the VQGAN prior: a static KV cache and one fixed-shape decode step, sampling included.

`VQGANPriorForCausalLM.sample()` runs transformers' `generate()`, whose per-token Python work (logits processors,
stopping criteria, cache bookkeeping, hundreds of small kernel launches) costs far more than reading the weights once
per token. `FastImageSampler` keeps the algorithm and replaces the loop:

1. prefill: one ordinary forward over the prefix into a `StaticCache` (fixed-size key/value tensors);
2. decode: a function of fixed shapes, `(tokens (B, 1), noise (B, K)) -> next tokens (B,)`, that runs the GPT on
   one token, combines the guidance rows, filters (temperature, top-k, top-p) and draws, with no host sync;
3. that step is replayed as a CUDA graph: by `torch.compile(mode="reduce-overhead")` (`mode="compile"`, which also
   fuses kernels) or by a plain `torch.cuda.CUDAGraph` capture of the eager step (`mode="cuda_graph"`, no compile
   time). `mode="eager"` runs the same step without capture (CPU, tests).

Random draws stay outside the graph: each token takes `B * K` Exp(1) numbers from the generator
(`prior.exponential_noise`), exactly as `sample()` does, and the draw is `prior.draw_image_codes`, the function
`sample()` uses too. So with the same generator the fast path gives the same tokens as `sample()`, up to the
floating-point differences of a compiled (fused) graph or a reduced precision.

    sampler = FastImageSampler(model)              # "compile" on CUDA, "eager" elsewhere
    codes = sampler.sample(class_labels=labels, guidance_scale=2.0, generator=generator)  # (B, h, w)
    sampler.setup_seconds                          # time spent compiling / capturing, per configuration
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StaticCache

from .prior import (
    VQGANPriorForCausalLM,
    _check_sampling_arguments,
    draw_image_codes,
    exponential_noise,
    image_token_probs,
)

MODES = ("auto", "eager", "cuda_graph", "compile")
_WARMUP_STEPS = 3  # eager runs before a CUDA graph capture; also enough for cudagraph trees to record


@dataclass(frozen=True)
class _DecodeKey:
    """Everything a decode step is specialised on; one captured step (and one cache) per key."""

    rows: int  # B, or 2B with guidance
    total_length: int
    guidance_scale: float | None
    temperature: float
    top_k: int | None
    top_p: float | None
    device: torch.device
    dtype: torch.dtype


class _Decoder:
    """A static cache and the decode step over it, captured or compiled once."""

    def __init__(self, model: VQGANPriorForCausalLM, key: _DecodeKey, mode: str, compile_kwargs: dict):
        self.model, self.key, self.mode = model, key, mode
        self.cache = StaticCache(config=model.config, max_cache_len=key.total_length)
        self.setup_seconds = 0.0
        self._graph = None
        self._step = self._eager_step
        if mode == "compile":
            self._step = torch.compile(self._eager_step, **compile_kwargs)
        self._ready = mode == "eager"

    # ----- the step ------------------------------------------------------------------------------------------------

    def choose(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.LongTensor:
        """Next token ids `(rows,)` from last-position logits `(rows, V)` and Exp(1) noise `(B, K)`."""
        key, start = self.key, self.model.config.image_token_range[0]
        logits = logits.float()  # as generate() hands logits processors float32 scores
        if key.guidance_scale is not None:
            cond, uncond = logits.chunk(2, dim=0)  # (B, V) each
            logits = torch.lerp(uncond, cond, key.guidance_scale)  # uncond + s * (cond - uncond), as ImageTokenSampler
        probs = image_token_probs(logits, self.model.config.image_token_range, key.temperature, key.top_k, key.top_p)
        tokens = draw_image_codes(probs, noise) + start  # (B,)
        return tokens.repeat(2) if key.guidance_scale is not None else tokens  # (rows,) same token for both halves

    def _eager_step(self, token_ids: torch.LongTensor, noise: torch.Tensor) -> torch.LongTensor:
        # The position and the write index come from the cache's own length tensor, so the step has fixed shapes
        # and no host-side state: it can be captured once and replayed at every position.
        logits = self.model(input_ids=token_ids, cache=self.cache, use_cache=True).logits[:, -1]  # (rows, V)
        return self.choose(logits, noise)

    def prefill(self, input_ids: torch.LongTensor) -> torch.Tensor:
        self.cache.reset()  # in place: captured graphs keep pointing at the same tensors
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]  # (rows, V)

    def decode(self, token_ids: torch.LongTensor, noise: torch.Tensor) -> torch.LongTensor:
        """One token per row at the next position; returns a tensor the caller must copy before the next call."""
        if self._graph is not None:
            self._static_ids.copy_(token_ids)
            self._static_noise.copy_(noise)
            self._graph.replay()
            return self._static_out
        if self.mode == "compile" and token_ids.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may now be overwritten
        return self._step(token_ids, noise)

    # ----- one-time setup ----------------------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Compile or capture the step on dummy inputs (timed into `setup_seconds`); sampling then starts afresh."""
        if self._ready:
            return
        key = self.key
        start = time.perf_counter()
        token_ids = torch.zeros(key.rows, 1, dtype=torch.long, device=key.device)
        K = self.model.config.codebook_size
        noise = torch.ones(key.rows // (2 if key.guidance_scale is not None else 1), K, device=key.device)
        if self.mode == "cuda_graph":
            self._capture(token_ids, noise)
        else:
            for _ in range(_WARMUP_STEPS):  # dynamo compiles on the first call, cudagraph trees record after
                self.prefill(token_ids)  # a one-token prefix, so every warm-up step writes position 1
                self.decode(token_ids, noise).clone()
        if key.device.type == "cuda":
            torch.cuda.synchronize(key.device)
        self.cache.reset()
        self.setup_seconds = time.perf_counter() - start
        self._ready = True

    def _capture(self, token_ids: torch.LongTensor, noise: torch.Tensor) -> None:
        self._static_ids, self._static_noise = token_ids.clone(), noise.clone()
        # Warm up on a side stream (lazy allocations, cuBLAS workspaces), as CUDA graph capture requires.
        stream = torch.cuda.Stream(self.key.device)
        stream.wait_stream(torch.cuda.current_stream(self.key.device))
        with torch.cuda.stream(stream):
            for _ in range(_WARMUP_STEPS):
                self.prefill(token_ids)
                self._eager_step(self._static_ids, self._static_noise)
        torch.cuda.current_stream(self.key.device).wait_stream(stream)
        self.prefill(token_ids)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_out = self._eager_step(self._static_ids, self._static_noise)
        self._graph = graph


class FastImageSampler:
    """
    Samples image codes from a [`VQGANPriorForCausalLM`] with a captured single-token decode step.

    Args:
        model ([`VQGANPriorForCausalLM`]): the prior. Move it to its device and dtype before the first `sample()`;
            steps are compiled or captured per (batch, sampling settings, device, dtype) and reused.
        mode (`str`, defaults to `"auto"`): `"compile"` (`torch.compile` of the step; on CUDA with
            `mode="reduce-overhead"`, i.e. CUDA graphs), `"cuda_graph"` (capture of the eager step, CUDA only, no
            compile time), `"eager"` (no capture, any device) or `"auto"` (`"compile"` on CUDA, `"eager"` elsewhere).
        compile_kwargs (`dict`, *optional*): arguments for `torch.compile`, replacing the defaults
            (`fullgraph=True`, plus `mode="reduce-overhead"` on CUDA).

    Attributes:
        setup_seconds (`dict`): compile/capture seconds of each configuration prepared so far, by its key.
    """

    def __init__(self, model: VQGANPriorForCausalLM, mode: str = "auto", compile_kwargs: dict | None = None):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if not isinstance(model, VQGANPriorForCausalLM):
            raise TypeError(f"`model` must be a VQGANPriorForCausalLM, got {type(model).__name__}.")
        self.model = model
        self.mode = mode
        self.compile_kwargs = compile_kwargs
        self._decoders: dict[_DecodeKey, _Decoder] = {}

    @property
    def setup_seconds(self) -> dict[_DecodeKey, float]:
        return {key: decoder.setup_seconds for key, decoder in self._decoders.items()}

    def _resolved_mode(self, device: torch.device) -> str:
        mode = self.mode
        if mode == "auto":
            return "compile" if device.type == "cuda" else "eager"
        if mode == "cuda_graph" and device.type != "cuda":
            raise ValueError(f"`mode='cuda_graph'` needs the prior on a CUDA device, it is on {device}.")
        return mode

    def _decoder(self, key: _DecodeKey) -> _Decoder:
        if key not in self._decoders:
            mode = self._resolved_mode(key.device)
            kwargs = self.compile_kwargs
            if kwargs is None:
                kwargs = {"fullgraph": True, **({"mode": "reduce-overhead"} if key.device.type == "cuda" else {})}
            self._decoders[key] = _Decoder(self.model, key, mode, kwargs)
        return self._decoders[key]

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.LongTensor | None = None,
        cond_indices: torch.LongTensor | None = None,
        batch_size: int | None = None,
        prefix_indices: torch.LongTensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> torch.LongTensor:
        """
        Samples image codes; the arguments and the result are those of [`VQGANPriorForCausalLM.sample`].

        The first call for a new batch size or new sampling settings compiles or captures its step (see
        `setup_seconds`). For speed on a GPU, pass a `generator` on the model's device (or none): a CPU generator
        works and gives the same samples as on CPU, but its noise is drawn on the CPU and copied at every token.

        Returns:
            `torch.LongTensor` of shape `(batch_size, latent_height, latent_width)`: codes in `[0, codebook_size)`.
        """
        model, config = self.model, self.model.config
        if getattr(model, "_hf_hook", None) is not None:
            # An accelerate hook (model CPU offload) moves the weights at the first forward, after the cache, the
            # noise and the captured step were placed on the device the weights had before.
            raise ValueError(
                "Fast decoding does not work with model CPU offload: the prior carries an accelerate hook. Keep the "
                "prior on its device (or use the plain sampler: `pipe.disable_fast_decode()`)."
            )
        _check_sampling_arguments(temperature, top_k, top_p)
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"`guidance_scale` must be a non-negative finite number, got {guidance_scale!r}.")
        use_guidance = guidance_scale != 1.0
        if use_guidance and config.num_classes == 0:
            raise ValueError(
                f"`guidance_scale={guidance_scale}` needs a null class, but this prior has no classes (`num_classes=0`)."
            )
        if prefix_indices is not None and batch_size is None and class_labels is None and cond_indices is None:
            batch_size = prefix_indices.shape[0] if isinstance(prefix_indices, torch.Tensor) else None
        input_ids = model.build_input_ids(prefix_indices, class_labels, cond_indices, batch_size)  # (B, P)
        batch, prompt_length = input_ids.shape
        total_length = config.prefix_length + config.num_image_tokens
        if use_guidance:
            null_ids = input_ids.clone()
            null_ids[:, config.prefix_length - 1] = config.null_class_token  # the class token is the last prefix token
            input_ids = torch.cat([input_ids, null_ids], dim=0)  # (2B, P)
        num_new = total_length - prompt_length
        if num_new == 0:
            return input_ids[:batch, config.prefix_length :].reshape(batch, config.latent_height, config.latent_width)

        device, dtype = model.device, model.dtype
        key = _DecodeKey(
            rows=input_ids.shape[0], total_length=total_length, guidance_scale=guidance_scale if use_guidance else None,
            temperature=float(temperature), top_k=top_k, top_p=None if top_p is None else float(top_p),
            device=device, dtype=dtype,
        )  # fmt: skip
        decoder = self._decoder(key)
        was_training = model.training
        model.eval()  # dropout off while sampling
        try:
            if num_new > 1:
                decoder.ensure_ready()
            noise_shape = (batch, config.codebook_size)
            new_tokens = torch.empty(num_new, key.rows, dtype=torch.long, device=device)  # (T_new, rows)
            given = input_ids[:batch, config.prefix_length :]  # (B, k) image codes given as the prefix
            logits = decoder.prefill(input_ids)  # (rows, V)
            new_tokens[0] = decoder.choose(logits, exponential_noise(noise_shape, generator, device))
            for step in range(num_new):
                if step > 0:
                    noise = exponential_noise(noise_shape, generator, device)  # (B, K), drawn as sample() does
                    new_tokens[step] = decoder.decode(new_tokens[step - 1][:, None], noise)
                if callback is not None:
                    callback(step, torch.cat([given, new_tokens[: step + 1, :batch].T], dim=1))
        finally:
            model.train(was_training)
        image_ids = torch.cat([given, new_tokens[:, :batch].T], dim=1)  # (B, T)
        return image_ids.reshape(batch, config.latent_height, config.latent_width)
