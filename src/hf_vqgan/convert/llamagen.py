"""Convert LlamaGen's VQ image tokenizers (FoundationVision/LlamaGen, Sun et al. 2024) to `VQGANModel`.

LlamaGen's `VQModel` (`tokenizer/tokenizer_image/vq_model.py`, built by `VQ_16()` and `VQ_8()`) is taming's VQGAN
encoder/decoder with a factorised, l2-normalised codebook, so it maps onto `VQGANModel` with no new option:

- the same blocks: GroupNorm (32 groups, eps 1e-6) and swish, ResNet blocks with a 1x1 `nin_shortcut` when the width
  changes, single-head attention with 1x1-conv `q`/`k`/`v`/`proj_out` and scale `C ** -0.5`, downsampling by a
  right/bottom pad and a stride-2 3x3 conv, upsampling by nearest x2 and a 3x3 conv, a middle ResNet-attention-ResNet;
- `num_res_blocks` (2) ResNet blocks per encoder level and one more per decoder level; attention after each block of
  the coarsest level only (encoder and decoder) - what `attention_resolutions=(image_size / f,)` places here;
- the encoder width is `ch=128` times `ch_mult` (`[1, 1, 2, 2, 4]` for VQ-16, `[1, 2, 2, 4]` for VQ-8), `z_channels`
  256; 1x1 `quant_conv` / `post_quant_conv` map 256 <-> `codebook_embed_dim` (8);
- the quantizer normalises latents and codes to unit length and takes the nearest code by squared distance; its
  output and `get_codebook_entry` return the normalised code (`l2_normalize_codes=True`). Its training loss is the
  codebook term plus 0.25 x the commitment term (`legacy_beta=False`, `commitment_beta=0.25`).

Only the names differ: `conv_blocks.{i}.res/attn/downsample/upsample`, `mid.{0,1,2}`, and the decoder's
`conv_blocks` list runs from the coarsest level (`conv_blocks.0`) to the full-resolution one, where ours (and
taming's) `levels.0` is the full-resolution level. The quantizer's `codebook_used` buffer (a training-time usage
window) is dropped; every other tensor must map, and any that does not is refused by name.

Checkpoints are what `vq_train.py` saves: `{"model": ..., "ema": ... (with --ema), "optimizer": ...,
"discriminator": ..., "steps": ..., "args": argparse.Namespace}`. The weights taken are those LlamaGen's own
`vq_demo.py` and `reconstruction_vq_ddp.py` load: `"ema"` when present, else `"model"`, else `"state_dict"`; a plain
state dict is accepted too. The file is read with `torch.load(weights_only=True)` (with `argparse.Namespace` allowed,
as training checkpoints hold one); anything else needs `allow_pickle=True`.

LlamaGen's GPT priors (`autoregressive/models/gpt.py`) do not convert to `VQGANPriorForCausalLM`, a GPT-2: they
use 2D rotary position embeddings on q and k in every layer (no learned position table; at the class-token position
cos = sin = 0, which zeroes that token's query and key), RMSNorm, a SwiGLU feed-forward and bias-free projections;
the text-to-image ones read T5 caption features through an MLP rather than tokens. A checkpoint of one is refused
with that reason. Their sampled tokens decode with the converted tokenizer (`decode_indices(tokens.view(B, h, w))`:
both use row-major order).

Shapes: B batch, C channels, K codebook size, D code dimension.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch

from ..image_processor import VQGANImageProcessor
from ..models.vqgan import VQGANModel
from .taming import load_renamed_state_dict, read_checkpoint, refuse_output_in_input, taming_vqgan_key

# The released architectures (`VQ_models` in LlamaGen): channel multipliers of `VQ_16()` / `VQ_8()`; both use the
# Encoder/Decoder defaults ch=128, num_res_blocks=2 and ModelArgs' z_channels=256.
LLAMAGEN_MODELS = {"VQ-16": (1, 1, 2, 2, 4), "VQ-8": (1, 2, 2, 4)}
_RELEASED_WIDTHS = dict(base_channels=128, num_res_blocks=2, latent_channels=256)
# Where a checkpoint keeps its weights, in the order LlamaGen's sampling and reconstruction scripts look.
CHECKPOINT_ENTRIES = ("ema", "model", "state_dict")
# Training-time buffers with no meaning at inference (LlamaGen's window of recently used code indices).
_TRAINING_BUFFERS = ("quantize.codebook_used",)
# Keys of LlamaGen's GPT (`autoregressive/models/gpt.py`), to name that mistake instead of listing missing tensors.
_GPT_KEYS = ("tok_embeddings.weight", "cls_embedding.embedding_table.weight", "freqs_cis", "norm.weight")


# ------------------------------------------------------------------------------------------------------- reading
def llamagen_weights(checkpoint: object, source: str | PathLike = "the checkpoint") -> dict[str, torch.Tensor]:
    """
    The `VQModel` weights of a LlamaGen checkpoint: its `"ema"` entry when present, else `"model"`, else
    `"state_dict"` (as LlamaGen's `vq_demo.py` picks them), or the checkpoint itself when it is a flat state dict.
    """
    if isinstance(checkpoint, Mapping):
        for entry in CHECKPOINT_ENTRIES:
            if isinstance(checkpoint.get(entry), Mapping):
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(
            f"{source} holds no LlamaGen weights: expected a dict with one of {list(CHECKPOINT_ENTRIES)}."
        )
    not_tensors = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(
            f"{source} is not a LlamaGen checkpoint: its entries {not_tensors[:5]} are not tensors (expected a "
            f"state dict, or a dict with one of {list(CHECKPOINT_ENTRIES)})."
        )
    return dict(checkpoint)


def read_llamagen_checkpoint(path: str | PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the tokenizer weights of a LlamaGen `.pt` file (or a `.safetensors` state dict); see `llamagen_weights`.
    `allow_pickle=True` unpickles arbitrary objects: only for files from a source you trust."""
    checkpoint = read_checkpoint(path, allow_pickle=allow_pickle, safe_globals=[argparse.Namespace])
    return llamagen_weights(checkpoint, source=path)


# ------------------------------------------------------------------------------------------------- architecture
def _level_indices(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state_dict if (m := pattern.match(key))})


