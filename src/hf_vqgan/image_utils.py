"""Images in and out: decoding any image value within a pixel budget, converting any PIL mode to 8-bit, tiling
images into a grid.

Used by `VQGANImageProcessor` (at sampling and training time alike) and by the command line; nothing here needs a
training-only dependency.

The pixel budget, `DEFAULT_MAX_IMAGE_PIXELS` (40 Mpx) unless a caller passes another, guards against decompression
bombs: a 100 KB PNG can declare 10,000 x 10,000 pixels (300 MB decoded as RGB), and PIL itself only warns below
its `Image.MAX_IMAGE_PIXELS` x 2 (179 Mpx). Image files give their size in their header, so `decode_image` and
`check_image_size` refuse an oversized file before a single pixel is decoded.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
"""The default pixel budget (width x height) of an image to decode: 40 Mpx, e.g. 8,000 x 5,000 (120 MB as RGB)."""


class ImageTooLargeError(ValueError):
    """An image has more pixels than the budget; the message names the file, its size and how to raise the budget."""


def check_pixel_budget(width: int, height: int, max_pixels: int | None, source: str | None = None) -> None:
    """
    Raise `ImageTooLargeError` when `width` x `height` exceeds `max_pixels` (`None` disables the check).

    `source` names the image in the message (a file name, or e.g. "`image` 2").
    """
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{source or 'The image'} is {width}x{height} = {width * height:,} pixels, over the budget of "
            f"{max_pixels:,} (a decompression bomb, or a photo to downscale first); raise the budget to read it "
            "(--max_image_pixels in training, --max-image-pixels on the hf-vqgan command line)."
        )


def check_image_size(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """
    The `(width, height)` of the image file at `path`, read from its header only; refuses an image over `max_pixels`.

    Raises:
        `ImageTooLargeError` (a `ValueError`) naming the file, its size and the budget; `FileNotFoundError` for a
        missing file; `OSError` (PIL's `UnidentifiedImageError`) for a file that is not an image.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at {os.fspath(path)!r}.")
    with _open(path, max_pixels) as image:  # lazy: reads the header, decodes nothing
        size = image.size
    check_pixel_budget(*size, max_pixels, os.fspath(path))
    return size


def _open(value: Any, max_pixels: int | None) -> Image.Image:
    """`Image.open` a path or bytes lazily; an image PIL itself refuses as a bomb becomes `ImageTooLargeError`."""
    try:
        return Image.open(io.BytesIO(value) if isinstance(value, bytes) else value)
    except Image.DecompressionBombError as error:  # over PIL's own hard limit, whatever our budget
        source = "The image" if isinstance(value, bytes) else os.fspath(value)
        raise ImageTooLargeError(f"{source}: {error} (the budget is {max_pixels} pixels).") from error


def decode_image(value: Any, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """
    Decode an image value fully, so that a corrupt or truncated file fails here and not later.

    Accepts a PIL image, an undecoded `datasets.Image` value (a dict with `bytes` and/or `path`), a file path, or a
    `uint8` array of shape `(height, width)` or `(height, width, channels)`.

    Args:
        max_pixels (`int`, *optional*, defaults to `DEFAULT_MAX_IMAGE_PIXELS`): The pixel budget, checked against
            the file's header before its pixels are decoded; `None` disables it.

    Raises:
        `ImageTooLargeError` (a `ValueError`) for an image over `max_pixels`, naming the file and its size; `OSError`
        (PIL's errors for unreadable files), `ValueError` for an image with a zero width or height, `TypeError` for
        an unsupported value.
    """
    source = None
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        source = value.get("path")
        if value.get("bytes"):
            image = _open(value["bytes"], max_pixels)
        elif value.get("path"):
            image = _open(value["path"], max_pixels)
        else:
            raise ValueError(f"Image value has neither bytes nor a path: {value!r}.")
    elif isinstance(value, (str, os.PathLike)):
        source = os.fspath(value)
        image = _open(value, max_pixels)
    elif isinstance(value, np.ndarray):
        image = Image.fromarray(value)
    else:
        raise TypeError(f"Cannot decode an image from a value of type {type(value).__name__}.")
    try:
        check_pixel_budget(*image.size, max_pixels, source or getattr(image, "filename", None) or None)
    except ImageTooLargeError:
        if not isinstance(value, Image.Image):  # a file this function opened: close it, the caller never sees it
            image.close()
        raise
    image.load()  # PIL opens lazily; decoding now surfaces truncated data as an OSError
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image has zero size {image.size}.")
    return image


def _scale_to_uint8(array: np.ndarray, max_value: float) -> Image.Image:
    pixels = np.rint(np.nan_to_num(array.astype(np.float64)) * (255.0 / max_value))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def convert_image_mode(image: Image.Image, channels: int) -> Image.Image:
    """
    Convert an image of any PIL mode to 8-bit `"L"` (`channels=1`) or `"RGB"` (`channels=3`).

    Unlike a bare `Image.convert`, high-bit-depth images are rescaled instead of clipped: 16-bit modes (`"I;16*"`, and
    `"I"`, which PIL uses for 16-bit PNGs) map 0..65535 onto 0..255; float `"F"` images are read as 0..1 when their
    maximum is at most 1 and as 0..255 otherwise. Transparent images (`"RGBA"`, `"LA"`, `"PA"`, palette images with a
    transparency key) are composited on white, the usual background of such images.
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = _scale_to_uint8(np.asarray(image), 65535.0)
    elif image.mode == "F":
        array = np.asarray(image)
        image = _scale_to_uint8(array, 1.0 if np.nanmax(array, initial=0.0) <= 1.0 else 255.0)
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


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
