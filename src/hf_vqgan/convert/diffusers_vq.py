"""Convert between hf_vqgan's `VQGANModel` and diffusers' `VQModel`.

The two describe the same network (taming's VQGAN) in different words, so weights move over unchanged except for
names and the attention projections, which are 1x1 convolutions here and `nn.Linear` layers in diffusers:

| hf_vqgan                                   | diffusers `VQModel`                                         |
| ------------------------------------------ | ----------------------------------------------------------- |
| `base_channels * channel_multipliers`      | `block_out_channels`                                         |
| attention at level `i` (`attention_resolutions`) | `AttnDownEncoderBlock2D` / `AttnUpDecoderBlock2D` at that level |
| `encoder.levels[i]`                        | `encoder.down_blocks[i]`                                     |
| `decoder.levels[i]` (0 = full resolution)  | `decoder.up_blocks[L - 1 - i]` (0 = lowest resolution)       |
| `code_dim`, `codebook_size`                | `vq_embed_dim`, `num_vq_embeddings`                          |

diffusers' `VectorQuantizer` uses taming's loss (beta 0.25 on the codebook term), GroupNorm eps 1e-6 and the same
resampling, so outputs agree to float rounding. What diffusers cannot express raises a `ValueError`: l2-normalised
codes, FSQ and LFQ quantizers (a fixed grid, not a codebook), a first level wider than `base_channels` (diffusers'
`conv_in` outputs the first level's width), dropout, and, coming from diffusers, spatial norms, other activations,
no mid-block attention, or attention at a level in only one of encoder and decoder. Training-only settings (EMA
codebook, dead-code restarts, beta) are not part of a diffusers `VQModel`; converting to diffusers logs which ones are
left behind.

Shapes: B batch, C channels, H/W pixels, h/w latent grid, D code dimension.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import torch
from diffusers import VQModel
from diffusers.utils import logging

from ..loading import DIFFUSERS_WEIGHTS, check_model_folder
from ..models.vqgan import VQGANModel
from .taming import load_renamed_state_dict, refuse_output_in_input

logger = logging.get_logger(__name__)

_DOWN_TYPES = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
_UP_TYPES = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}


def _level_resolutions(sample_size: int, num_levels: int) -> list[int]:
    return [sample_size // 2**i for i in range(num_levels)]


def _attention_levels(config) -> list[bool]:
    resolutions = _level_resolutions(config.sample_size, len(config.channel_multipliers))
    return [r in tuple(config.attention_resolutions) for r in resolutions]


# --------------------------------------------------------------------------------------------------------- naming
def diffusers_key(name: str, num_levels: int) -> str:
    """The diffusers `VQModel` state-dict key of our `VQGANModel` parameter `name` (for `num_levels` levels)."""
    name = re.sub(r"^encoder\.levels\.(\d+)\.", r"encoder.down_blocks.\1.", name)
    # diffusers runs (and numbers) the decoder's blocks from the coarsest level to the finest.
    name = re.sub(
        r"^decoder\.levels\.(\d+)\.", lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m.group(1))}.", name
    )
    name = re.sub(r"^encoder\.down_blocks\.(\d+)\.resample\.", r"encoder.down_blocks.\1.downsamplers.0.", name)
    name = re.sub(r"^decoder\.up_blocks\.(\d+)\.resample\.", r"decoder.up_blocks.\1.upsamplers.0.", name)
    for ours, theirs in [
        (r"\.mid\.resnet_1\.", ".mid_block.resnets.0."),
        (r"\.mid\.attention\.", ".mid_block.attentions.0."),
        (r"\.mid\.resnet_2\.", ".mid_block.resnets.1."),
        (r"\.shortcut\.", ".conv_shortcut."),
        (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
        (r"\.to_out\.", ".to_out.0."),
        (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
        (r"^quantizer\.", "quantize."),
    ]:
        name = re.sub(ours, theirs, name, count=1)
    return name


def _is_attention_projection(name: str) -> bool:
    # Only attention blocks have these names, in both libraries.
    return re.search(r"\.(to_q|to_k|to_v|to_out)(\.0)?\.weight$", name) is not None


# ---------------------------------------------------------------------------------------------- hf_vqgan -> diffusers
def diffusers_config_from_vqgan(model: VQGANModel) -> dict:
    """diffusers `VQModel` keyword arguments for `model`; raises a `ValueError` for what diffusers cannot express."""
    config = model.config
    if config.quantizer_type != "vq":  # FSQ/LFQ (issue 18)
        raise ValueError(
            f"diffusers' VQModel has only a nearest-neighbour VQ codebook and cannot represent quantizer_type="
            f"{config.quantizer_type!r}; keep this tokenizer as an hf_vqgan VQGANModel."
        )
    multipliers = tuple(config.channel_multipliers)
    if multipliers[0] != 1:
        raise ValueError(
            f"diffusers' VQModel cannot express channel_multipliers[0]={multipliers[0]} (its conv_in outputs the "
            "first level's width, ours outputs base_channels); only channel_multipliers starting with 1 convert."
        )
    if config.l2_normalize_codes:
        raise ValueError("diffusers' VectorQuantizer has no l2-normalised (cosine) lookup; l2_normalize_codes=True.")
    if config.dropout:
        raise ValueError(f"diffusers' VQModel has no dropout setting; this model uses dropout={config.dropout}.")
    left_behind = {
        name: getattr(config, name)
        for name, default in [
            ("use_ema", False),
            ("dead_code_steps", 0),
            ("commitment_beta", 0.25),
            ("legacy_beta", True),
        ]
        if getattr(config, name) != default
    }
    if left_behind:
        # They only shape training; diffusers' quantizer always puts beta 0.25 on the codebook term.
        logger.info(f"Training-only settings not carried over to diffusers' VQModel: {left_behind}.")
    attention = _attention_levels(config)
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attention),
        up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attention)),
        block_out_channels=tuple(config.base_channels * m for m in multipliers),
        layers_per_block=config.num_res_blocks,
        act_fn="silu",
        latent_channels=config.latent_channels,
        sample_size=config.sample_size,
        num_vq_embeddings=config.codebook_size,
        norm_num_groups=config.norm_num_groups,
        vq_embed_dim=config.code_dim,
        norm_type="group",
        mid_block_add_attention=True,
    )


def to_diffusers_vqmodel(
    model: VQGANModel,
    scaling_factor: float = 1.0,
    lookup_from_codebook: bool = False,
    force_upcast: bool = False,
) -> VQModel:
    """
    The diffusers `VQModel` equivalent to `model`: same encoder latents, indices and decoded images.

    Args:
        model (`VQGANModel`): The model to convert.
        scaling_factor (`float`, defaults to 1.0): diffusers' latent scaling for latent-diffusion pipelines; our
            latents were never rescaled, so 1.0 leaves them as they are (diffusers' own default, 0.18215, belongs
            to Stable Diffusion's VAE).
        lookup_from_codebook (`bool`, defaults to `False`): Make `VQModel.decode(indices, force_not_quantize=True,
            shape=(B, h, w, D))` look the indices up in the codebook, as `VQGANModel.decode_indices` does.
        force_upcast (`bool`, defaults to `False`): Ask diffusers pipelines to run this model in float32.
    """
    vq = VQModel(
        **diffusers_config_from_vqgan(model),
        scaling_factor=scaling_factor,
        lookup_from_codebook=lookup_from_codebook,
        force_upcast=force_upcast,
    )
    num_levels = len(model.config.channel_multipliers)
    source = {diffusers_key(name, num_levels): tensor for name, tensor in model.state_dict().items()}

    def to_theirs(key: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.flatten(1) if _is_attention_projection(key) else tensor  # (C, C, 1, 1) -> (C, C)

    load_renamed_state_dict(vq, source, lambda key: key, convert=to_theirs, what="VQGANModel")
    return (vq if model.dtype == vq.dtype else vq.to(model.dtype)).eval()


# ---------------------------------------------------------------------------------------------- diffusers -> hf_vqgan
def vqgan_config_from_diffusers(config) -> dict:
    """`VQGANModel` keyword arguments for a diffusers `VQModel` config; raises a `ValueError` where none exist."""
    problems = []
    if config.act_fn != "silu":
        problems.append(f"act_fn={config.act_fn!r} (only 'silu')")
    if config.norm_type != "group":
        problems.append(f"norm_type={config.norm_type!r} (only 'group'; spatial norm is MoVQ's decoder)")
    if not config.mid_block_add_attention:
        problems.append("mid_block_add_attention=False (our mid blocks always have attention)")
    down = list(config.down_block_types)
    up = list(config.up_block_types)
    widths = list(config.block_out_channels)
    if len(down) != len(widths) or len(up) != len(widths):
        problems.append(f"{len(down)} down / {len(up)} up block types for {len(widths)} block_out_channels")
    unknown = sorted({t for t in down if t not in _DOWN_TYPES} | {t for t in up if t not in _UP_TYPES})
    if unknown:
        problems.append(f"block types {unknown} (only {sorted(_DOWN_TYPES)} and {sorted(_UP_TYPES)})")
    base = widths[0]
    if any(w % base for w in widths):
        problems.append(f"block_out_channels={widths} are not multiples of the first width {base}")
    sample_size = config.sample_size
    if isinstance(sample_size, list | tuple):
        if len(set(sample_size)) != 1:
            problems.append(f"non-square sample_size={sample_size}")
        sample_size = sample_size[0]
    if problems:
        raise ValueError("Cannot convert this diffusers VQModel to VQGANModel: " + "; ".join(problems) + ".")

    encoder_attention = [_DOWN_TYPES[t] for t in down]
    decoder_attention = [_UP_TYPES[t] for t in reversed(up)]  # back to level order, 0 = full resolution
    if encoder_attention != decoder_attention:
        raise ValueError(
            "VQGANModel places attention at the same levels in encoder and decoder, but this VQModel has "
            f"down_block_types={down} and up_block_types={up}."
        )
    resolutions = _level_resolutions(sample_size, len(widths))
    if sample_size % 2 ** (len(widths) - 1):
        raise ValueError(
            f"sample_size={sample_size} is not divisible by the downsampling factor {2 ** (len(widths) - 1)}, so "
            "attention levels cannot be given as resolutions."
        )
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        base_channels=base,
        channel_multipliers=tuple(w // base for w in widths),
        num_res_blocks=config.layers_per_block,
        attention_resolutions=tuple(r for r, a in zip(resolutions, encoder_attention) if a),
        sample_size=sample_size,
        latent_channels=config.latent_channels,
        code_dim=config.vq_embed_dim if config.vq_embed_dim is not None else config.latent_channels,
        codebook_size=config.num_vq_embeddings,
        norm_num_groups=config.norm_num_groups,
        # diffusers' VectorQuantizer: beta 0.25 on the codebook term, taming's placement.
        commitment_beta=0.25,
        legacy_beta=True,
    )


def from_diffusers_vqmodel(vq: VQModel) -> VQGANModel:
    """The `VQGANModel` equivalent to the diffusers `VQModel` `vq`: same latents, indices and decoded images."""
    if not isinstance(vq, VQModel):
        raise TypeError(f"Expected a diffusers VQModel, got {type(vq).__name__}.")
    model = VQGANModel(**vqgan_config_from_diffusers(vq.config))
    num_levels = len(model.config.channel_multipliers)
    targets = model.state_dict()

    def to_ours(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return (
            tensor.reshape(targets[name].shape) if _is_attention_projection(name) else tensor
        )  # (C, C) -> (C, C, 1, 1)

    load_renamed_state_dict(
        model,
        vq.state_dict(),
        lambda name: diffusers_key(name, num_levels),
        convert=to_ours,
        what="diffusers VQModel",
    )
    return (model if model.dtype == vq.dtype else model.to(vq.dtype)).eval()


# ---------------------------------------------------------------------------------------------------------- folders
def convert_diffusers_folder(input_dir: str | PathLike, output_dir: str | PathLike, to: str = "vqmodel") -> Path:
    """
    Convert a saved model folder: `to="vqmodel"` reads a `VQGANModel` folder and writes a diffusers `VQModel`;
    `to="hf_vqgan"` does the reverse. Returns the output folder. (`hf-vqgan convert-diffusers --to ...`.)
    """
    refuse_output_in_input(output_dir, input_dir)
    if not (Path(input_dir) / "config.json").is_file():
        raise FileNotFoundError(f"No model folder at {str(input_dir)!r}: expected a directory holding config.json.")
    if to == "vqmodel":
        converted = to_diffusers_vqmodel(VQGANModel.from_pretrained(input_dir))
    elif to == "hf_vqgan":
        check_model_folder(input_dir, None, "VQModel", weights_name=DIFFUSERS_WEIGHTS)  # as VQGANModel's loading does
        converted = from_diffusers_vqmodel(VQModel.from_pretrained(input_dir))
    else:
        raise ValueError(f"`to` must be 'vqmodel' or 'hf_vqgan', got {to!r}.")
    output_dir = Path(output_dir)
    converted.save_pretrained(output_dir)
    return output_dir
