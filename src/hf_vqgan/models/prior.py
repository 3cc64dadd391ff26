"""The stage-2 prior of VQGAN: a GPT over codebook indices (Esser et al. 2021, section 3.2).

The network is transformers' own GPT-2 configured to hold taming-transformers' minGPT weights exactly: learned
position embeddings, pre-LayerNorm blocks (eps 1e-5), attention and a 4x MLP with biases, exact (erf) GELU, a final
LayerNorm and an untied output head without bias. Attention backends (sdpa, flash), the KV cache, `generate()` and the
static cache therefore all come from transformers. This file adds what is specific to images: the token layout, the
training-time corruptions (taming's `pkeep`, class dropout) and a reproducible image-token sampler with
classifier-free guidance that runs inside `generate()`.

Importing this module registers the classes with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from huggingface_hub.dataclasses import strict
from torch import nn

# diffusers' pipeline loader looks a component's base classes up by name on the module it was saved from
# (`model_index.json` records `hf_vqgan.models.prior`), so `PreTrainedModel` must be importable from here.
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    PreTrainedModel,  # noqa: E402, F401, I001
)
from transformers import initialization as init
from transformers.generation import LogitsProcessor, LogitsProcessorList
from transformers.models.gpt2.modeling_gpt2 import GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel
from transformers.pytorch_utils import Conv1D

IGNORE_INDEX = -100  # label value that cross-entropy skips (torch and transformers default)


@strict
class VQGANPriorConfig(GPT2Config):
    r"""
    Configuration of [`VQGANPriorForCausalLM`], a GPT-2 over the codebook indices of a VQGAN.

    **Token layout** (documented here only; every helper reads the properties below). With K = `codebook_size`,
    C = `num_classes` and M = `cond_codebook_size`:

    | ids                                  | meaning                                   | property            |
    |--------------------------------------|-------------------------------------------|---------------------|
    | `[0, K)`                             | image code k is token k                   | `image_token_range` |
    | `[K, K + C)`                         | class c is token K + c (only if C > 0)    | `class_token_offset`|
    | `K + C`                              | null class, for guidance (only if C > 0)  | `null_class_token`  |
    | next id                              | start token                               | `start_token`       |
    | `[start + 1, start + 1 + M)`         | condition code m is token offset + m      | `cond_token_offset` |

    `vocab_size` is `cond_token_offset + M`. A sequence reads

        [cond tokens (cond_length, if M > 0)] + [class token (if C > 0)] + [start token (if neither)] + image tokens

    so there is always at least one prefix token (`prefix_length` of them) to predict the first image token from, and
    the class token, when present, is the last prefix token. Image tokens are the `latent_height * latent_width` codes
    of the latent grid in raster order (`num_image_tokens`). Wherever class labels are accepted, label C
    (`num_classes`) stands for the null class.

    Args:
        codebook_size (`int`, defaults to 1024): K, the number of codes of the image VQGAN.
        latent_height, latent_width (`int`, default to 16): the latent grid `(h, w)` the prior generates.
        num_classes (`int`, defaults to 0): C, the number of classes; 0 for an unconditional prior.
        cond_codebook_size (`int`, defaults to 0): M, the codebook size of a conditioning VQGAN (depth, segmentation,
            ... in taming's Net2Net); 0 for none.
        cond_length (`int`, defaults to 0): the number of condition tokens; positive exactly when M is.
        condition_type (`str`, *optional*): what the condition tokens encode (`"segmentation"`, `"depth"`, `"edges"`
            or `"lowres"`), so a pipeline can preprocess condition images as training did.
        cond_num_labels (`int`, *optional*): segmentation classes of the condition maps.
        lowres_factor (`int`, defaults to 8): downsampling factor of `"lowres"` conditions.
        vocab_size (`int`, *optional*): derived from the layout; passing the derived value is accepted so that saved
            configs load back, any other value is rejected.
        n_positions (`int`, *optional*): number of learned positions, defaults to `prefix_length + num_image_tokens`
            so a full training sequence fits. taming's `block_size` is one less (it never feeds the last token); a
            converter pads one row, which only the discarded last position reads.
        n_embd, n_layer, n_head (`int`): width, depth and heads of the GPT.
        resid_pdrop, embd_pdrop, attn_pdrop (`float`, default to 0.0): dropouts, as taming's GPT defaults.
        layer_norm_epsilon (`float`, defaults to 1e-5): as `torch.nn.LayerNorm`, which minGPT uses.

    The remaining GPT-2 fields keep the values that make the network minGPT: `activation_function="gelu"` (exact erf
    GELU, minGPT's `nn.GELU()`) and `tie_word_embeddings=False` (minGPT's head is its own matrix).
    """

    model_type = "vqgan_prior"

    codebook_size: int = 1024
    latent_height: int = 16
    latent_width: int = 16
    num_classes: int = 0
    cond_codebook_size: int = 0
    cond_length: int = 0
    condition_type: str | None = None
    cond_num_labels: int | None = None
    lowres_factor: int = 8
    vocab_size: int | None = None
    n_positions: int | None = None
    n_embd: int = 1024
    n_layer: int = 24
    n_head: int = 16
    activation_function: str = "gelu"
    resid_pdrop: float | int = 0.0
    embd_pdrop: float | int = 0.0
    attn_pdrop: float | int = 0.0
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = False
    # No end-of-sequence: a sample is always exactly `num_image_tokens` long.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in ("codebook_size", "latent_height", "latent_width", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("num_classes", "cond_codebook_size", "cond_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
        if (self.cond_codebook_size > 0) != (self.cond_length > 0):
            raise ValueError(
                f"`cond_codebook_size` ({self.cond_codebook_size}) and `cond_length` ({self.cond_length}) must be "
                "both positive (a conditioning VQGAN) or both 0 (none)."
            )
        condition_types = ("segmentation", "depth", "edges", "lowres")
        if self.condition_type is not None and self.condition_type not in condition_types:
            raise ValueError(
                f"`condition_type` must be None or one of {condition_types}, got {self.condition_type!r}."
            )
        if self.condition_type == "segmentation" and (self.cond_num_labels is None or self.cond_num_labels < 2):
            raise ValueError(f"Segmentation conditions need `cond_num_labels` >= 2, got {self.cond_num_labels!r}.")
        if self.lowres_factor < 1:
            raise ValueError(f"`lowres_factor` must be a positive integer, got {self.lowres_factor}.")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"`n_embd` ({self.n_embd}) must be divisible by `n_head` ({self.n_head}).")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {getattr(self, name)}.")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"`layer_norm_epsilon` must be positive, got {self.layer_norm_epsilon}.")

        derived_vocab_size = self.cond_token_offset + self.cond_codebook_size
        if self.vocab_size is None:
            self.vocab_size = derived_vocab_size
        elif self.vocab_size != derived_vocab_size:
            raise ValueError(
                f"`vocab_size` is derived from the token layout and must be {derived_vocab_size} (or left unset), "
                f"got {self.vocab_size}."
            )
        sequence_length = self.prefix_length + self.num_image_tokens
        if self.n_positions is None:
            self.n_positions = sequence_length
        elif self.n_positions < sequence_length:
            raise ValueError(
                f"`n_positions` must hold a whole sequence of prefix_length + num_image_tokens = {sequence_length} "
                f"tokens, got {self.n_positions}."
            )
        super().__post_init__(**kwargs)

    @property
    def num_image_tokens(self) -> int:
        return self.latent_height * self.latent_width

    @property
    def image_token_range(self) -> tuple[int, int]:
        """`(start, end)`: image codes are the ids `start <= id < end`."""
        return 0, self.codebook_size

    @property
    def class_token_offset(self) -> int:
        return self.codebook_size

    @property
    def null_class_token(self) -> int | None:
        return self.class_token_offset + self.num_classes if self.num_classes > 0 else None

    @property
    def start_token(self) -> int:
        return self.class_token_offset + self.num_classes + (1 if self.num_classes > 0 else 0)

    @property
    def cond_token_offset(self) -> int:
        return self.start_token + 1

    @property
    def prefix_length(self) -> int:
        uses_start = self.num_classes == 0 and self.cond_codebook_size == 0
        return self.cond_length + (1 if self.num_classes > 0 else 0) + (1 if uses_start else 0)


def _check_sampling_arguments(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be None or an integer >= 1, got {top_k!r}.")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"`top_p` must be None or a number in (0, 1], got {top_p!r}.")


def _draw_on_generator_device(draw: Callable[..., torch.Tensor], generator, device, *args, **kwargs) -> torch.Tensor:
    # Random numbers come from the generator's own device and are then moved, so one CPU generator reproduces the
    # same samples whichever device the model runs on.
    source_device = generator.device if generator is not None else device
    return draw(*args, generator=generator, device=source_device, **kwargs).to(device)


def image_token_probs(
    logits: torch.Tensor,
    image_token_range: tuple[int, int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """
    The distribution the next image token is drawn from: the image-code logits, divided by `temperature`, filtered
    by `top_k` and `top_p`, softmaxed. Tensor operations only (no checks, no host sync), so that a captured decode
    step (`hf_vqgan.models.fast_sampling`) can run it inside a CUDA graph; [`sample_next_token`] validates first.

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


def exponential_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """
    Exp(1) noise of `shape` for [`draw_image_codes`], drawn on the generator's device (the default generator of
    `device` when `generator` is None) and moved to `device`, so one CPU generator gives the same samples on any device.
    """
    return _draw_on_generator_device(
        lambda *size, generator, device: torch.empty(size, device=device).exponential_(generator=generator),
        generator,
        device,
        *shape,
    )


def draw_image_codes(probs: torch.Tensor, noise: torch.Tensor) -> torch.LongTensor:
    """
    One draw per row from `probs` of shape `(batch_size, K)` given Exp(1) `noise` of the same shape:
    `argmax(probs / noise)` (the exponential form of the Gumbel-max trick) is distributed as `probs`, and it is
    the very draw `torch.multinomial(probs, 1, generator)` makes from the same noise. Keeping the noise outside
    makes a draw a pure tensor function, which a captured decode step can replay.

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`: code indices in `[0, K)`.
    """
    # A filtered code (probability 0) must never win, even against noise that is exactly 0 (0 / 0 is NaN, and
    # argmax would pick the NaN).
    scores = torch.where(probs > 0, probs / noise, torch.zeros_like(probs))  # (B, K)
    return scores.argmax(dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    image_token_range: tuple[int, int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """
    Draws one image token per row from next-token logits, restricted to the image codes.

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
    _check_sampling_arguments(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"`logits` must have shape (batch_size, vocab_size), got {tuple(logits.shape)}.")
    probs = image_token_probs(logits, image_token_range, temperature, top_k, top_p)  # (B, K)
    noise = exponential_noise(tuple(probs.shape), generator, probs.device)  # (B, K)
    return draw_image_codes(probs, noise) + image_token_range[0]  # (B,)


class ImageTokenSampler(LogitsProcessor):
    """
    Draws the next image token inside `generate()` with a `torch.Generator`, applying classifier-free guidance.

    transformers' own sampling draws from the global RNG, so the draw happens here: the returned scores are `-inf`
    except at the chosen token, and `generate(do_sample=False)` then appends exactly that token.

    With `guidance_scale` set, the batch holds the conditional rows followed by their null-class copies
    `(2 * batch_size)`; the logits are combined as `uncond + s * (cond - uncond)`, one token is drawn per pair and the
    same token is appended to both rows, so both halves always see the same image tokens.
    """

    def __init__(
        self,
        image_token_range: tuple[int, int],
        prefix_length: int,
        prompt_length: int,
        total_length: int,
        guidance_scale: float | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[int, torch.LongTensor], None] | None = None,
    ):
        _check_sampling_arguments(temperature, top_k, top_p)
        self.image_token_range = image_token_range
        self.prefix_length = prefix_length
        self.prompt_length = prompt_length
        self.total_length = total_length
        self.guidance_scale = guidance_scale
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.generator = generator
        self.callback = callback

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] >= self.total_length:
            # Some devices (mps) run one extra, discarded step; it must not draw or report a token.
            return scores
        logits = scores  # (B, V) or (2B, V)
        if self.guidance_scale is not None:
            cond, uncond = scores.chunk(2, dim=0)  # (B, V) each
            # lerp is uncond + s * (cond - uncond) and returns `cond` exactly at s = 1.
            logits = torch.lerp(uncond, cond, self.guidance_scale)
        tokens = sample_next_token(
            logits, self.image_token_range, self.temperature, self.top_k, self.top_p, self.generator
        )  # (B,)
        if self.callback is not None:
            image_tokens = torch.cat([input_ids[: tokens.shape[0], self.prefix_length :], tokens[:, None]], dim=1)
            self.callback(input_ids.shape[1] - self.prompt_length, image_tokens)
        if self.guidance_scale is not None:
            tokens = tokens.repeat(2)  # (2B,) the same token for the conditional row and its null-class copy
        chosen = torch.full_like(scores, -math.inf)
        return chosen.scatter_(1, tokens[:, None], 0.0)


class VQGANPriorPreTrainedModel(GPT2PreTrainedModel):
    config_class = VQGANPriorConfig

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
    """The bare GPT-2 body of the prior (embeddings, blocks, final LayerNorm), as `VQGANPriorForCausalLM.transformer`."""


class VQGANPriorForCausalLM(VQGANPriorPreTrainedModel, GPT2LMHeadModel):
    """
    The VQGAN prior: GPT-2 with an untied, bias-free head over the token layout of [`VQGANPriorConfig`].

    `forward(input_ids, labels=...)` is transformers' GPT-2 forward (labels are shifted inside); pass
    `labels=model.image_token_labels(input_ids)` so the loss covers image positions only. `generate()` works as for any
    causal LM; `sample()` wraps it with the image-token sampler, guidance and the token layout.
    """

    _tied_weights_keys = None  # minGPT's head is its own matrix

    def __init__(self, config: VQGANPriorConfig):
        # Skip GPT2LMHeadModel.__init__ (it would build a plain GPT2Model) and build the same two parts with our body.
        super(GPT2LMHeadModel, self).__init__(config)
        self.transformer = VQGANPriorModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, *args, **kwargs):
        """transformers' GPT-2 forward, after checking that `input_ids` are in the vocabulary.

        Out-of-vocabulary ids would otherwise fail inside the embedding (an IndexError on the CPU, a device-side
        assert on CUDA). One-token steps skip the check: in `generate()` they only append sampled ids, and its prompt
        is checked once, in `generate`.
        """
        if isinstance(input_ids, torch.Tensor) and input_ids.shape[-1] > 1 and not torch.compiler.is_compiling():
            self._check_codes(input_ids, "input_ids", self.config.vocab_size)
        return super().forward(input_ids, *args, **kwargs)

    def generate(self, inputs: torch.LongTensor | None = None, *args, **kwargs):
        """transformers' `generate()`, after checking that the prompt's ids are in the vocabulary."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(prompt, torch.Tensor):
            self._check_codes(prompt, "input_ids", self.config.vocab_size)
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

    def _check_codes(self, codes: torch.Tensor, name: str, high: int) -> None:
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(codes).__name__}.")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"`{name}` must be an integer tensor, got dtype {codes.dtype}.")
        if codes.numel() > 0 and (codes.min() < 0 or codes.max() >= high):
            raise ValueError(
                f"`{name}` must lie in [0, {high}), got values in [{codes.min().item()}, {codes.max().item()}]."
            )

    def prefix_ids(
        self,
        class_labels: torch.LongTensor | None = None,
        cond_indices: torch.LongTensor | None = None,
        batch_size: int | None = None,
    ) -> torch.LongTensor:
        """
        The tokens before the image: condition tokens, class token or start token (see [`VQGANPriorConfig`]).

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): required exactly when `num_classes > 0`;
                labels in `[0, num_classes)`, or `num_classes` for the null class.
            cond_indices (`torch.LongTensor` of shape `(batch_size, cond_length)`): raw codes of the conditioning
                VQGAN in `[0, cond_codebook_size)`, required exactly when `cond_codebook_size > 0`.
            batch_size (`int`, *optional*): needed only when neither tensor is given (unconditional prior).

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
            self._check_codes(class_labels, "class_labels", config.num_classes + 1)
            if class_labels.ndim != 1:
                raise ValueError(f"`class_labels` must have shape (batch_size,), got {tuple(class_labels.shape)}.")
        if cond_indices is not None:
            self._check_codes(cond_indices, "cond_indices", config.cond_codebook_size)
            if cond_indices.ndim != 2 or cond_indices.shape[1] != config.cond_length:
                raise ValueError(
                    f"`cond_indices` must have shape (batch_size, {config.cond_length}), got {tuple(cond_indices.shape)}."
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
    ) -> torch.LongTensor:
        """
        The full token sequence: prefix ids followed by image codes.

        Args:
            indices (`torch.LongTensor` of shape `(batch_size, latent_height, latent_width)` or `(batch_size, T)`):
                image codes in `[0, codebook_size)`; a flat sequence may hold the first `T <= num_image_tokens`
                codes in raster order. `None` returns the prefix only.
            class_labels, cond_indices, batch_size: as in [`~VQGANPriorForCausalLM.prefix_ids`].

        Returns:
            `torch.LongTensor` of shape `(batch_size, prefix_length + T)`.
        """
        config = self.config
        if indices is None:
            return self.prefix_ids(class_labels, cond_indices, batch_size)
        self._check_codes(indices, "indices", config.codebook_size)
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
                f"`indices` of shape (batch_size, T) must have T <= {config.num_image_tokens}, got {tuple(indices.shape)}."
            )
        batch = indices.shape[0]
        if batch_size is not None and batch_size != batch:
            raise ValueError(f"`batch_size` ({batch_size}) differs from the batch of `indices` ({batch}).")
        prefix = self.prefix_ids(class_labels, cond_indices, batch_size=batch)
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
        keep = _draw_on_generator_device(torch.rand, generator, input_ids.device, image_ids.shape) < pkeep
        start, end = self.config.image_token_range
        random_ids = _draw_on_generator_device(torch.randint, generator, input_ids.device, start, end, image_ids.shape)
        corrupted = input_ids.clone()
        corrupted[:, prefix_length:] = torch.where(keep, image_ids, random_ids)
        return corrupted

    def drop_class_labels(
        self, class_labels: torch.LongTensor, prob: float, generator: torch.Generator | None = None
    ) -> torch.LongTensor:
        """
        Class dropout for classifier-free guidance (Ho & Salimans 2022): each label becomes the null class
        (`num_classes`) with probability `prob`, teaching the same network the unconditional distribution.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): labels in `[0, num_classes)`.
            prob (`float`): dropout probability in `[0, 1]`.
            generator (`torch.Generator`, *optional*): for reproducible dropout.

        Returns:
            `torch.LongTensor` of shape `(batch_size,)`.
        """
        if self.config.num_classes == 0:
            raise ValueError("`drop_class_labels` needs a class-conditional prior, but `num_classes=0`.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"`prob` must be a probability in [0, 1], got {prob}.")
        self._check_codes(class_labels, "class_labels", self.config.num_classes + 1)
        drop = _draw_on_generator_device(torch.rand, generator, class_labels.device, class_labels.shape) < prob
        return torch.where(drop, torch.full_like(class_labels, self.config.num_classes), class_labels)

    # ----- sampling ------------------------------------------------------------------------------------------------

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
        use_cache: bool = True,
        callback: Callable[[int, torch.LongTensor], None] | None = None,
        cache_implementation: str | None = None,
    ) -> torch.LongTensor:
        """
        Samples image codes autoregressively with `generate()`, one token per step.

        Args:
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): for a class-conditional prior.
            cond_indices (`torch.LongTensor` of shape `(batch_size, cond_length)`): for a prior with a condition.
            batch_size (`int`, *optional*): for an unconditional prior.
            prefix_indices (`torch.LongTensor` of shape `(batch_size, k)`): the first k image codes in raster order,
                kept as given; the remaining codes are sampled (image completion).
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance scale s. Other than 1, each step runs
                the conditional and null-class sequences in one batch of `2 * batch_size` and samples from
                `uncond + s * (cond - uncond)`; needs a class-conditional prior.
            temperature, top_k, top_p: see [`sample_next_token`].
            generator (`torch.Generator`, *optional*): makes the samples reproducible.
            use_cache (`bool`, defaults to True): reuse keys and values across steps. `False` re-runs the whole
                sequence at every step, as taming's original sampler (the benchmark baseline).
            callback (`Callable[[int, torch.LongTensor], None]`, *optional*): called once per sampled token as
                `callback(step, tokens)` with `step` counting from 0 and `tokens` the image codes so far, of shape
                `(batch_size, k + step + 1)`.
            cache_implementation (`str`, *optional*): passed to `generate()`, e.g. `"static"`.

        Returns:
            `torch.LongTensor` of shape `(batch_size, latent_height, latent_width)`: codes in `[0, codebook_size)`.
        """
        config = self.config
        _check_sampling_arguments(temperature, top_k, top_p)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
        if not (isinstance(guidance_scale, (int, float)) and math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"`guidance_scale` must be a non-negative finite number, got {guidance_scale!r}.")
        use_guidance = guidance_scale != 1.0
        if use_guidance and config.num_classes == 0:
            raise ValueError(
                f"`guidance_scale={guidance_scale}` needs a null class, but this prior has no classes (`num_classes=0`)."
            )
        if cache_implementation is not None and not use_cache:
            raise ValueError(f"`cache_implementation={cache_implementation!r}` needs `use_cache=True`.")
        if prefix_indices is not None:
            if isinstance(prefix_indices, torch.Tensor) and prefix_indices.ndim != 2:
                raise ValueError(
                    f"`prefix_indices` must have shape (batch_size, k), got {tuple(prefix_indices.shape)}."
                )
            if batch_size is None and class_labels is None and cond_indices is None:
                batch_size = prefix_indices.shape[0] if isinstance(prefix_indices, torch.Tensor) else None
        input_ids = self.build_input_ids(prefix_indices, class_labels, cond_indices, batch_size).to(self.device)
        batch, prompt_length = input_ids.shape
        total_length = config.prefix_length + config.num_image_tokens
        if use_guidance:
            null_ids = input_ids.clone()
            null_ids[:, config.prefix_length - 1] = config.null_class_token  # the class token is the last prefix token
            input_ids = torch.cat([input_ids, null_ids], dim=0)  # (2B, prompt_length)

        if prompt_length < total_length:
            sampler = ImageTokenSampler(
                config.image_token_range,
                prefix_length=config.prefix_length,
                prompt_length=prompt_length,
                total_length=total_length,
                guidance_scale=guidance_scale if use_guidance else None,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                callback=callback,
            )
            generation_config = GenerationConfig(
                max_new_tokens=total_length - prompt_length,
                do_sample=False,  # the sampler already chose the token; greedy selection just appends it
                num_beams=1,
                use_cache=use_cache,
                cache_implementation=cache_implementation,
                bos_token_id=None,
                eos_token_id=None,
                pad_token_id=None,
            )
            was_training = self.training
            self.eval()  # dropout off while sampling
            try:
                input_ids = self.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config,
                    logits_processor=LogitsProcessorList([sampler]),
                )
            finally:
                self.train(was_training)

        image_ids = input_ids[:batch, config.prefix_length :]  # (B, T)
        return image_ids.reshape(batch, config.latent_height, config.latent_width)


def register_auto_classes() -> None:
    """Makes `AutoConfig`, `AutoModel` and `AutoModelForCausalLM` resolve "vqgan_prior"; safe to call repeatedly."""
    AutoConfig.register(VQGANPriorConfig.model_type, VQGANPriorConfig, exist_ok=True)
    AutoModel.register(VQGANPriorConfig, VQGANPriorModel, exist_ok=True)
    AutoModelForCausalLM.register(VQGANPriorConfig, VQGANPriorForCausalLM, exist_ok=True)


register_auto_classes()
