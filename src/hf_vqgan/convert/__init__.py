"""Checkpoint conversion: taming-transformers and LlamaGen originals into hf_vqgan, and hf_vqgan <-> diffusers
`VQModel`."""

from .diffusers_vq import convert_diffusers_folder, from_diffusers_vqmodel, to_diffusers_vqmodel
from .llamagen import convert_llamagen_checkpoint, convert_llamagen_vqgan, read_llamagen_checkpoint
from .taming import (
    convert_taming_checkpoint,
    convert_taming_transformer,
    convert_taming_vqgan,
    load_taming_checkpoint,
    load_taming_config,
    vqgan_to_taming_state_dict,
)

__all__ = [
    "convert_diffusers_folder",
    "convert_llamagen_checkpoint",
    "convert_llamagen_vqgan",
    "convert_taming_checkpoint",
    "convert_taming_transformer",
    "convert_taming_vqgan",
    "from_diffusers_vqmodel",
    "load_taming_checkpoint",
    "load_taming_config",
    "read_llamagen_checkpoint",
    "to_diffusers_vqmodel",
    "vqgan_to_taming_state_dict",
]
