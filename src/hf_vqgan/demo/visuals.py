"""Pictures the demo draws: code ids as colours, reconstruction error as heat, the rows a completion keeps."""

from __future__ import annotations

import colorsys

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from .. import conditions

GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def code_palette(codebook_size: int) -> np.ndarray:
    """`(codebook_size, 3)` uint8 colours: hues a golden-ratio step apart, so neighbouring ids look unalike."""
    hues = (np.arange(codebook_size) * GOLDEN_RATIO_CONJUGATE) % 1.0
    values = 0.95 - 0.3 * ((np.arange(codebook_size) // 7) % 2)  # alternate brightness: more tell-apart colours
    colours = [colorsys.hsv_to_rgb(h, 0.75, v) for h, v in zip(hues, values)]
    return (np.asarray(colours).reshape(-1, 3) * 255).round().astype(np.uint8)


def code_map(indices: torch.Tensor, codebook_size: int, scale: int = 1) -> PIL.Image.Image:
    """A token grid of shape `(h, w)` drawn with one colour per code id, each token `scale` pixels square."""
    if indices.ndim != 2:
        raise ValueError(f"Expected a token grid of shape (h, w), got {tuple(indices.shape)}.")
    colours = code_palette(codebook_size)[indices.long().numpy()]  # (h, w, 3)
    colours = colours.repeat(scale, axis=0).repeat(scale, axis=1)
    return PIL.Image.fromarray(colours, mode="RGB")


def difference_map(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """
    The absolute error of images of shape `(batch, channels, height, width)` in [-1, 1], averaged over channels and
    drawn in a black-red-yellow-white heat scale that saturates at half the pixel range; `(batch, 3, H, W)` in [-1, 1].
    """
    error = (original - reconstruction).abs().mean(dim=1, keepdim=True).clamp(0, 1)  # (B, 1, H, W) in [0, 1]
    heat = torch.cat([(3 * error).clamp(0, 1), (3 * error - 1).clamp(0, 1), (3 * error - 2).clamp(0, 1)], dim=1)
    return heat * 2 - 1  # (B, 3, H, W)


def draw_kept_rows(image: PIL.Image.Image, kept_pixels: int, scale: int | None = None) -> PIL.Image.Image:
    """`image` enlarged (nearest) with the part below `kept_pixels` rows dimmed and a red line at the border."""
    scale = scale or max(1, 256 // max(image.size))
    rgb = image.convert("RGB").resize((image.width * scale, image.height * scale), PIL.Image.NEAREST)
    array = np.asarray(rgb).copy()
    border = kept_pixels * scale
    array[border:] = (array[border:].astype(np.float32) * 0.3 + 40).astype(np.uint8)  # the sampled part, dimmed
    drawn = PIL.Image.fromarray(array)
    line = min(max(border, 1), drawn.height) - 1
    PIL.ImageDraw.Draw(drawn).line([(0, line), (drawn.width - 1, line)], fill=(230, 30, 30), width=max(1, scale // 2))
    return drawn


def segmentation_palette(num_labels: int) -> np.ndarray:
    """`(num_labels, 3)` uint8: the colours `conditions.condition_to_pixels` draws labels in, one row per label."""
    one_hot = conditions.one_hot_labels(torch.arange(num_labels)[None, None], num_labels)  # (1, L, 1, L)
    pixels = conditions.condition_to_pixels(one_hot, "segmentation")  # (1, 3, 1, L) in [-1, 1]
    return ((pixels[0, :, 0].T + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
