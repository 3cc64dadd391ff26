"""The stage-2 prior of VQGAN: a GPT over codebook indices (Esser et al. 2021, section 3.2).

The network is transformers' own GPT-2 configured to hold taming-transformers' minGPT weights exactly: learned
position embeddings, pre-LayerNorm blocks (eps 1e-5), attention and a 4x MLP with biases, exact (erf) GELU, a final
LayerNorm and an untied output head without bias. Attention backends (sdpa, flash), the KV cache, `generate()` and the
static cache therefore all come from transformers. This file adds what is specific to images: the token layout, the
training-time corruptions (taming's `pkeep`, class dropout) and `sample()`, the reproducible image-code sampler with
classifier-free guidance (its loop and decode steps live in `sampling.py`).

Importing this module registers the classes with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import nn

# diffusers' pipeline loader looks a component's base classes up by name on the module it was saved from
# (`model_index.json` records `hf_vqgan.models.prior`), so `PreTrainedModel` must be importable from here.
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,  # noqa: E402, F401, I001
)
from transformers import initialization as init
from transformers.models.gpt2.modeling_gpt2 import GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..loading import TRANSFORMERS_WEIGHTS, check_model_folder
from .prior_config import VQGANPriorConfig
from .sampling import (
    UNSAMPLED_CODE,
    DecodeStep,
    KVCacheDecodeStep,
    SamplingRun,
    SamplingSettings,
    SlidingWindowDecodeStep,
    check_sampling_arguments,
    draw_on_generator_device,
    run_sampling_loop,
    sample_next_token,  # noqa: F401 (old import path)
)
from .sampling import check_sampling_arguments as _check_sampling_arguments  # noqa: F401 (old import path)

IGNORE_INDEX = -100  # label value that cross-entropy skips (torch and transformers default)


class VQGANPriorPreTrainedModel(GPT2PreTrainedModel):
    config_class = VQGANPriorConfig

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModel") -> None:
        """No-op, as [`VQGANPriorConfig.register_for_auto_class`]: the saved config's `auto_map` covers the models."""

    def _init_weights(self, module: nn.Module) -> None:
        """All initialisation decisions of the prior (GPT-2, Radford et al. 2019, as minGPT)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
            # N(0, 0.02) for every projection; the two that write into the residual stream (attention output, MLP
            # output) are scaled by 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth (GPT-2).
            body = self.base_model
            is_residual = any(module is block.attn.c_proj or module is block.mlp.c_proj for block in body.h)
            init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer) if is_residual else std)
            if module.bias is not None:
                init.zeros_(module.bias)  # no offset before training has seen data
        elif isinstance(module, nn.Embedding):
            # Token and learned position embeddings: N(0, 0.02) like the projections, as GPT-2 (taming starts the
            # positions at zero; the choice only matters when training from scratch).
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)  # identity at start
            init.zeros_(module.bias)


class VQGANPriorModel(VQGANPriorPreTrainedModel, GPT2Model):
    """The bare GPT-2 body of the prior (embeddings, blocks, final LayerNorm): `VQGANPriorForCausalLM.transformer`."""


def _default_generation_config(config: VQGANPriorConfig) -> GenerationConfig:
    """`generate()` defaults that keep a plain call in range: only image codes, one whole image after the prefix."""
    start, end = config.image_token_range
    return GenerationConfig(
        max_length=config.prefix_length + config.num_image_tokens,
        suppress_tokens=[token for token in range(config.vocab_size) if not start <= token < end],
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


class VQGANPriorForCausalLM(VQGANPriorPreTrainedModel, GPT2LMHeadModel):
    """
    The VQGAN prior: GPT-2 with an untied, bias-free head over the token layout of [`VQGANPriorConfig`].

    `forward(input_ids, labels=...)` is transformers' GPT-2 forward (labels are shifted inside); pass
    `labels=model.image_token_labels(input_ids)` so the loss covers image positions only. `generate()` works as for any
    causal LM; its default generation config suppresses every id that is not an image code and stops after one image,
    so `generate(model.prefix_ids(...))` emits image codes only. `sample()` is the image sampler: reproducible draws
    from a generator, classifier-free guidance, grids larger than the trained one, pluggable decode steps.
    """

    _tied_weights_keys = None  # minGPT's head is its own matrix

    def __init__(self, config: VQGANPriorConfig):
        # Skip GPT2LMHeadModel.__init__ (it would build a plain GPT2Model) and build the same two parts with our body.
        super(GPT2LMHeadModel, self).__init__(config)
        self.transformer = VQGANPriorModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()
        # A saved generation_config.json, when the folder has one, replaces this default in `from_pretrained`.
        self.generation_config = _default_generation_config(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        """transformers' `from_pretrained`, after `hf_vqgan.loading.check_model_folder` has checked a local folder: a
        missing, empty or truncated file (transformers would build a default GPT-2 without config.json, and drop an
        unreadable generation_config.json), or a pipeline root without `subfolder="transformer"`, is named in one
        error."""
        check_model_folder(pretrained_model_name_or_path, kwargs.get("subfolder"), cls.__name__, "config.json",
                           TRANSFORMERS_WEIGHTS)  # fmt: skip
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def adjust_generation_fn(self, *args, **kwargs) -> None:
        """transformers' loading of `generation_config.json`; a folder without one gets the default above."""
        super().adjust_generation_fn(*args, **kwargs)
        # transformers would build it from config.json, which holds no generation settings (folders saved before the
        # default existed): `generate()` would then emit class and start tokens.
        if getattr(self.generation_config, "_from_model_config", False):
            self.generation_config = _default_generation_config(self.config)

    def _check_length(self, length: int, what: str) -> None:
        if length > self.config.n_positions:
            raise ValueError(
                f"{what} needs {length} positions, but the prior has n_positions={self.config.n_positions} "
                f"(prefix_length {self.config.prefix_length} + num_image_tokens {self.config.num_image_tokens})."
            )

    def forward(self, input_ids: torch.LongTensor | None = None, *args, **kwargs):
        """transformers' GPT-2 forward, after a shape check: the sequence must fit the learned positions.

        Token ids are not range-checked here (a min/max check reads back to the host at every training step): they
        are checked where they enter, in `build_input_ids`, `sample` and `generate`.
        """
        if isinstance(input_ids, torch.Tensor) and not torch.compiler.is_compiling():
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            past = cache.get_seq_length() if cache is not None else 0
            if isinstance(past, int):  # a static cache keeps its length in a tensor: not read back
                self._check_length(
                    past + input_ids.shape[-1], f"A forward over {past} cached + {input_ids.shape[-1]} ids"
                )
        return super().forward(input_ids, *args, **kwargs)

    def generate(self, inputs: torch.LongTensor | None = None, *args, **kwargs):
        """transformers' `generate()`, after checking the prompt's ids and that the requested length fits."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(prompt, torch.Tensor):
            self._check_codes(prompt, "input_ids", self.config.vocab_size)
            generation_config = kwargs.get("generation_config") or self.generation_config
            max_new_tokens = kwargs.get("max_new_tokens", generation_config.max_new_tokens)
            if max_new_tokens is not None:
                length = prompt.shape[-1] + max_new_tokens
            else:
                length = kwargs.get("max_length", generation_config.max_length)
            self._check_length(length, f"generate() of {length} tokens from a prompt of {prompt.shape[-1]}")
        return super().generate(inputs, *args, **kwargs)

    # ----- token layout -------------------------------------------------------------------------------------------

    def _batch_size(self, **sizes: int | None) -> int:
        given = {name: size for name, size in sizes.items() if size is not None}
        if not given:
            raise ValueError(
                "Cannot tell the batch size: pass `batch_size` (or class labels, condition codes or image indices)."
            )
        if len(set(given.values())) > 1:
            raise ValueError(f"All inputs must share one batch size, got {given}.")
        return next(iter(given.values()))

    def _check_codes(self, codes: torch.Tensor, name: str, high: int, validate: bool = True) -> None:
        """Type checks always; with `validate`, the range check too (one read back to the host)."""
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(codes).__name__}.")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"`{name}` must be an integer tensor, got dtype {codes.dtype}.")
        if validate and codes.numel() > 0:
            low, top = torch.stack(torch.aminmax(codes)).tolist()
            if low < 0 or top >= high:
                raise ValueError(f"`{name}` must lie in [0, {high}), got values in [{low}, {top}].")

    def prefix_ids(
        self,
        class_labels: torch.LongTensor | None = None,
        cond_indices: torch.LongTensor | None = None,
        batch_size: int | None = None,
        validate: bool = True,
    ) -> torch.LongTensor:
        """
        The tokens before the image: condition tokens, class token or start token (see [`VQGANPriorConfig`]).

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): required exactly when `num_classes > 0`;
                labels in `[0, num_classes)`, or `num_classes` for the null class.
            cond_indices (`torch.LongTensor` of shape `(batch_size, cond_length)`): raw codes of the conditioning
                VQGAN in `[0, cond_codebook_size)`, required exactly when `cond_codebook_size > 0`.
            batch_size (`int`, *optional*): needed only when neither tensor is given (unconditional prior).
            validate (`bool`, defaults to True): check that labels and codes lie in range (a read back to the host);
                `False` keeps the type and shape checks only, for data validated once when loaded.

        Returns:
            `torch.LongTensor` of shape `(batch_size, prefix_length)`, on the model's device.
        """
        config = self.config
        if config.num_classes == 0 and class_labels is not None:
            raise ValueError("`class_labels` were given, but this prior is unconditional (`num_classes=0`).")
        if config.num_classes > 0 and class_labels is None:
            raise ValueError(
                f"This prior is class-conditional (`num_classes={config.num_classes}`): pass `class_labels`."
            )
        if config.cond_codebook_size == 0 and cond_indices is not None:
            raise ValueError("`cond_indices` were given, but this prior has no condition (`cond_codebook_size=0`).")
        if config.cond_codebook_size > 0 and cond_indices is None:
            raise ValueError(f"This prior is conditioned on {config.cond_length} codes: pass `cond_indices`.")
        if class_labels is not None:
            # num_classes itself is the null class (see VQGANPriorConfig), hence the inclusive bound.
            self._check_codes(class_labels, "class_labels", config.num_classes + 1, validate)
            if class_labels.ndim != 1:
                raise ValueError(f"`class_labels` must have shape (batch_size,), got {tuple(class_labels.shape)}.")
        if cond_indices is not None:
            self._check_codes(cond_indices, "cond_indices", config.cond_codebook_size, validate)
            if cond_indices.ndim != 2 or cond_indices.shape[1] != config.cond_length:
                raise ValueError(
                    f"`cond_indices` must have shape (batch_size, {config.cond_length}), "
                    f"got {tuple(cond_indices.shape)}."
                )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        batch = self._batch_size(
            batch_size=batch_size,
            class_labels=None if class_labels is None else class_labels.shape[0],
            cond_indices=None if cond_indices is None else cond_indices.shape[0],
        )
        device = self.device

        parts = []
        if cond_indices is not None:
            parts.append(cond_indices.long().to(device) + config.cond_token_offset)  # (B, cond_length)
        if class_labels is not None:
            parts.append(class_labels.long().to(device)[:, None] + config.class_token_offset)  # (B, 1)
        if not parts:
            parts.append(torch.full((batch, 1), config.start_token, dtype=torch.long, device=device))
        return torch.cat(parts, dim=1)  # (B, prefix_length)

    def build_input_ids(
        self,
        indices: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        cond_indices: torch.LongTensor | None = None,
        batch_size: int | None = None,
        validate: bool = True,
    ) -> torch.LongTensor:
        """
        The full token sequence: prefix ids followed by image codes.

        Args:
            indices (`torch.LongTensor` of shape `(batch_size, latent_height, latent_width)` or `(batch_size, T)`):
                image codes in `[0, codebook_size)`; a flat sequence may hold the first `T <= num_image_tokens`
                codes in raster order. `None` returns the prefix only.
            class_labels, cond_indices, batch_size, validate: as in [`~VQGANPriorForCausalLM.prefix_ids`]. Training
                on a token dataset checked once when loaded passes `validate=False`: no read back per step.

        Returns:
            `torch.LongTensor` of shape `(batch_size, prefix_length + T)`.
        """
        config = self.config
        if indices is None:
            return self.prefix_ids(class_labels, cond_indices, batch_size, validate)
        self._check_codes(indices, "indices", config.codebook_size, validate)
        grid = (config.latent_height, config.latent_width)
        if indices.ndim not in (2, 3):
            raise ValueError(
                f"`indices` must have shape (batch_size, h, w) or (batch_size, T), got {tuple(indices.shape)}."
            )
        if indices.ndim == 3 and tuple(indices.shape[1:]) != grid:
            raise ValueError(
                f"`indices` must have shape (batch_size, {grid[0]}, {grid[1]}), got {tuple(indices.shape)}."
            )
        if indices.ndim == 2 and indices.shape[1] > config.num_image_tokens:
            raise ValueError(
                f"`indices` of shape (batch_size, T) must have T <= {config.num_image_tokens}, "
                f"got {tuple(indices.shape)}."
            )
        batch = indices.shape[0]
        if batch_size is not None and batch_size != batch:
            raise ValueError(f"`batch_size` ({batch_size}) differs from the batch of `indices` ({batch}).")
        prefix = self.prefix_ids(class_labels, cond_indices, batch_size=batch, validate=validate)
        image_ids = indices.reshape(batch, -1).long().to(prefix.device) + config.image_token_range[0]  # (B, T)
        return torch.cat([prefix, image_ids], dim=1)  # (B, prefix_length + T)

    def image_token_labels(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """
        Labels for `forward(input_ids, labels=...)` that score image positions only: a copy of `input_ids` of shape
        `(batch_size, prefix_length + T)` with the prefix set to -100 (ignored by the cross-entropy).
        """
        labels = input_ids.clone()
        labels[:, : self.config.prefix_length] = IGNORE_INDEX
        return labels

    # ----- training-time corruptions -----------------------------------------------------------------------------

    def corrupt_image_tokens(
        self, input_ids: torch.LongTensor, pkeep: float, generator: torch.Generator | None = None
    ) -> torch.LongTensor:
        """
        taming's `pkeep` corruption: each image token of the *input* is replaced by a uniformly random code with
        probability `1 - pkeep`, so the model learns to continue from imperfect samples. Train on
        `forward(corrupted_ids, labels=model.image_token_labels(clean_ids))`: the targets stay clean.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, prefix_length + T)`): from `build_input_ids`.
            pkeep (`float`): probability in `[0, 1]` of keeping each image token.
            generator (`torch.Generator`, *optional*): for reproducible corruption.

        Returns:
            `torch.LongTensor` of the same shape; the prefix is untouched.
        """
        if not 0.0 <= pkeep <= 1.0:
            raise ValueError(f"`pkeep` must be a probability in [0, 1], got {pkeep}.")
        prefix_length = self.config.prefix_length
        image_ids = input_ids[:, prefix_length:]  # (B, T)
        keep = draw_on_generator_device(torch.rand, generator, input_ids.device, image_ids.shape) < pkeep
        start, end = self.config.image_token_range
        random_ids = draw_on_generator_device(torch.randint, generator, input_ids.device, start, end, image_ids.shape)
        corrupted = input_ids.clone()
        corrupted[:, prefix_length:] = torch.where(keep, image_ids, random_ids)
        return corrupted

    def drop_class_labels(
        self,
        class_labels: torch.LongTensor,
        prob: float,
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> torch.LongTensor:
        """
        Class dropout for classifier-free guidance (Ho & Salimans 2022): each label becomes the null class
        (`num_classes`) with probability `prob`, teaching the same network the unconditional distribution.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): labels in `[0, num_classes)`.
            prob (`float`): dropout probability in `[0, 1]`.
            generator (`torch.Generator`, *optional*): for reproducible dropout.
            validate (`bool`, defaults to True): range-check the labels (a read back to the host); see `prefix_ids`.

        Returns:
            `torch.LongTensor` of shape `(batch_size,)`.
        """
        if self.config.num_classes == 0:
            raise ValueError("`drop_class_labels` needs a class-conditional prior, but `num_classes=0`.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"`prob` must be a probability in [0, 1], got {prob}.")
        self._check_codes(class_labels, "class_labels", self.config.num_classes + 1, validate)
        drop = draw_on_generator_device(torch.rand, generator, class_labels.device, class_labels.shape) < prob
        return torch.where(drop, torch.full_like(class_labels, self.config.num_classes), class_labels)

    # ----- sampling ------------------------------------------------------------------------------------------------

    def _sampling_run(
        self, class_labels, cond_indices, batch_size, prefix_indices, guidance_scale, temperature, top_k, top_p,
        generator, grid,
    ) -> tuple[SamplingRun, torch.LongTensor, int]:  # fmt: skip
        """Checks `sample()`'s arguments once; returns the run, the code buffer `(B, h * w)` and the first position."""
        config = self.config
        check_sampling_arguments(temperature, top_k, top_p)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"`guidance_scale` must be a non-negative finite number, got {guidance_scale!r}.")
        guided = guidance_scale != 1.0
        if guided and config.num_classes == 0:
            raise ValueError(
                f"`guidance_scale={guidance_scale}` needs a null class, but this prior has no classes "
                "(`num_classes=0`)."
            )
        grid = (config.latent_height, config.latent_width) if grid is None else grid
        if not (
            isinstance(grid, (tuple, list))
            and len(grid) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid)
        ):
            raise ValueError(f"`grid` must be None or a pair of positive ints (h, w), got {grid!r}.")
        known = 0
        if prefix_indices is not None:
            self._check_codes(prefix_indices, "prefix_indices", config.codebook_size)
            if prefix_indices.ndim != 2 or prefix_indices.shape[1] > grid[0] * grid[1]:
                raise ValueError(
                    f"`prefix_indices` must have shape (batch_size, k), got {tuple(prefix_indices.shape)}; k is at "
                    f"most {grid[0] * grid[1]}, the number of codes of the grid {tuple(grid)}."
                )
            if batch_size is None and class_labels is None and cond_indices is None:
                batch_size = prefix_indices.shape[0]
            known = prefix_indices.shape[1]
        prefix_ids = self.prefix_ids(class_labels, cond_indices, batch_size)  # (B, P)
        batch = prefix_ids.shape[0]
        if prefix_indices is not None:
            self._batch_size(inputs=batch, prefix_indices=prefix_indices.shape[0])
        if guided:
            null_ids = prefix_ids.clone()
            null_ids[:, config.prefix_length - 1] = config.null_class_token  # the class token is the last prefix token
            prefix_ids = torch.cat([prefix_ids, null_ids])  # (2B, P)
        settings = SamplingSettings(
            float(guidance_scale) if guided else None,
            float(temperature),
            top_k,
            None if top_p is None else float(top_p),
        )
        codes = torch.full((batch, grid[0] * grid[1]), UNSAMPLED_CODE, dtype=torch.long, device=self.device)
        if known:
            codes[:, :known] = prefix_indices.to(self.device)
        return SamplingRun(self, prefix_ids, settings, tuple(grid)), codes, known

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.LongTensor | None = None,
        cond_indices: torch.LongTensor | None = None,
        batch_size: int | None = None,
        prefix_indices: torch.LongTensor | None = None,
        *,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        grid: tuple[int, int] | None = None,
        decode_step: DecodeStep | None = None,
        callback: Callable[[int, torch.LongTensor], torch.LongTensor | None] | None = None,
        interrupt: Callable[[], bool] | None = None,
    ) -> torch.LongTensor:
        """
        Samples image codes autoregressively, one position per step in raster order. Arguments are checked once here;
        the loop ([`~models.sampling.run_sampling_loop`]) reads nothing back to the host.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): for a class-conditional prior.
            cond_indices (`torch.LongTensor` of shape `(batch_size, cond_length)`): for a prior with a condition.
            batch_size (`int`, *optional*): for an unconditional prior.
            prefix_indices (`torch.LongTensor` of shape `(batch_size, k)`): the first k codes of the grid in raster
                order, kept as given; the remaining codes are sampled (image completion).
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance scale s. Other than 1, each step runs
                the conditional and null-class sequences in one batch of `2 * batch_size` and samples from
                `uncond + s * (cond - uncond)`; needs a class-conditional prior.
            temperature, top_k, top_p: see [`~models.sampling.sample_next_token`].
            generator (`torch.Generator`, *optional*): makes the samples reproducible; each position draws
                `batch_size * K` Exp(1) numbers from it, whatever the decode step.
            grid (`tuple[int, int]`, *optional*): the output grid `(h, w)`; defaults to the trained
                `(latent_height, latent_width)`. A larger grid is sampled with a sliding window of the trained size
                ([`~models.sampling.SlidingWindowDecodeStep`]).
            decode_step ([`~models.sampling.DecodeStep`], *optional*): how logits are computed; defaults to the KV
                cache ([`~models.sampling.KVCacheDecodeStep`]) on the trained grid and the sliding window beyond it.
                Others: `NoCacheDecodeStep()` (taming's sampler) and `StaticCacheDecodeStep(mode=...)` (captured,
                keep one object across calls). All give the same codes from the same generator.
            callback (`Callable`, *optional*): called after each sampled code as `callback(step, tokens)`, `step`
                counting from 0, `tokens` a copy of the grid's codes so far in raster order (given prefix included),
                of shape `(batch_size, k + step + 1)`. Returning None changes nothing. Returning a tensor of that
                shape replaces those codes (in `[0, codebook_size)`, not re-checked): the result holds them and every
                later code is sampled given exactly them (the decode step restarts from the edited codes, one prefill).
            interrupt (`Callable[[], bool]`, *optional*): called before each code; when it returns True, sampling
                stops there. Positions not sampled hold -1 (`models.sampling.UNSAMPLED_CODE`), which no code uses.

        Returns:
            `torch.LongTensor` of shape `(batch_size, h, w)`: codes in `[0, codebook_size)` (-1 where an interrupt
            left a position unsampled).
        """
        run, codes, known = self._sampling_run(
            class_labels, cond_indices, batch_size, prefix_indices, guidance_scale, temperature, top_k, top_p,
            generator, grid,
        )  # fmt: skip
        if decode_step is None:
            decode_step = KVCacheDecodeStep() if run.grid == run.trained_grid else SlidingWindowDecodeStep()
        if not isinstance(decode_step, DecodeStep):
            raise TypeError(f"`decode_step` must be a DecodeStep or None, got {type(decode_step).__name__}.")
        decode_step.check(self, run.grid)
        for name, function in (("callback", callback), ("interrupt", interrupt)):
            if function is not None and not callable(function):
                raise TypeError(f"`{name}` must be callable or None, got {type(function).__name__}.")
        was_training = self.training
        self.eval()  # dropout off while sampling
        try:
            codes = run_sampling_loop(run, decode_step, codes, known, generator, callback, interrupt)
        finally:
            self.train(was_training)
        return codes.reshape(codes.shape[0], *run.grid)


def register_auto_classes() -> None:
    """Makes `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` resolve "vqgan_prior"; safe to call repeatedly."""
    AutoConfig.register(VQGANPriorConfig.model_type, VQGANPriorConfig, exist_ok=True)
    AutoModel.register(VQGANPriorConfig, VQGANPriorModel, exist_ok=True)
    AutoModelForCausalLM.register(VQGANPriorConfig, VQGANPriorForCausalLM, exist_ok=True)


register_auto_classes()
