"""LPIPS perceptual loss (Zhang et al. 2018) with a VGG16 backbone, as VQGAN trains with (Esser et al. 2021, Sec. 3.1).

The `lpips` package ships the learned linear heads; the VGG16 backbone is torchvision's ImageNet checkpoint
(`vgg16-397923af.pth`), which torchvision downloads on first use. This module resolves the backbone itself, in
this order, before building anything, so a missing checkpoint stops a run at start-up rather than mid-training:

1. `vgg_weights_path`, a local torchvision VGG16 state-dict file;
2. the torch hub cache (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`), where torchvision keeps its download;
3. a download into that cache.

If all three fail, `LPIPSWeightsUnavailableError` says how to proceed. Inputs are images in [-1, 1].
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

VGG16_WEIGHTS_FILENAME = "vgg16-397923af.pth"
VGG16_WEIGHTS_URL = f"https://download.pytorch.org/models/{VGG16_WEIGHTS_FILENAME}"
# Seconds any single network operation of the download may block; an unreachable host fails instead of hanging.
_DOWNLOAD_SOCKET_TIMEOUT = 10.0


class LPIPSWeightsUnavailableError(RuntimeError):
    """The pretrained VGG16 backbone of the LPIPS perceptual loss could not be found or downloaded."""


def vgg16_cache_path() -> Path:
    """Where torchvision keeps (and this module looks for) the VGG16 checkpoint: the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS_FILENAME


def _unavailable_message(reason: str) -> str:
    return (
        f"The LPIPS perceptual loss needs torchvision's pretrained VGG16 backbone, which could not be obtained "
        f"({reason}). Either:\n"
        f"  - download {VGG16_WEIGHTS_URL} on a machine with network access and pass the file as "
        f"`vgg_weights_path` (CLI: --lpips_vgg_weights /path/to/{VGG16_WEIGHTS_FILENAME}), or copy it to the torch "
        f"hub cache at {vgg16_cache_path()} (set TORCH_HOME to move the cache), where it is picked up automatically; "
        f"or\n"
        f"  - train without the perceptual loss: --perceptual_weight 0 (perceptual_weight=0)."
    )


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    # weights_only: a checkpoint from elsewhere must not be able to run code when unpickled.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state_dict).__name__}).")
    return state_dict


def _resolve_vgg16_state_dict(vgg_weights_path: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """The torchvision VGG16 state dict from the explicit file, the hub cache, or a download (in that order)."""
    if vgg_weights_path is not None:
        path = Path(vgg_weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"`vgg_weights_path` (--lpips_vgg_weights) {str(path)!r} is not a file; expected a torchvision "
                f"VGG16 state dict such as {VGG16_WEIGHTS_FILENAME}."
            )
        return _load_state_dict_file(path)
    cached = vgg16_cache_path()
    if cached.is_file():
        return _load_state_dict_file(cached)
    try:
        with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT):
            # check_hash verifies the file against the hash prefix in its name, as torchvision does.
            return torch.hub.load_state_dict_from_url(
                VGG16_WEIGHTS_URL, map_location="cpu", progress=False, check_hash=True, weights_only=True
            )
    except (OSError, RuntimeError) as error:  # URLError and timeouts are OSErrors; a bad hash is a RuntimeError
        raise LPIPSWeightsUnavailableError(
            _unavailable_message(f"not in the cache and the download failed: {error}")
        ) from error


def _load_backbone(backbone: nn.Module, vgg_state_dict: dict[str, torch.Tensor]) -> None:
    """Copy torchvision's `features.<i>.*` tensors into lpips' VGG slices, which keep torchvision's layer indices."""
    own = {name: tensor for slice_ in backbone.children() for name, tensor in slice_.state_dict().items()}
    missing = sorted(f"features.{name}" for name in own if f"features.{name}" not in vgg_state_dict)
    if missing:
        raise ValueError(
            f"The VGG16 weights lack {len(missing)} backbone tensors (e.g. {missing[:3]}); expected a torchvision "
            f"vgg16 state dict such as {VGG16_WEIGHTS_FILENAME}."
        )
    for slice_ in backbone.children():
        remapped = {name: vgg_state_dict[f"features.{name}"] for name in slice_.state_dict()}
        slice_.load_state_dict(remapped)  # strict: shape mismatches raise here


class LPIPSLoss(nn.Module):
    r"""
    Frozen LPIPS distance (VGG16 backbone, v0.1 linear heads) between two image batches in [-1, 1].

    The network never trains: its parameters do not require gradients and it stays in eval mode even when a parent
    module calls `.train()` (the linear heads carry dropout). Gradients still flow to the inputs.

    Args:
        vgg_weights_path (`str` or `os.PathLike`, *optional*): A local torchvision VGG16 state-dict file
            (`vgg16-397923af.pth`). Without it the torch hub cache is used, then a download is tried.

    Raises:
        LPIPSWeightsUnavailableError: If the pretrained backbone can be neither found nor downloaded.
    """

    def __init__(self, vgg_weights_path: str | os.PathLike | None = None):
        super().__init__()
        try:
            import lpips  # a training extra, not a core dependency
        except ImportError as error:
            raise ImportError("LPIPSLoss needs the `lpips` package: pip install 'hf_vqgan[training]'.") from error
        # Resolve the weights before building anything, so that failure is immediate.
        vgg_state_dict = _resolve_vgg16_state_dict(vgg_weights_path)

        with warnings.catch_warnings():
            # lpips builds the backbone through torchvision's deprecated `pretrained=` argument.
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand: lpips must not fetch the backbone itself; we load it below. verbose=False silences prints.
            self.lpips = lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone(self.lpips.net, vgg_state_dict)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        # Always eval: dropout in the linear heads would make the loss random.
        return super().train(False)

    def forward(self, inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """
        LPIPS distance between images of shape `(batch_size, 3, height, width)` (or one-channel grayscale, which is
        repeated to three channels) in [-1, 1]; returns one distance per image, of shape `(batch_size,)`.
        """
        if inputs.shape != reconstructions.shape or inputs.ndim != 4 or inputs.shape[1] not in (1, 3):
            raise ValueError(
                f"`inputs` and `reconstructions` must both have shape (batch_size, 1 or 3, height, width), got "
                f"{tuple(inputs.shape)} and {tuple(reconstructions.shape)}."
            )
        if inputs.shape[1] == 1:  # grayscale: VGG sees the same gray image in R, G and B
            inputs, reconstructions = inputs.expand(-1, 3, -1, -1), reconstructions.expand(-1, 3, -1, -1)
        return self.lpips(inputs, reconstructions).flatten()  # (B, 1, 1, 1) -> (B,)


def lpips_weights_available(vgg_weights_path: str | os.PathLike | None = None) -> bool:
    """Whether the pretrained VGG16 backbone can be had (a local file, the hub cache, or a download into it)."""
    try:
        _resolve_vgg16_state_dict(vgg_weights_path)
    except (LPIPSWeightsUnavailableError, FileNotFoundError):
        return False
    return True
