"""A randomly initialised torchvision VGG16 backbone file, passed to LPIPS the way a user passes local weights.

Tests of code that runs LPIPS cannot download the pretrained backbone; they give `LPIPSLoss(vgg_weights_path=...)`,
`VQGANLoss(lpips_vgg_weights_path=...)` or `train.py vqgan --lpips_vgg_weights` this file instead. Only the
`features.*` tensors (the part LPIPS uses) are saved: 59 MB instead of 528 MB. Distances computed with it are not a
perceptual measure.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hf_vqgan.losses.perceptual import VGG16_WEIGHTS_FILENAME


def write_random_vgg16_features(path: str | os.PathLike, seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a seeded, randomly initialised torchvision VGG16's `features.*` state dict to `path`; returns it."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.vgg16(weights=None)
    state_dict = {f"features.{name}": tensor for name, tensor in model.features.state_dict().items()}
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    torch.save(state_dict, tmp)
    os.replace(tmp, path)
    return state_dict


def random_vgg16_weights(tmp_path_factory) -> Path:
    """The session's random backbone file, written on first use under pytest's base temporary folder."""
    path = tmp_path_factory.getbasetemp() / "random_vgg16" / VGG16_WEIGHTS_FILENAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random_vgg16_features(path)
    return path
