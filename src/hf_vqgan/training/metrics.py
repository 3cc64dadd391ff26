"""The image grid of the training stages' validation outputs (reconstructions, samples)."""

from __future__ import annotations

import torch
from PIL import Image


def make_image_grid(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, scale: int = 1, pad_value: float = 1.0
) -> Image.Image:
    """
    Tile images of shape `(num_images, channels, height, width)` in [-1, 1] into one PIL image.

    Args:
        nrow (`int`, defaults to 8): Images per row.
        padding (`int`, defaults to 2): Pixels between and around images (after scaling).
        scale (`int`, defaults to 1): Enlarge each image by pixel repetition (nearest neighbour), so tiny images such
            as 8x8 digits stay crisp.
        pad_value (`float`, defaults to 1.0): Value of the padding, in [-1, 1] (white).

    Returns:
        A `PIL.Image.Image`, mode `"L"` for one channel and `"RGB"` for three.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}.")
    if nrow < 1 or scale < 1 or padding < 0:
        raise ValueError(f"`nrow` and `scale` must be >= 1 and `padding` >= 0, got {nrow}, {scale}, {padding}.")
    images = images.detach().float().cpu().clamp(-1.0, 1.0)
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    N, C, H, W = images.shape
    ncol = min(nrow, N)
    nrows = -(-N // ncol)
    grid = torch.full((C, nrows * (H + padding) + padding, ncol * (W + padding) + padding), pad_value)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (H + padding)
        left = padding + (i % ncol) * (W + padding)
        grid[:, top : top + H, left : left + W] = image
    pixels = ((grid + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', C)
    return Image.fromarray(pixels[:, :, 0] if C == 1 else pixels, mode="L" if C == 1 else "RGB")
