"""The VQGAN tokenizer (Esser, Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis").

The architecture follows the paper's reference code so that its released checkpoints convert exactly
(`hf_vqgan.convert.taming`): ResNet blocks with GroupNorm and swish, single-head spatial self-attention at the
configured resolutions and in the middle block, strided-conv downsampling and nearest+conv upsampling, and 1x1
convolutions before and after the quantizer. Blocks come first, the model last.

Pixels are in [-1, 1]. Shapes: B batch, C channels, H/W pixels, h/w latent grid, D code dimension.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..loading import DIFFUSERS_WEIGHTS, check_model_folder
from .quantizer import QuantizerOutput, VectorQuantizer
from .quantizer_choice import build_grid_quantizer, resolve_code_shape


def _norm(channels: int, num_groups: int) -> nn.GroupNorm:
    # eps 1e-6 as in the reference implementation; the released checkpoints depend on it.
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place where autograd allows it (GroupNorm and conv backward need their inputs, not their outputs):
        # at 256 px every activation is tens of MB, and skipping the allocations saves ~8% of CPU inference time.
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv projections."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = _norm(channels, num_groups)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(channels, channels, 1)
        self.to_v = nn.Conv2d(channels, channels, 1)
        self.to_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).reshape(B, 1, C, H * W).transpose(-1, -2) for proj in (self.to_q, self.to_k, self.to_v))
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, H*W, C)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        # x first: the sum takes x's (contiguous) layout, not the channels-last strides of the transposed h.
        return x + self.to_out(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Asymmetric padding (right and bottom only), as the reference does, so H/2 x W/2 comes out exactly.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks, each optionally followed by attention, then a resampler."""

    def __init__(self, channels_in, channels_out, num_blocks, use_attention, resample, num_groups, dropout):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(channels_in if i == 0 else channels_out, channels_out, num_groups, dropout)
            for i in range(num_blocks)
        )
        self.attentions = nn.ModuleList(
            AttentionBlock(channels_out, num_groups) for _ in range(num_blocks if use_attention else 0)
        )
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.attentions:
                x = self.attentions[i](x)
        return self.resample(x) if self.resample is not None else x


