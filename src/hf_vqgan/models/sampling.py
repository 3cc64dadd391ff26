"""Sampling image codes from the VQGAN prior: one loop, the draw written once, pluggable decode steps.

`VQGANPriorForCausalLM.sample()` validates its arguments once and hands a [`SamplingRun`] to [`run_sampling_loop`],
which, for each image position in raster order, draws Exp(1) noise from the generator and asks a decode step for the
next codes. Every step turns next-token logits into codes with [`choose_image_codes`]: classifier-free guidance
(`uncond + s * (cond - uncond)`), temperature, top-k, top-p and the draw, written once. The steps differ only in how
they get the logits:

- [`KVCacheDecodeStep`] (the default): a transformers `DynamicCache`, one token per forward after the prefill;
- [`NoCacheDecodeStep`]: re-runs the whole sequence at every token (taming's original sampler, the benchmark
  baseline);
- [`SlidingWindowDecodeStep`]: grids larger than the trained one (taming, section 3.2): each position sees a
  trained-size window around it, clamped to the grid, re-run at every token;
- [`StaticCacheDecodeStep`]: a static cache and one fixed-shape step, guidance, filtering and the
  draw included, captured as a CUDA graph or compiled; the same codes from the same generator.

The draw is `argmax(probs / noise)` with `noise ~ Exp(1)` of shape `(batch_size, K)` per token, so with one generator
every step gives the same codes (up to the rounding of fused kernels) whatever the device the model runs on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache, StaticCache

if TYPE_CHECKING:
    from .prior import VQGANPriorForCausalLM

UNSAMPLED_CODE = -1  # what an interrupted run leaves at the positions it did not sample; no code uses it


# ----- the draw ------------------------------------------------------------------------------------------------------


def check_sampling_arguments(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raises a `ValueError` naming a bad `temperature`, `top_k` or `top_p`."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be None or an integer >= 1, got {top_k!r}.")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"`top_p` must be None or a number in (0, 1], got {top_p!r}.")


@dataclass(frozen=True)
class SamplingSettings:
    """How logits become codes: guidance scale (None: no null-class rows), temperature, top-k, top-p."""

    guidance_scale: float | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    @property
    def guided(self) -> bool:
        return self.guidance_scale is not None


def draw_on_generator_device(draw: Callable[..., torch.Tensor], generator, device, *args, **kwargs) -> torch.Tensor:
    """Calls `draw(*args, generator=..., device=...)` on the generator's device and moves the result to `device`."""
    # One CPU generator then reproduces the same numbers whichever device the model runs on.
    source_device = generator.device if generator is not None else device
    return draw(*args, generator=generator, device=source_device, **kwargs).to(device)


def exponential_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """
    Exp(1) noise of `shape` for [`draw_image_codes`], drawn on the generator's device (the default generator of
    `device` when `generator` is None) and moved to `device`: one CPU generator gives the same samples on any
    device.
    """
    return draw_on_generator_device(
        lambda *size, generator, device: torch.empty(size, device=device).exponential_(generator=generator),
        generator,
        device,
        *shape,
    )