def _check_is_vq_model(state_dict: Mapping[str, torch.Tensor]) -> None:
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_out.weight",
              "quantize.embedding.weight", "encoder.conv_blocks.0.res.0.conv1.weight")  # fmt: skip
    missing = [key for key in needed if key not in state_dict]
    if not missing:
        return
    if any(key in state_dict for key in _GPT_KEYS) or any(key.startswith("layers.") for key in state_dict):
        raise ValueError(
            "This is a LlamaGen GPT (autoregressive prior) checkpoint, not a VQ tokenizer. LlamaGen's GPT priors do "
            "not convert to VQGANPriorForCausalLM (2D rotary embeddings, SwiGLU, RMSNorm; see the README); convert "
            "its tokenizer (vq_ds16_c2i.pt, vq_ds8_c2i.pt, vq_ds16_t2i.pt) instead."
        )
    if any(".running_mean" in key for key in state_dict):
        raise ValueError("The checkpoint uses BatchNorm (LlamaGen's norm_type='batch'); only GroupNorm converts.")
    raise ValueError(f"Not a LlamaGen VQModel state dict: it lacks {missing}.")


def llamagen_vqgan_config(
    state_dict: Mapping[str, torch.Tensor], model: str | None = None, image_size: int = 256
) -> dict:
    """
    `VQGANModel` keyword arguments for the LlamaGen `VQModel` weights `state_dict`, read from the tensor shapes:
    widths, levels, ResNet blocks per level, `z_channels`, codebook size and code dimension.

    Args:
        state_dict: the weights (see `llamagen_weights`).
        model (`str`, *optional*): `"VQ-16"` or `"VQ-8"`: the released layout the weights must have (a mismatch is a
            `ValueError` naming both). `None` accepts any layout LlamaGen's classes can build.
        image_size (`int`, defaults to 256): the resolution the tokenizer is used at (LlamaGen's `--image-size`);
            it becomes `sample_size` and places the attention at the coarsest level.
    """
    if model is not None and model not in LLAMAGEN_MODELS:
        raise ValueError(f"Unknown LlamaGen model {model!r}; expected one of {list(LLAMAGEN_MODELS)}.")
    _check_is_vq_model(state_dict)
    conv_in = state_dict["encoder.conv_in.weight"]  # (ch, in_channels, 3, 3)
    base_channels, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
    levels = _level_indices(state_dict, "encoder.conv_blocks.")
    widths = [int(state_dict[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0]) for i in levels]
    if levels != list(range(len(levels))) or any(width % base_channels for width in widths):
        raise ValueError(
            f"Unexpected encoder levels {levels} with widths {widths}: not the layout of LlamaGen's Encoder "
            f"(widths are ch={base_channels} times the channel multipliers)."
        )
    codebook_size, code_dim = (int(n) for n in state_dict["quantize.embedding.weight"].shape)  # (K, D)
    config = dict(
        in_channels=in_channels,
        out_channels=int(state_dict["decoder.conv_out.weight"].shape[0]),
        base_channels=base_channels,
        channel_multipliers=tuple(width // base_channels for width in widths),
        num_res_blocks=len(_level_indices(state_dict, "encoder.conv_blocks.0.res.")),
        latent_channels=int(state_dict["encoder.conv_out.weight"].shape[0]),
        code_dim=code_dim,
        codebook_size=codebook_size,
    )
    found = llamagen_model_name(config)
    if model is not None and found != model:
        layout = f"the {found} layout" if found else "a custom layout"
        raise ValueError(
            f"The checkpoint has {layout} (channel multipliers {list(config['channel_multipliers'])}, "
            f"ch={base_channels}, num_res_blocks={config['num_res_blocks']}, z_channels={config['latent_channels']}),"
            f" not {model}'s (channel multipliers {list(LLAMAGEN_MODELS[model])}, ch=128, num_res_blocks=2, "
            "z_channels=256)."
        )
    factor = 2 ** (len(widths) - 1)
    if not isinstance(image_size, int) or image_size < factor or image_size % factor:
        raise ValueError(f"`image_size` must be a positive multiple of the downsampling factor {factor}, got "
                         f"{image_size!r}.")  # fmt: skip
    return dict(
        config,
        sample_size=image_size,
        attention_resolutions=(image_size // factor,),  # the coarsest level, in the encoder and the decoder
        dropout=0.0,
        norm_num_groups=32,  # fixed in LlamaGen's Normalize
        l2_normalize_codes=True,  # ModelArgs.codebook_l2_norm, True for every released tokenizer
        commitment_beta=0.25,  # ModelArgs.commit_loss_beta, on the commitment term
        legacy_beta=False,
    )


def llamagen_model_name(config: Mapping) -> str | None:
    """`"VQ-16"` or `"VQ-8"` when `config` (`VQGANModel` kwargs) is that released layout, else `None`."""
    for name, multipliers in LLAMAGEN_MODELS.items():
        if tuple(config["channel_multipliers"]) == multipliers and all(
            config[key] == value for key, value in _RELEASED_WIDTHS.items()
        ):
            return name
    return None


# ------------------------------------------------------------------------------------------------------ weights
# LlamaGen's code is taming's with the containers renamed: inside a block every name (`nin_shortcut`, `q`, `k`, `v`,
# `proj_out`, `quantize.embedding`) is taming's, so a LlamaGen key is the taming key with these changes.
_LEVEL = re.compile(r"^(encoder\.down|decoder\.up)\.(\d+)\.(block\.)?")
_MID_RENAMES = [(".mid.block_1.", ".mid.0."), (".mid.attn_1.", ".mid.1."), (".mid.block_2.", ".mid.2.")]


def llamagen_key(name: str, num_levels: int) -> str:
    """The LlamaGen `VQModel` state-dict key of our `VQGANModel` parameter `name`, for a model of `num_levels`
    resolution levels: LlamaGen's decoder numbers its levels from the coarsest, ours from the full resolution."""

    def level(found: re.Match) -> str:
        part, index, block = found.groups()
        index = int(index) if part == "encoder.down" else num_levels - 1 - int(index)
        return f"{part.split('.')[0]}.conv_blocks.{index}." + ("res." if block else "")

    key = _LEVEL.sub(level, taming_vqgan_key(name), count=1)
    for taming_name, llamagen_name in _MID_RENAMES:
        key = key.replace(taming_name, llamagen_name, 1)
    return key


def convert_llamagen_vqgan(
    state_dict: Mapping[str, torch.Tensor], model: str | None = None, image_size: int = 256
) -> VQGANModel:
    """
    Build a `VQGANModel` from LlamaGen `VQModel` weights (a state dict, or a checkpoint dict with `"ema"` /
    `"model"` / `"state_dict"`; see `llamagen_weights`). `model` and `image_size` as in `llamagen_vqgan_config`.
    Every tensor but the `codebook_used` buffer must map; a leftover, missing or misshapen one is named.
    """
    weights = llamagen_weights(state_dict)
    vqgan = VQGANModel(**llamagen_vqgan_config(weights, model=model, image_size=image_size))
    weights = {key: value for key, value in weights.items() if key not in _TRAINING_BUFFERS}
    num_levels = len(vqgan.config.channel_multipliers)
    load_renamed_state_dict(
        vqgan, weights, lambda name: llamagen_key(name, num_levels), what="LlamaGen VQModel weights"
    )
    return vqgan.eval()


def llamagen_image_processor(image_size: int = 256, channels: int = 3) -> VQGANImageProcessor:
    """LlamaGen's preprocessing: the shorter side resized to `image_size` (bicubic), the centre square cropped,
    pixels scaled to [-1, 1] (its `center_crop_arr`, `ToTensor`, `Normalize(0.5, 0.5)`)."""
    return VQGANImageProcessor(resolution=image_size, channels=channels, center_crop=True, random_flip=False)


def convert_llamagen_checkpoint(
    checkpoint_path: str | PathLike,
    output_dir: str | PathLike,
    model: str | None = None,
    image_size: int = 256,
    allow_pickle: bool = False,
    push_to_hub: str | None = None,
) -> Path:
    """
    Convert a LlamaGen tokenizer checkpoint (`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`, `vq_ds16_t2i.pt`, or one of
    `vq_train.py`'s) into a `VQGANModel` folder, with LlamaGen's preprocessing saved beside it as
    `preprocessor_config.json` (`VQGANImageProcessor.from_pretrained(output_dir)` reads it).

    Args:
        checkpoint_path: the `.pt` file (or a `.safetensors` state dict).
        output_dir: where to write the folder.
        model (`str`, *optional*): `"VQ-16"` or `"VQ-8"`; inferred from the tensors when `None`.
        image_size (`int`, defaults to 256): the resolution the tokenizer is used at.
        allow_pickle (`bool`, defaults to `False`): allow checkpoints that need full unpickling (only for files you
            trust: unpickling can run arbitrary code).
        push_to_hub (`str`, *optional*): a Hub repo id to upload the folder to after saving.

    Returns:
        The output folder.
    """
    refuse_output_in_input(output_dir, checkpoint_path)
    vqgan = convert_llamagen_vqgan(read_llamagen_checkpoint(checkpoint_path, allow_pickle), model, image_size)
    processor = llamagen_image_processor(image_size, vqgan.config.in_channels)

    def save(folder: str | PathLike) -> None:
        vqgan.save_pretrained(folder)
        processor.save_pretrained(folder)

    output_dir = Path(output_dir)
    save(output_dir)
    if push_to_hub:
        from ..hub import push_saved_to_hub

        # Only what the conversion writes is uploaded, whatever else already sits in `output_dir`.
        push_saved_to_hub(push_to_hub, save, commit_message=f"Convert {Path(checkpoint_path).name} from LlamaGen")
    return output_dir
