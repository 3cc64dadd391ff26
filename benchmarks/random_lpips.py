"""A randomly initialised VGG16 backbone file for timing LPIPS where its pretrained weights are not available.

LPIPS costs the same with any weights, so the training-step benchmarks time it with this file passed as
`lpips_vgg_weights_path`, the way a user passes local weights, and label the figures "random VGG16 backbone". The
loss values are then not a perceptual measure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from hf_vqgan.losses.perceptual import VGG16_WEIGHTS_FILENAME


def random_vgg16_weights_file(seed: int = 0) -> Path:
    """Write (once per process) a seeded random torchvision VGG16 `features.*` state dict; returns its path."""
    import torchvision

    path = Path(tempfile.gettempdir()) / f"hf_vqgan-random-vgg16-{os.getpid()}" / VGG16_WEIGHTS_FILENAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        features = torchvision.models.vgg16(weights=None).features
        torch.save({f"features.{name}": tensor for name, tensor in features.state_dict().items()}, path)
    return path