def image_token_probs(
    logits: torch.Tensor,
    image_token_range: tuple[int, int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """
    The distribution the next image code is drawn from: the image-code logits, divided by `temperature`, filtered
    by `top_k` and `top_p`, softmaxed. Tensor operations only (no checks, no host sync), so that a captured decode
    step can run it inside a CUDA graph.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, vocab_size)`): next-token logits.
        image_token_range, temperature, top_k, top_p: see [`sample_next_token`].

    Returns:
        `torch.Tensor` of shape `(batch_size, K)`, float32 probabilities over the image codes.
    """
    start, end = image_token_range
    logits = logits[:, start:end].float() / temperature  # (B, K)
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, K)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a code once the codes ranked above it already reach top_p; the most likely code always stays.
        mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop = torch.zeros_like(mass_above, dtype=torch.bool).scatter(1, order, mass_above >= top_p)
        logits = logits.masked_fill(drop, -math.inf)
    return logits.softmax(dim=-1)  # (B, K)


def draw_image_codes(probs: torch.Tensor, noise: torch.Tensor) -> torch.LongTensor:
    """
    One draw per row from `probs` of shape `(batch_size, K)` given Exp(1) `noise` of the same shape:
    `argmax(probs / noise)` (the exponential form of the Gumbel-max trick) is distributed as `probs`. Keeping the
    noise outside makes a draw a pure tensor function, which a captured decode step can replay.

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`: code indices in `[0, K)`.
    """
    # A filtered code (probability 0) must never win, even against noise that is exactly 0 (0 / 0 is NaN, and
    # argmax would pick the NaN).
    scores = torch.where(probs > 0, probs / noise, torch.zeros_like(probs))  # (B, K)
    return scores.argmax(dim=-1)


def choose_image_codes(
    logits: torch.Tensor, noise: torch.Tensor, settings: SamplingSettings, image_token_range: tuple[int, int]
) -> torch.LongTensor:
    """
    The one place logits become codes: guidance, filtering and the draw. Tensor operations only (no host sync).

    Args:
        logits (`torch.Tensor` of shape `(rows, vocab_size)`): next-token logits; with guidance the conditional rows
            are followed by their null-class copies (`rows = 2 * batch_size`), else `rows = batch_size`.
        noise (`torch.Tensor` of shape `(batch_size, K)`): Exp(1) noise from [`exponential_noise`].
        settings ([`SamplingSettings`]): guidance scale, temperature, top-k, top-p.
        image_token_range (`tuple[int, int]`): `(start, end)` of the image ids.

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`: codes in `[0, K)` (token id minus `start`).
    """
    logits = logits.float()
    if settings.guided:
        cond, uncond = logits.chunk(2, dim=0)  # (B, V) each
        logits = torch.lerp(uncond, cond, settings.guidance_scale)  # uncond + s * (cond - uncond); cond at s = 1
    probs = image_token_probs(logits, image_token_range, settings.temperature, settings.top_k, settings.top_p)
    return draw_image_codes(probs, noise)  # (B,)


def sample_next_token(
    logits: torch.Tensor,
    image_token_range: tuple[int, int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """
    Draws one image token per row from next-token logits, restricted to the image codes (no guidance).

    Args:
        logits (`torch.Tensor` of shape `(batch_size, vocab_size)`): next-token logits.
        image_token_range (`tuple[int, int]`): `(start, end)` of the image ids; all other ids are never drawn.
        temperature (`float`): divides the logits; must be positive.
        top_k (`int`, *optional*): keep only the k most likely image codes (`top_k=1` is greedy decoding).
        top_p (`float`, *optional*): nucleus sampling, keep the smallest set of codes whose probability reaches p.
        generator (`torch.Generator`, *optional*): the source of randomness, for reproducible samples. Each call
            draws `batch_size * K` Exp(1) numbers from it ([`exponential_noise`]).

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`: the drawn token ids, in `[start, end)`.
    """
    check_sampling_arguments(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"`logits` must have shape (batch_size, vocab_size), got {tuple(logits.shape)}.")
    start, end = image_token_range
    noise = exponential_noise((logits.shape[0], end - start), generator, logits.device)  # (B, K)
    settings = SamplingSettings(None, temperature, top_k, top_p)
    return choose_image_codes(logits, noise, settings, image_token_range) + start  # (B,)


# ----- one run and its loop ------------------------------------------------------------------------------------------


@dataclass
class SamplingRun:
    """
    What one `sample()` call hands its decode step, validated once.

    Attributes:
        model ([`VQGANPriorForCausalLM`]): the prior, in eval mode for the run.
        prefix_ids (`torch.LongTensor` of shape `(rows, prefix_length)`): condition / class / start tokens; with
            guidance the conditional rows are followed by their null-class copies.
        settings ([`SamplingSettings`]): how logits become codes.
        grid (`tuple[int, int]`): the output grid `(h, w)`; codes are sampled in its raster order.
    """

    model: VQGANPriorForCausalLM
    prefix_ids: torch.LongTensor
    settings: SamplingSettings
    grid: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return self.prefix_ids.shape[0] // (2 if self.settings.guided else 1)

    @property
    def trained_grid(self) -> tuple[int, int]:
        return self.model.config.latent_height, self.model.config.latent_width

    def image_ids(self, codes: torch.LongTensor) -> torch.LongTensor:
        """Codes `(B, t)` as token ids `(rows, t)`: shifted into the image range, repeated for the null-class rows."""
        ids = codes + self.model.config.image_token_range[0]
        return torch.cat([ids, ids]) if self.settings.guided else ids

    def sequence(self, codes: torch.LongTensor) -> torch.LongTensor:
        """The prefix followed by the codes `(B, t)` of the trained grid: ids of shape `(rows, prefix_length + t)`."""
        return torch.cat([self.prefix_ids, self.image_ids(codes)], dim=1)

    def choose(self, logits: torch.Tensor, noise: torch.Tensor) -> torch.LongTensor:
        """[`choose_image_codes`] with this run's settings: logits `(rows, V)`, noise `(B, K)` -> codes `(B,)`."""
        return choose_image_codes(logits, noise, self.settings, self.model.config.image_token_range)


def run_sampling_loop(
    run: SamplingRun,
    step: DecodeStep,
    codes: torch.LongTensor,
    start: int,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.LongTensor], torch.LongTensor | None] | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> torch.LongTensor:
    """
    The sampling loop: fills `codes[:, start:]` of shape `(batch_size, h * w)` in raster order, in place.

    Per position: `interrupt()` (stop when True), Exp(1) noise `(batch_size, K)` from `generator`, the step's codes,
    then `callback(step, codes so far)`; a returned tensor replaces the codes so far and the step starts again from
    them. Nothing here reads a tensor back to the host.
    """
    height, width = run.grid
    noise_shape = (run.batch_size, run.model.config.codebook_size)
    device = codes.device
    if start < height * width:  # a prefix may already fill the grid
        step.start(run, codes, start)
    for index, position in enumerate(range(start, height * width)):
        if interrupt is not None and interrupt():
            break
        noise = exponential_noise(noise_shape, generator, device)  # (B, K)
        codes[:, position] = step(codes, position, noise)
        if callback is not None:
            replaced = callback(index, codes[:, : position + 1].clone())
            if replaced is not None:
                if not isinstance(replaced, torch.Tensor) or replaced.shape != (codes.shape[0], position + 1):
                    shape = tuple(replaced.shape) if isinstance(replaced, torch.Tensor) else type(replaced).__name__
                    raise ValueError(
                        f"`callback` must return None or codes of shape {(codes.shape[0], position + 1)}, got {shape}."
                    )
                codes[:, : position + 1] = replaced.to(device)
                step.start(run, codes, position + 1)
    return codes


# ----- decode steps --------------------------------------------------------------------------------------------------


class DecodeStep:
    """
    How the loop gets the next codes. `start(run, codes, position)` (re)starts the step from `codes[:, :position]`
    (called once per run, and again after a callback edited the codes); `step(codes, position, noise)` returns the
    codes `(batch_size,)` at `position` of the run's grid, every earlier position being filled.
    """

    def check(self, model: VQGANPriorForCausalLM, grid: tuple[int, int]) -> None:
        """Raises a `ValueError` if this step cannot sample `grid` with `model`; called once, before the run."""
        trained = (model.config.latent_height, model.config.latent_width)
        if tuple(grid) != trained:
            raise ValueError(
                f"{type(self).__name__} samples the trained grid {trained} only, got grid={tuple(grid)}; use "
                "SlidingWindowDecodeStep (or decode_step=None) for a larger grid."
            )

    def start(self, run: SamplingRun, codes: torch.LongTensor, position: int) -> None:
        raise NotImplementedError

    def __call__(self, codes: torch.LongTensor, position: int, noise: torch.Tensor) -> torch.LongTensor:
        raise NotImplementedError


class KVCacheDecodeStep(DecodeStep):
    """The default step: a transformers `DynamicCache`; after the prefill each forward reads one new token."""

    def start(self, run: SamplingRun, codes: torch.LongTensor, position: int) -> None:
        self.run = run
        self.cache = DynamicCache(config=run.model.config)
        self._fed = 0  # image positions already in the cache
        self._logits = self._forward(run.sequence(codes[:, :position]))  # (rows, V)
        self._fed = position

    def _forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        output = self.run.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1]  # (rows, V)

    def __call__(self, codes: torch.LongTensor, position: int, noise: torch.Tensor) -> torch.LongTensor:
        if position > self._fed:  # feed the codes drawn since the last call (one, in the loop)
            self._logits = self._forward(self.run.image_ids(codes[:, self._fed : position]))
            self._fed = position
        return self.run.choose(self._logits, noise)


def _last_logits_from_scratch(model: VQGANPriorForCausalLM, input_ids: torch.LongTensor) -> torch.Tensor:
    """Next-token logits `(rows, V)` of a whole sequence `(rows, L)`, nothing reused."""
    # A fresh cache, dropped after: without any, transformers checks the positions for packed sequences, which reads
    # a tensor back to the host at every forward.
    cache = DynamicCache(config=model.config)
    return model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


class NoCacheDecodeStep(DecodeStep):
    """Re-runs the whole sequence at every token: taming's original sampler, the baseline of the benchmarks."""

    def start(self, run: SamplingRun, codes: torch.LongTensor, position: int) -> None:
        self.run = run

    def __call__(self, codes: torch.LongTensor, position: int, noise: torch.Tensor) -> torch.LongTensor:
        input_ids = self.run.sequence(codes[:, :position])  # (rows, P + position)
        return self.run.choose(_last_logits_from_scratch(self.run.model, input_ids), noise)


class SlidingWindowDecodeStep(DecodeStep):
    """
    Grids larger than the trained `latent_height x latent_width` (taming, section 3.2): the code at `(i, j)` is
    predicted from the trained-size window whose top-left corner is `(i - th // 2, j - tw // 2)` clamped to the grid,
    fed as the prefix followed by that window's codes in raster order up to `(i, j)`. Re-runs the window at every
    token; on the trained grid it is the [`NoCacheDecodeStep`].
    """

    def check(self, model: VQGANPriorForCausalLM, grid: tuple[int, int]) -> None:
        th, tw = model.config.latent_height, model.config.latent_width
        if grid[0] < th or grid[1] < tw:
            raise ValueError(f"Sliding-window sampling needs a grid of at least {th}x{tw}, got {grid[0]}x{grid[1]}.")

    def start(self, run: SamplingRun, codes: torch.LongTensor, position: int) -> None:
        self.run = run

    def __call__(self, codes: torch.LongTensor, position: int, noise: torch.Tensor) -> torch.LongTensor:
        (height, width), (th, tw) = self.run.grid, self.run.trained_grid
        i, j = divmod(position, width)
        top, left = min(max(i - th // 2, 0), height - th), min(max(j - tw // 2, 0), width - tw)
        window = codes.view(-1, height, width)[:, top : top + th, left : left + tw]  # (B, th, tw)
        local = (i - top) * tw + (j - left)  # the position inside the window, in raster order
        input_ids = self.run.sequence(window.reshape(window.shape[0], -1)[:, :local])  # (rows, P + local)
        return self.run.choose(_last_logits_from_scratch(self.run.model, input_ids), noise)


# ----- the static-cache captured step --------------------------------------------------------------------------------

STATIC_MODES = ("auto", "eager", "cuda_graph", "compile")
_WARMUP_STEPS = 3  # eager runs before a CUDA graph capture; also enough for cudagraph trees to record


@dataclass(frozen=True)
class _StaticKey:
    """Everything a captured step is specialised on; one captured step (and one static cache) per key."""

    model_id: int  # id() of the prior: one step object may serve several priors
    rows: int  # B, or 2B with guidance
    total_length: int
    settings: SamplingSettings
    device: torch.device
    dtype: torch.dtype


class _StaticDecoder:
    """A static cache and the single-token step over it, compiled or captured once."""

    def __init__(self, model: VQGANPriorForCausalLM, key: _StaticKey, mode: str, compile_kwargs: dict):
        self.model, self.key, self.mode = model, key, mode
        self.cache = StaticCache(config=model.config, max_cache_len=key.total_length)
        self.setup_seconds = 0.0
        self._graph = None
        self._step = torch.compile(self._eager_step, **compile_kwargs) if mode == "compile" else self._eager_step
        self._ready = mode == "eager"

    def _eager_step(self, token_ids: torch.LongTensor, noise: torch.Tensor) -> torch.LongTensor:
        # The position and the write index come from the cache's own length tensor, so the step has fixed shapes
        # and no host-side state: it can be captured once and replayed at every position.
        logits = self.model(input_ids=token_ids, cache=self.cache, use_cache=True).logits[:, -1]  # (rows, V)
        return choose_image_codes(logits, noise, self.key.settings, self.model.config.image_token_range)  # (B,)

    def prefill(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Resets the cache in place (captured graphs keep its tensors) and returns the last logits `(rows, V)`."""
        self.cache.reset()
        out = self.model(input_ids=input_ids, cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def decode(self, token_ids: torch.LongTensor, noise: torch.Tensor) -> torch.LongTensor:
        """Codes `(B,)` at the next position from the previous ids `(rows, 1)`; copy them before the next call."""
        if self._graph is not None:
            self._static_ids.copy_(token_ids)
            self._static_noise.copy_(noise)
            self._graph.replay()
            return self._static_out
        if self.mode == "compile" and token_ids.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may now be overwritten
        return self._step(token_ids, noise)

    def ensure_ready(self) -> None:
        """Compile or capture the step on dummy inputs (timed into `setup_seconds`); the cache is reset after."""
        if self._ready:
            return
        key = self.key
        began = time.perf_counter()
        token_ids = torch.zeros(key.rows, 1, dtype=torch.long, device=key.device)
        batch_size = key.rows // (2 if key.settings.guided else 1)
        noise = torch.ones(batch_size, self.model.config.codebook_size, device=key.device)
        if self.mode == "cuda_graph":
            self._capture(token_ids, noise)
        else:
            for _ in range(_WARMUP_STEPS):  # dynamo compiles on the first call, cudagraph trees record after
                self.prefill(token_ids)  # a one-token prefix, so every warm-up step writes position 1
                self.decode(token_ids, noise).clone()
        if key.device.type == "cuda":
            torch.cuda.synchronize(key.device)
        self.cache.reset()
        self.setup_seconds = time.perf_counter() - began
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


class StaticCacheDecodeStep(DecodeStep):
    """
    A static KV cache and one fixed-shape single-token step, `(ids (rows, 1), noise (B, K)) -> codes (B,)`, that runs
    the GPT, [`choose_image_codes`] (guidance, filtering, the draw) with no host sync, replayed as a CUDA graph. The
    same codes as the default step from the same generator, up to the rounding of fused kernels. Keep one object and
    pass it to every `sample()` call: the step and its cache are prepared once per (rows, length, settings, device,
    dtype) and reused. Move the prior to its device and dtype first; model CPU offload is refused.

    Args:
        mode (`str`, defaults to `"auto"`): `"compile"` (`torch.compile` of the step; on CUDA with
            `mode="reduce-overhead"`, i.e. CUDA graphs), `"cuda_graph"` (capture of the eager step, CUDA only, no
            compile time), `"eager"` (no capture, any device) or `"auto"` (`"compile"` on CUDA, `"eager"` elsewhere).
        compile_kwargs (`dict`, *optional*): arguments for `torch.compile`, replacing the defaults
            (`fullgraph=True`, plus `mode="reduce-overhead"` on CUDA).

    Attributes:
        setup_seconds (`dict`): compile / capture seconds of each configuration prepared so far, by its key.
    """

    def __init__(self, mode: str = "auto", compile_kwargs: dict | None = None):
        if mode not in STATIC_MODES:
            raise ValueError(f"`mode` must be one of {STATIC_MODES}, got {mode!r}.")
        self.mode = mode
        self.compile_kwargs = compile_kwargs
        self._decoders: dict[_StaticKey, _StaticDecoder] = {}

    @property
    def setup_seconds(self) -> dict[_StaticKey, float]:
        return {key: decoder.setup_seconds for key, decoder in self._decoders.items()}

    def check(self, model: VQGANPriorForCausalLM, grid: tuple[int, int]) -> None:
        super().check(model, grid)
        if getattr(model, "_hf_hook", None) is not None:
            # An accelerate hook (model CPU offload) moves the weights at the first forward, after the cache, the
            # noise and the captured step were placed on the device the weights had before.
            raise ValueError(
                "Fast decoding does not work with model CPU offload: the prior carries an accelerate hook. Keep the "
                "prior on its device (or use the plain sampler: `pipe.disable_fast_decode()`)."
            )
        if self.mode == "cuda_graph" and model.device.type != "cuda":
            raise ValueError(f"`mode='cuda_graph'` needs the prior on a CUDA device, it is on {model.device}.")

    def _decoder(self, model: VQGANPriorForCausalLM, key: _StaticKey) -> _StaticDecoder:
        if key not in self._decoders:
            on_cuda = key.device.type == "cuda"
            mode = ("compile" if on_cuda else "eager") if self.mode == "auto" else self.mode
            kwargs = self.compile_kwargs
            if kwargs is None:
                kwargs = {"fullgraph": True, **({"mode": "reduce-overhead"} if on_cuda else {})}
            self._decoders[key] = _StaticDecoder(model, key, mode, kwargs)
        return self._decoders[key]

    def start(self, run: SamplingRun, codes: torch.LongTensor, position: int) -> None:
        model, rows = run.model, run.prefix_ids.shape[0]
        total_length = run.prefix_ids.shape[1] + codes.shape[1]
        key = _StaticKey(id(model), rows, total_length, run.settings, model.device, model.dtype)
        self.run, self._current = run, self._decoder(model, key)
        if codes.shape[1] - position > 1:
            self._current.ensure_ready()
        self._logits = self._current.prefill(run.sequence(codes[:, :position]))  # (rows, V)
        self._fed = position

    def __call__(self, codes: torch.LongTensor, position: int, noise: torch.Tensor) -> torch.LongTensor:
        if position == self._fed:  # the first code after a prefill comes from the prefill's logits
            return self.run.choose(self._logits, noise)
        previous = self.run.image_ids(codes[:, position - 1 : position])  # (rows, 1)
        return self._current.decode(previous, noise).clone()
