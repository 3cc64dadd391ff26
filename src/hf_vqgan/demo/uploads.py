"""Reading what people upload to the demo: any image file, checked before it is decoded, with messages, not tracebacks.

Nothing here imports Gradio; the app turns an `UploadError` into a message in the page.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import PIL.Image

from ..image_utils import convert_image_mode

MAX_UPLOAD_PIXELS = 4096 * 4096
"""The largest upload the demo decodes (width times height): a bigger file is refused from its header alone."""


class UploadError(ValueError):
    """A bad upload, with a message meant for the person who sent it."""


def read_upload(path: str | os.PathLike | None, what: str = "image", max_pixels: int = MAX_UPLOAD_PIXELS):
    """
    Open and fully decode an uploaded image file.

    The size is read from the header first, so a huge image is refused before any pixel is decoded (PIL's own
    decompression-bomb guard is turned into the same refusal).

    Raises:
        `UploadError` for no file, a file that is not an image PIL can read, or more than `max_pixels` pixels.
    """
    if path is None:
        raise UploadError(f"Upload an {what} first.")
    name = os.path.basename(os.fspath(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(_too_large(name, width, height, max_pixels))
                image.load()  # PIL decodes lazily: a truncated file fails here, not later
                if width == 0 or height == 0:
                    raise UploadError(f"{name} has no pixels ({width}x{height}).")
                return image
    except UploadError:
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
        raise UploadError(
            f"{name} is too large to decode safely; the demo takes at most {max_pixels:,} pixels."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # PIL's errors for unreadable or corrupt files
        raise UploadError(
            f"{name} is not an image this demo can read ({type(error).__name__}); upload a PNG, JPEG, "
            "WebP, BMP, GIF or TIFF file."
        ) from error


def _too_large(name: str, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{name} is {width}x{height} pixels ({width * height:,}); the demo takes at most {max_pixels:,} pixels. "
        "Downscale it first: the model sees it at its own, much smaller resolution anyway."
    )


def to_channels(image: PIL.Image.Image, channels: int, what: str = "image") -> PIL.Image.Image:
    """Convert any PIL mode to 8-bit `"L"` or `"RGB"` (`convert_image_mode`); a mode PIL cannot convert is refused."""
    try:
        return convert_image_mode(image, channels)
    except (ValueError, OSError) as error:
        raise UploadError(
            f"The {what} has PIL mode {image.mode!r}, which cannot be converted to "
            f"{'grayscale' if channels == 1 else 'RGB'} ({error})."
        ) from error


def fit_image(image: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    """Scale the shorter side to cover `width` x `height` (bicubic, as the training transform) and crop the centre."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, resample=PIL.Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def labels_from_drawing(drawing: Any, palette: np.ndarray) -> np.ndarray:
    """
    A drawn segmentation, an RGB(A) image or array of shape `(H, W, 3 or 4)`, to labels of shape `(H, W)`: each
    pixel takes the label whose palette colour (`palette`, `(num_labels, 3)` in 0..255) is nearest; transparent
    pixels (nothing drawn) are label 0.
    """
    array = np.asarray(drawing.convert("RGBA") if isinstance(drawing, PIL.Image.Image) else drawing)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise UploadError(f"A drawing must be an RGB or RGBA image, got an array of shape {array.shape}.")
    rgb = array[..., :3].astype(np.int64)  # (H, W, 3)
    distances = ((rgb[:, :, None, :] - palette[None, None].astype(np.int64)) ** 2).sum(-1)  # (H, W, L)
    labels = distances.argmin(-1)
    if array.shape[-1] == 4:
        labels[array[..., 3] == 0] = 0
    return labels