class MidBlock(nn.Module):
    def __init__(self, channels: int, num_groups: int, dropout: float):
        super().__init__()
        self.resnet_1 = ResnetBlock(channels, channels, num_groups, dropout)
        self.attention = AttentionBlock(channels, num_groups)
        self.resnet_2 = ResnetBlock(channels, channels, num_groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet_2(self.attention(self.resnet_1(x)))


def _run_block(owner: nn.Module, block: nn.Module, h: torch.Tensor) -> torch.Tensor:
    # Gradient checkpointing (set by `VQGANModel.enable_gradient_checkpointing`): keep only each block's input and
    # recompute the block in the backward pass; dropout replays the same random mask, so gradients are unchanged.
    if owner.gradient_checkpointing and torch.is_grad_enabled():
        return owner._gradient_checkpointing_func(block, h)
    return block(h)


class Encoder(nn.Module):
    def __init__(self, in_channels, base_channels, channel_multipliers, num_res_blocks, attention_resolutions,
                 resolution, latent_channels, num_groups, dropout):  # fmt: skip
        super().__init__()
        self.gradient_checkpointing = False
        widths = [base_channels * m for m in channel_multipliers]
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.levels = nn.ModuleList()
        channels, current_resolution = base_channels, resolution
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            use_attention = current_resolution in attention_resolutions
            resample = None if last else Downsample(width)
            self.levels.append(Level(channels, width, num_res_blocks, use_attention, resample, num_groups, dropout))
            channels = width
            current_resolution = current_resolution if last else current_resolution // 2
        self.mid = MidBlock(channels, num_groups, dropout)
        self.norm_out = _norm(channels, num_groups)
        self.conv_out = nn.Conv2d(channels, latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = _run_block(self, level, h)
        h = _run_block(self, self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class Decoder(nn.Module):
    def __init__(self, out_channels, base_channels, channel_multipliers, num_res_blocks, attention_resolutions,
                 resolution, latent_channels, num_groups, dropout):  # fmt: skip
        super().__init__()
        self.gradient_checkpointing = False
        widths = [base_channels * m for m in channel_multipliers]
        channels = widths[-1]
        current_resolution = resolution // 2 ** (len(widths) - 1)
        self.conv_in = nn.Conv2d(latent_channels, channels, 3, padding=1)
        self.mid = MidBlock(channels, num_groups, dropout)
        # `levels[i]` works at the same resolution as the encoder's `levels[i]` (0 = full resolution); the
        # forward pass runs them from the coarsest to the finest. Each has one more ResNet block than the encoder.
        levels = []
        for i in reversed(range(len(widths))):
            use_attention = current_resolution in attention_resolutions
            resample = Upsample(widths[i]) if i > 0 else None
            levels.insert(
                0, Level(channels, widths[i], num_res_blocks + 1, use_attention, resample, num_groups, dropout)
            )
            channels = widths[i]
            current_resolution = current_resolution * 2 if i > 0 else current_resolution
        self.levels = nn.ModuleList(levels)
        self.norm_out = _norm(channels, num_groups)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_block(self, self.mid, self.conv_in(z))
        for level in reversed(self.levels):
            h = _run_block(self, level, h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


@dataclass
class VQGANEncoderOutput(BaseOutput):
    """
    Args:
        latents (`torch.Tensor` of shape `(batch_size, code_dim, h, w)`): Encoder outputs in code space, before
            quantization.
    """

    # None defaults: under mixed precision accelerate's `convert_to_fp32` rebuilds an output as `type(out)(dict)`,
    # which BaseOutput unpacks only when every field but the first has a default.
    latents: torch.Tensor | None = None


@dataclass
class VQGANDecoderOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`): Decoded pixels in [-1, 1]
            (not clamped).
    """

    sample: torch.Tensor | None = None


@dataclass
class VQGANModelOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`): The reconstruction.
        indices (`torch.LongTensor` of shape `(batch_size, h, w)`): The code indices.
        quantizer_loss (`torch.Tensor`): Weighted codebook + commitment loss.
        codebook_loss (`torch.Tensor`): Codebook term alone.
        commitment_loss (`torch.Tensor`): Commitment term alone.
        perplexity (`torch.Tensor`): Code-usage perplexity of the batch.
        usage (`torch.Tensor`): Fraction of codes used in the batch.
        entropy_loss (`torch.Tensor`, *optional*): LFQ's entropy term alone (unweighted); `None` for other quantizers.
    """

    # None defaults: see VQGANEncoderOutput.
    sample: torch.Tensor | None = None
    indices: torch.LongTensor | None = None
    quantizer_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    # FSQ/LFQ (issue 18)
    entropy_loss: torch.Tensor | None = None


class VQGANModel(ModelMixin, ConfigMixin):
    r"""
    The VQGAN image tokenizer: an encoder, a vector quantizer and a decoder.

    Args:
        in_channels (`int`, defaults to 3): Channels of input images.
        out_channels (`int`, defaults to 3): Channels of decoded images.
        base_channels (`int`, defaults to 128): Width of the first level.
        channel_multipliers (`tuple[int]`, defaults to `(1, 1, 2, 2, 4)`): Width of each level relative to
            `base_channels`. There are `len(channel_multipliers) - 1` downsamplings.
        num_res_blocks (`int`, defaults to 2): ResNet blocks per encoder level (the decoder has one more).
        attention_resolutions (`tuple[int]`, defaults to `(16,)`): Feature-map sizes, relative to `sample_size`,
            at which attention follows each ResNet block.
        sample_size (`int`, defaults to 256): The image size the attention resolutions refer to. The model is
            convolutional and accepts any size divisible by the downsampling factor.
        latent_channels (`int`, defaults to 256): Encoder output channels (`z_channels` in the reference).
        code_dim (`int`, *optional*): Dimension of the codes; the 1x1 convs around the quantizer map between
            `latent_channels` and `code_dim`. VQ: defaults to 256; a small value (e.g. 8) gives LlamaGen's factorised
            codes. FSQ and LFQ derive it (`len(fsq_levels)`, `log2(codebook_size)`): leave it unset.
        codebook_size (`int`, *optional*): Number of distinct codes, the prior's image vocabulary. VQ: the
            codebook's entries, defaults to 1024. FSQ: derived, `prod(fsq_levels)` (leave it unset). LFQ: a power of
            two, defaults to 1024. A derived value is stored in the config; an explicit one that disagrees is refused.
        dropout (`float`, defaults to 0.0): Dropout inside the ResNet blocks.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every width.
        commitment_beta (`float`, defaults to 0.25): Weight of the commitment loss.
        legacy_beta (`bool`, defaults to `False`): taming's placement of beta (on the codebook term), needed to
            reproduce its released checkpoints.
        l2_normalize_codes (`bool`, defaults to `False`): Cosine-similarity lookup with unit-norm codes.
        use_ema (`bool`, defaults to `False`): EMA codebook updates instead of the codebook loss.
        ema_decay (`float`, defaults to 0.99): EMA decay.
        dead_code_steps (`int`, defaults to 0): Restart codes unused for this many steps (0 = never).
        usage_window (`int`, defaults to 100): Steps over which usage statistics are kept.
        quantizer_type (`str`, defaults to `"vq"`): `"vq"` (a learned codebook, the options above), `"fsq"`
            (finite scalar quantization, `hf_vqgan.models.fsq`) or `"lfq"` (lookup-free quantization,
            `hf_vqgan.models.lfq`). FSQ and LFQ have no learned parameters and refuse the codebook options.
        fsq_levels (`list[int]`, *optional*): FSQ's values per code dimension, e.g. `[8, 5, 5, 5]` (1,000 codes).
        lfq_entropy_weight (`float`, defaults to 0.1): LFQ's entropy penalty weight.
        lfq_commitment_weight (`float`, defaults to 0.25): LFQ's commitment weight.
        lfq_entropy_temperature (`float`, defaults to 0.01): Temperature of LFQ's soft code assignment.
    """

    # `enable_gradient_checkpointing()` (from diffusers' ModelMixin) recomputes each encoder/decoder level and middle
    # block in the backward pass instead of storing its activations: less memory, about one more forward of compute.
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        sample_size: int = 256,
        latent_channels: int = 256,
        code_dim: int | None = None,
        codebook_size: int | None = None,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        commitment_beta: float = 0.25,
        legacy_beta: bool = False,
        l2_normalize_codes: bool = False,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        dead_code_steps: int = 0,
        usage_window: int = 100,
        # FSQ/LFQ (issue 18)
        quantizer_type: str = "vq",
        fsq_levels: list[int] | None = None,
        lfq_entropy_weight: float = 0.1,
        lfq_commitment_weight: float = 0.25,
        lfq_entropy_temperature: float = 0.01,
    ):
        super().__init__()
        # FSQ/LFQ (issue 18): code_dim / codebook_size follow from the quantizer; the config stores the values used.
        code_dim, codebook_size = resolve_code_shape(quantizer_type, code_dim, codebook_size, fsq_levels)
        self.register_to_config(code_dim=code_dim, codebook_size=codebook_size)
        _validate_config(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=base_channels,
            channel_multipliers=channel_multipliers,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            sample_size=sample_size,
            latent_channels=latent_channels,
            code_dim=code_dim,
            dropout=dropout,
            norm_num_groups=norm_num_groups,
        )
        shared = dict(
            base_channels=base_channels,
            channel_multipliers=tuple(channel_multipliers),
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            resolution=sample_size,
            latent_channels=latent_channels,
            num_groups=norm_num_groups,
            dropout=dropout,
        )
        self.encoder = Encoder(in_channels=in_channels, **shared)
        self.quant_conv = nn.Conv2d(latent_channels, code_dim, 1)
        if quantizer_type == "vq":
            self.quantizer = VectorQuantizer(
                codebook_size,
                code_dim,
                beta=commitment_beta,
                legacy_beta=legacy_beta,
                l2_normalize=l2_normalize_codes,
                use_ema=use_ema,
                ema_decay=ema_decay,
                dead_code_steps=dead_code_steps,
                usage_window=usage_window,
            )
        else:  # FSQ/LFQ (issue 18)
            self.quantizer = build_grid_quantizer(
                quantizer_type, fsq_levels=fsq_levels, codebook_size=codebook_size,
                lfq_entropy_weight=lfq_entropy_weight, lfq_commitment_weight=lfq_commitment_weight,
                lfq_entropy_temperature=lfq_entropy_temperature, usage_window=usage_window,
                vq_options=dict(legacy_beta=legacy_beta, l2_normalize_codes=l2_normalize_codes, use_ema=use_ema,
                                dead_code_steps=dead_code_steps),
            )  # fmt: skip
        self.post_quant_conv = nn.Conv2d(code_dim, latent_channels, 1)
        self.decoder = Decoder(out_channels=out_channels, **shared)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> VQGANModel:
        """diffusers' `from_pretrained`, after `hf_vqgan.loading.check_model_folder` has checked a local folder: a
        missing, empty or truncated file, or a pipeline root without `subfolder="vqgan"`, is named in one error."""
        check_model_folder(pretrained_model_name_or_path, kwargs.get("subfolder"), cls.__name__, cls.config_name,
                           DIFFUSERS_WEIGHTS)  # fmt: skip
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str = "Upload VQGANModel",
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        subfolder: str | None = None,
        *,
        revision: str | None = None,
        model_card=None,
        **card_fields,
    ) -> str:
        """Upload what `save_pretrained` writes, with this project's model card (not diffusers' generic one).

        The card is `model_card` if given, else the `README.md` of the folder the model was loaded from (with the
        images it links), else one rendered from `model_cards/vqgan.md` with `card_fields` (an unknown field is a
        `TypeError`). Nothing else of that folder is uploaded.

        Args:
            repo_id: the Hub repository, created if needed (`private`: whether a new one is private).
            commit_message, token: of the commit.
            create_pr: open a pull request instead of committing.
            safe_serialization: must stay `True`: folders of this library hold safetensors only.
            variant: weights are saved as `diffusion_pytorch_model.{variant}.safetensors`.
            subfolder: not supported (a tokenizer inside a pipeline is pushed with the pipeline).
            revision: the branch to commit to (created from the default branch if missing); not with `create_pr`.

        Returns:
            The URL of the commit or pull request.
        """
        from .. import hub

        if not safe_serialization:
            raise ValueError("safe_serialization=False is not supported: folders of hf_vqgan hold safetensors only.")
        if subfolder:
            raise ValueError(f"subfolder={subfolder!r} is not supported: push the pipeline that holds this tokenizer.")
        hub.check_card_fields("vqgan", card_fields)
        card = hub.card_files(self, model_card, lambda: hub.vqgan_model_card(self, repo_id=repo_id, **card_fields))
        return hub.push_saved_to_hub(
            repo_id, lambda folder: self.save_pretrained(folder, variant=variant), extra_files=card,
            commit_message=commit_message, private=private, token=token, create_pr=create_pr, revision=revision,
        )  # fmt: skip

    @property
    def downsample_factor(self) -> int:
        """How many pixels one token covers along each side."""
        return 2 ** (len(self.config.channel_multipliers) - 1)

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's last convolution weight, where VQGAN's adaptive GAN weight takes its gradients."""
        return self.decoder.conv_out.weight

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """The token grid `(h, w)` for images of `height` x `width` pixels."""
        f = self.downsample_factor
        if height % f or width % f or height < 1 or width < 1:
            raise ValueError(
                f"Image height and width must be positive multiples of the downsampling factor {f}, "
                f"got {height}x{width}."
            )
        return height // f, width // f

    # ------------------------------------------------------------------------------------------ validation
    def _check_pixels(self, pixel_values: torch.Tensor, channels: int, name: str = "pixel_values") -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4:
            raise ValueError(
                f"`{name}` must be a 4-D tensor (batch_size, channels, height, width), got shape "
                f"{tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[1] != channels:
            raise ValueError(
                f"`{name}` has {pixel_values.shape[1]} channels, but this model expects {channels} "
                f"(shape {tuple(pixel_values.shape)})."
            )
        if not pixel_values.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor in [-1, 1], got dtype {pixel_values.dtype}.")
        f = self.downsample_factor
        H, W = pixel_values.shape[-2:]
        if H % f or W % f or H == 0 or W == 0:
            raise ValueError(
                f"`{name}` height and width must be positive multiples of the downsampling factor {f}, got {H}x{W}."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(
                f"`{name}` is an empty batch (shape {tuple(pixel_values.shape)}); pass at least one image."
            )

    # --------------------------------------------------------------------------------------------- verbs
    # `apply_forward_hook`: with `enable_model_cpu_offload()`, verbs other than forward move the model too.
    @apply_forward_hook
    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> VQGANEncoderOutput | tuple:
        """
        Encode images of shape `(batch_size, in_channels, height, width)` in [-1, 1] into code-space latents of
        shape `(batch_size, code_dim, height / f, width / f)`, before quantization.
        """
        self._check_pixels(pixel_values, self.config.in_channels)
        latents = self.quant_conv(self.encoder(pixel_values))
        return VQGANEncoderOutput(latents=latents) if return_dict else (latents,)

    def quantize(self, latents: torch.Tensor, return_dict: bool = True) -> QuantizerOutput | tuple:
        """Quantize latents of shape `(batch_size, code_dim, h, w)`; returns codes, indices, losses, statistics."""
        out = self.quantizer(latents)
        return out if return_dict else out.to_tuple()

    @apply_forward_hook
    def decode(self, quantized: torch.Tensor, return_dict: bool = True) -> VQGANDecoderOutput | tuple:
        """Decode quantized latents of shape `(batch_size, code_dim, h, w)` into pixels in [-1, 1]."""
        if (
            not isinstance(quantized, torch.Tensor)
            or quantized.ndim != 4
            or quantized.shape[1] != self.config.code_dim
        ):
            shape = tuple(quantized.shape) if isinstance(quantized, torch.Tensor) else type(quantized).__name__
            raise ValueError(f"`quantized` must have shape (batch_size, {self.config.code_dim}, h, w), got {shape}.")
        quantized = quantized.to(self.post_quant_conv.weight.dtype)
        sample = self.decoder(self.post_quant_conv(quantized))
        return VQGANDecoderOutput(sample=sample) if return_dict else (sample,)

    @apply_forward_hook
    def decode_indices(self, indices: torch.LongTensor, return_dict: bool = True) -> VQGANDecoderOutput | tuple:
        """Decode code indices of shape `(batch_size, h, w)` into pixels in [-1, 1]."""
        quantized = self.quantizer.lookup(indices)  # checks the indices once: type, shape, range
        return self.decode(quantized, return_dict=return_dict)

    @apply_forward_hook
    def tokenize(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Images of shape `(batch_size, in_channels, height, width)` to indices of shape `(batch_size, h, w)`."""
        return self.quantize(self.encode(pixel_values).latents).indices

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> VQGANModelOutput | tuple:
        """Reconstruct images of shape `(batch_size, in_channels, height, width)`, with the quantizer's terms."""
        q = self.quantize(self.encode(pixel_values).latents)
        sample = self.decode(q.quantized).sample
        out = VQGANModelOutput(
            sample=sample,
            indices=q.indices,
            quantizer_loss=q.loss,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            perplexity=q.perplexity,
            usage=q.usage,
            entropy_loss=q.entropy_loss,
        )
        return out if return_dict else out.to_tuple()


def _validate_config(
    *,
    in_channels,
    out_channels,
    base_channels,
    channel_multipliers,
    num_res_blocks,
    attention_resolutions,
    sample_size,
    latent_channels,
    code_dim,
    dropout,
    norm_num_groups,
):
    for name, value in [
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("base_channels", base_channels),
        ("num_res_blocks", num_res_blocks),
        ("sample_size", sample_size),
        ("latent_channels", latent_channels),
        ("code_dim", code_dim),
        ("norm_num_groups", norm_num_groups),
    ]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if not isinstance(channel_multipliers, list | tuple) or not channel_multipliers:
        raise ValueError(
            f"`channel_multipliers` must be a non-empty list of positive ints, got {channel_multipliers!r}."
        )
    if any(not isinstance(m, int) or m < 1 for m in channel_multipliers):
        raise ValueError(f"`channel_multipliers` must hold positive ints, got {channel_multipliers!r}.")
    if not isinstance(attention_resolutions, list | tuple) or any(
        not isinstance(r, int) or r < 1 for r in attention_resolutions
    ):
        raise ValueError(f"`attention_resolutions` must be a list of positive ints, got {attention_resolutions!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")
    for width in sorted({base_channels * m for m in channel_multipliers} | {base_channels}):
        if width % norm_num_groups:
            raise ValueError(
                f"Every level width must be divisible by `norm_num_groups`={norm_num_groups}, but "
                f"base_channels={base_channels} x multipliers {list(channel_multipliers)} gives width {width}."
            )
    factor = 2 ** (len(channel_multipliers) - 1)
    if sample_size % factor:
        raise ValueError(
            f"`sample_size`={sample_size} must be divisible by the downsampling factor {factor} "
            f"(2 ** (len(channel_multipliers) - 1))."
        )
