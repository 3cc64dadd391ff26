"""Condition maps for conditional generation: a second VQGAN tokenizes them, the prior reads the tokens as a prefix.

Four condition types, each a tensor in [-1, 1] like the images (one pixel range for every VQGAN):

- `"segmentation"` (paired): an integer label map with `num_labels` classes, resized with nearest neighbour (labels
  are never interpolated), one-hot encoded as `(num_labels, H, W)` with values in {-1, 1} (1 for the pixel's class).
  `labels_from_logits` decodes a reconstruction back to labels with an argmax, which the {-1, 1} choice leaves
  unchanged. Palette (`"P"`) PNGs are read as their palette indices.
- `"depth"` (paired): a one-channel float map, resized bilinearly, as `(1, H, W)`; scaled to [-1, 1] per image
  (its minimum to -1, its maximum to 1) or from a fixed `depth_range` (values outside it clipped).
- `"edges"` (derived): Canny edges (`canny_edges`, written here in torch) of the grayscale of the already-transformed
  image, `(1, H, W)` with values in {-1, 1}.
- `"lowres"` (derived): the already-transformed image averaged over `factor` x `factor` boxes, `(C, H/f, W/f)`.
  The condition VQGAN tokenizes this low-resolution map itself; with `lowres_full_size=True` it gets the map
  upsampled back to `(C, H, W)` by pixel repetition instead (`upsample_lowres`). For 32x32 digits, factor 8
  gives a 4x4 condition.

A fifth, `"coordinates"` (taming-transformers' `CoordStage`, which its FacesHQ transformer reads), is not tokenized by
a VQGAN: `coordinate_tokens` quantizes the map itself, so a converted pipeline needs no `cond_vqgan` for it. Its maps
are each pixel's position in the whole image, in [0, 1] (`coordinate_map`), the one condition not in [-1, 1]: no
VQGAN reads it. The training scripts train a condition VQGAN for each of `CONDITION_TYPES` and do not offer it.

Derived conditions are computed by `derive_condition` from pixel values in [-1, 1], both by the data pipeline at
training time and by the pipeline's condition processor at sampling time (`VQGANImageProcessor`), so the two cannot
drift apart. Nothing here needs a training-only dependency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .image_utils import DEFAULT_MAX_IMAGE_PIXELS, decode_image

CONDITION_TYPES = ("segmentation", "depth", "edges", "lowres")
"""Condition types a condition VQGAN tokenizes (those the training scripts offer)."""
DERIVED_CONDITION_TYPES = ("edges", "lowres")
"""Condition types computed from the image itself; the others come from a paired dataset column."""
COORDINATES = "coordinates"
"""The condition type tokenized by `coordinate_tokens` (taming's `CoordStage`) rather than by a VQGAN."""

_LABEL_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "1")
_DEPTH_MODES = ("F", "I", "I;16", "I;16B", "I;16L", "I;16N", "L")


def _check_condition_type(condition_type: str) -> None:
    if condition_type not in (*CONDITION_TYPES, COORDINATES):
        raise ValueError(
            f"Unknown condition type {condition_type!r}; expected one of {(*CONDITION_TYPES, COORDINATES)}."
        )


def condition_channels(condition_type: str, num_labels: int | None = None, image_channels: int = 3) -> int:
    """The number of channels of a condition map: the condition VQGAN's `in_channels` and `out_channels`."""
    _check_condition_type(condition_type)
    if condition_type == "segmentation":
        if num_labels is None or num_labels < 2:
            raise ValueError(f"Segmentation conditions need `num_labels` >= 2, got {num_labels!r}.")
        return num_labels
    if condition_type == "lowres":
        return image_channels
    return 1


# ---------------------------------------------------------------------------------------------- segmentation
def read_label_map(value: Any, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """
    A label map as an `int64` array of shape `(height, width)`.

    Accepts a single-channel image (palette `"P"` images give their palette indices, not their colours; `"L"`,
    `"I"`, `"I;16"` give their values), anything `decode_image` accepts, or an integer array / tensor of shape
    `(height, width)`.
    """
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim != 2 or not (np.issubdtype(value.dtype, np.integer) or value.dtype == bool):
            raise ValueError(
                f"Expected an integer label map of shape (height, width), got {value.dtype} {value.shape}."
            )
        return value.astype(np.int64)
    image = decode_image(value, max_pixels)  # a file over the pixel budget is refused from its header
    if image.mode not in _LABEL_MODES:
        raise ValueError(
            f"Label maps must be single-channel images (modes {_LABEL_MODES}), got mode {image.mode!r}; convert "
            "colour-coded maps to class indices first."
        )
    return np.asarray(image).astype(np.int64)


def check_labels(labels: np.ndarray | torch.Tensor, num_labels: int) -> None:
    """Raise `ValueError` naming the offending value if any label lies outside `[0, num_labels)`."""
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_labels:
        raise ValueError(f"Label map values must be in [0, {num_labels}); found min {low} and max {high}.")


def one_hot_labels(labels: torch.Tensor, num_labels: int, off_value: float = -1.0) -> torch.Tensor:
    """
    Labels of shape `(..., height, width)` -> float one-hot `(..., num_labels, height, width)`: 1 for the pixel's
    class, `off_value` elsewhere (-1, the models' pixel range; taming-transformers' segmentation models read 0).
    """
    check_labels(labels, num_labels)
    one_hot = F.one_hot(labels.long(), num_labels).movedim(-1, -3)  # (..., num_labels, H, W)
    return one_hot.float() * (1.0 - off_value) + off_value


def labels_from_logits(condition: torch.Tensor) -> torch.LongTensor:
    """A (reconstructed) one-hot map of shape `(..., num_labels, height, width)` -> labels `(..., height, width)`."""
    if condition.ndim < 3:
        raise ValueError(f"Expected a map of shape (..., num_labels, height, width), got {tuple(condition.shape)}.")
    return condition.argmax(dim=-3)


# ----------------------------------------------------------------------------------------------------- depth
def read_depth_map(value: Any, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A depth map as a `float32` array of shape `(height, width)` in its stored units (no 8-bit rescaling)."""
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        if value.ndim != 2:
            raise ValueError(f"Expected a depth map of shape (height, width), got shape {value.shape}.")
        return value.astype(np.float32)
    image = decode_image(value, max_pixels)  # a file over the pixel budget is refused from its header
    if image.mode == "LA":
        image = image.getchannel("L")
    if image.mode not in _DEPTH_MODES:
        raise ValueError(f"Depth maps must be single-channel images (modes {_DEPTH_MODES}), got mode {image.mode!r}.")
    return np.asarray(image).astype(np.float32)


def normalize_depth(depth: torch.Tensor, depth_range: tuple[float, float] | None = None) -> torch.Tensor:
    """
    Scale depth maps of shape `(..., height, width)` to [-1, 1].

    With `depth_range=(low, high)`, `low` maps to -1 and `high` to 1 and values outside are clipped; the same scale
    then holds across images. Without it each map is scaled by its own minimum and maximum (a constant map gives 0).
    """
    depth = torch.nan_to_num(depth.float())
    if depth_range is not None:
        low, high = depth_range
        if not high > low:
            raise ValueError(f"`depth_range` must be (low, high) with high > low, got {depth_range}.")
    else:
        low = depth.amin(dim=(-2, -1), keepdim=True)
        high = depth.amax(dim=(-2, -1), keepdim=True)
    scale = torch.as_tensor(high - low, dtype=depth.dtype)
    scaled = (depth - low) / torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = torch.where(scale > 0, scaled, torch.full_like(scaled, 0.5))
    return scaled.clamp(0.0, 1.0) * 2.0 - 1.0


# --------------------------------------------------------------------------------------------------- derived
def _as_batch(pixel_values: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if pixel_values.ndim == 3:
        return pixel_values.unsqueeze(0), True
    if pixel_values.ndim == 4:
        return pixel_values, False
    raise ValueError(f"Expected pixel values of shape (C, H, W) or (B, C, H, W), got {tuple(pixel_values.shape)}.")


def _gaussian_smooth(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of `(B, 1, H, W)` with zeros outside the image, renormalised by the blurred all-ones image.

    The kernel reaches 4 sigma (scipy's `gaussian_filter` default truncation, which scikit-image's Canny uses); the
    renormalisation is scikit-image's "bleed-over" correction, so borders are not darkened.
    """
    if sigma <= 0:
        return images
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable: rows then columns
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel.view(1, 1, -1, 1))

    return blur(images) / (blur(torch.ones_like(images[:1])) + torch.finfo(images.dtype).eps)


def _sobel(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives of `(B, 1, H, W)` along rows and columns, edges repeated at the border (scipy's "reflect")."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    derivative = torch.tensor([-1.0, 0.0, 1.0], dtype=images.dtype, device=images.device)
    smoothing = torch.tensor([1.0, 2.0, 1.0], dtype=images.dtype, device=images.device)
    kernel_rows = (derivative[:, None] * smoothing[None, :]).view(1, 1, 3, 3)  # d/drow
    kernel_cols = (smoothing[:, None] * derivative[None, :]).view(1, 1, 3, 3)  # d/dcol
    return F.conv2d(padded, kernel_rows), F.conv2d(padded, kernel_cols)


def _non_maximum_suppression(
    grad_rows: torch.Tensor, grad_cols: torch.Tensor, magnitude: torch.Tensor
) -> torch.Tensor:
    """Keep pixels whose magnitude is at least that of both neighbours along the gradient, `(B, 1, H, W)` bool.

    The neighbours' magnitudes are interpolated linearly between the two pixels the gradient line passes through
    (Canny 1986 with interpolation, as scikit-image does), one step along the dominant axis each way. The one-pixel
    border is never an edge.
    """
    height, width = magnitude.shape[-2:]
    padded = F.pad(magnitude, (1, 1, 1, 1))

    def shifted(d_row: torch.Tensor, d_col: torch.Tensor) -> torch.Tensor:
        # magnitude[r + d_row, c + d_col] for per-pixel offsets in {-1, 0, 1}
        rows = torch.arange(height, device=magnitude.device).view(1, 1, -1, 1) + 1 + d_row
        cols = torch.arange(width, device=magnitude.device).view(1, 1, 1, -1) + 1 + d_col
        flat = padded.flatten(-2)  # (B, 1, (H+2)*(W+2))
        return flat.gather(-1, (rows * (width + 2) + cols).flatten(-2)).view_as(magnitude)

    abs_rows, abs_cols = grad_rows.abs(), grad_cols.abs()
    rows_dominant = abs_rows >= abs_cols
    ratio = torch.where(
        rows_dominant, abs_cols / abs_rows.clamp_min(1e-30), abs_rows / abs_cols.clamp_min(1e-30)
    )  # the fractional step along the minor axis, in [0, 1]
    step_rows, step_cols = torch.sign(grad_rows).long(), torch.sign(grad_cols).long()
    zero = torch.zeros_like(step_rows)
    # One whole step along the dominant axis (no step on the minor one), and the diagonal step.
    axis_rows, axis_cols = torch.where(rows_dominant, step_rows, zero), torch.where(rows_dominant, zero, step_cols)
    keep = torch.ones_like(magnitude, dtype=torch.bool)
    for sign in (1, -1):
        along_axis = shifted(sign * axis_rows, sign * axis_cols)
        diagonal = shifted(sign * step_rows, sign * step_cols)
        neighbour = (1 - ratio) * along_axis + ratio * diagonal
        keep &= magnitude >= neighbour
    keep &= magnitude > 0
    border = torch.zeros_like(keep)
    border[..., 1:-1, 1:-1] = True
    return keep & border


def _hysteresis(weak: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Weak pixels 8-connected (through weak pixels) to a strong one, `(B, 1, H, W)` bool; a flood fill by 3x3 max."""
    edges = strong & weak
    while True:
        grown = edges
        for _ in range(8):  # several growth steps per convergence check: the check syncs with the device
            grown = F.max_pool2d(grown.float(), 3, stride=1, padding=1).bool() & weak
        if torch.equal(grown, edges):
            return edges
        edges = grown


def canny_edges(
    gray: torch.Tensor, sigma: float = 1.0, low_threshold: float | None = None, high_threshold: float | None = None
) -> torch.Tensor:
    """
    Canny edges of grayscale images in [0, 1] of shape `(batch, 1, height, width)`, as a bool tensor of that shape.

    Gaussian smoothing with `sigma`, Sobel gradients, non-maximum suppression with interpolated neighbours, and
    hysteresis: pixels whose gradient magnitude reaches `high_threshold` are edges, and so are those reaching
    `low_threshold` that are 8-connected to one through others. The defaults, 0.1 and 0.2, are scikit-image's for
    float images (10% and 20% of the dtype's maximum, 1.0), whose `skimage.feature.canny` this follows (it agrees on
    well over 95% of the edge pixels; small differences come from ties and floating-point rounding).
    """
    low = 0.1 if low_threshold is None else float(low_threshold)
    high = 0.2 if high_threshold is None else float(high_threshold)
    if high < low:
        raise ValueError(f"`low_threshold` ({low}) must not exceed `high_threshold` ({high}).")
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
    images = gray.double()
    grad_rows, grad_cols = _sobel(_gaussian_smooth(images, sigma))
    magnitude = torch.hypot(grad_rows, grad_cols)  # (B, 1, H, W)
    thin = _non_maximum_suppression(grad_rows, grad_cols, magnitude)
    return _hysteresis(thin & (magnitude >= low), thin & (magnitude >= high))


def edges_condition(
    pixel_values: torch.Tensor,
    sigma: float = 1.0,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
) -> torch.Tensor:
    """
    Canny edges of images in [-1, 1] of shape `(C, H, W)` or `(B, C, H, W)`, as `(1, H, W)` / `(B, 1, H, W)` in
    {-1, 1}.

    The grayscale image (ITU-R 601 luma, as PIL's `"L"` conversion, for 3 channels) is scaled to [0, 1] and passed to
    `canny_edges` with `sigma` and the thresholds (scikit-image's defaults when `None`).
    """
    batch, squeeze = _as_batch(pixel_values)
    images = ((batch.detach().double() + 1.0) / 2.0).clamp(0.0, 1.0)  # (B, C, H, W) in [0, 1]
    if images.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        gray = (images * luma).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    elif images.shape[1] == 1:
        gray = images
    else:
        raise ValueError(f"Edges need 1- or 3-channel images, got {images.shape[1]} channels.")
    edges = canny_edges(gray, sigma, low_threshold, high_threshold)  # (B, 1, H, W) bool
    edges = edges.to(dtype=pixel_values.dtype) * 2.0 - 1.0
    return edges[0] if squeeze else edges


def lowres_condition(pixel_values: torch.Tensor, factor: int) -> torch.Tensor:
    """Average `factor` x `factor` boxes: `(..., C, H, W)` -> `(..., C, H / factor, W / factor)`, still in [-1, 1]."""
    batch, squeeze = _as_batch(pixel_values)
    height, width = batch.shape[-2:]
    if factor < 1 or height % factor or width % factor:
        raise ValueError(f"The lowres `factor` ({factor}) must be >= 1 and divide the image size ({height}x{width}).")
    lowres = F.avg_pool2d(batch, kernel_size=factor)  # (B, C, H/f, W/f)
    return lowres[0] if squeeze else lowres


def upsample_lowres(lowres: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat each pixel `factor` x `factor` times: `(..., C, h, w)` -> `(..., C, h * factor, w * factor)`."""
    return lowres.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


# ----------------------------------------------------------------------------------------------- coordinates
def coordinate_map(
    height: int, width: int, top: int = 0, left: int = 0, full_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """
    taming's coordinate condition (FacesHQ's `coord`): every pixel's raster index in the whole image divided by the
    image's pixel count, so values run from 0 (top left) towards 1, cut to the `height` x `width` window at
    `(top, left)` of a `full_size = (full_height, full_width)` image (the whole image when `None`).

    Returns a tensor of shape `(1, 1, height, width)` in [0, 1).
    """
    full_height, full_width = (height, width) if full_size is None else full_size
    if not (0 <= top and top + height <= full_height and 0 <= left and left + width <= full_width):
        raise ValueError(
            f"The {height}x{width} window at (top={top}, left={left}) does not fit a {full_height}x{full_width} image."
        )
    index = torch.arange(full_height * full_width, dtype=torch.float64).reshape(full_height, full_width)
    window = index[top : top + height, left : left + width] / (full_height * full_width)
    return window.float()[None, None]  # (1, 1, height, width)


def coordinate_tokens(coordinates: torch.Tensor, levels: int, factor: int) -> torch.LongTensor:
    """
    Tokens of coordinate maps, as taming's `CoordStage.encode`: the maps averaged over `factor` x `factor` boxes,
    times `levels`, rounded to the nearest integer (halves to even, like `torch.round`).

    Args:
        coordinates (`torch.Tensor` of shape `(batch, 1, height, width)`): maps in [0, 1] (see `coordinate_map`);
            `height` and `width` divisible by `factor`.
        levels (`int`): taming's `n_embed`: codes run from 0 to `levels` inclusive.
        factor (`int`): taming's `down_factor`.

    Returns:
        `torch.LongTensor` of shape `(batch, (height / factor) * (width / factor))`, in raster order.
    """
    if coordinates.ndim != 4 or coordinates.shape[1] != 1:
        raise ValueError(f"Coordinate maps must have shape (batch, 1, height, width), got {tuple(coordinates.shape)}.")
    height, width = coordinates.shape[-2:]
    if factor < 1 or height % factor or width % factor:
        raise ValueError(
            f"The coordinate `factor` ({factor}) must be >= 1 and divide the map size ({height}x{width})."
        )
    if coordinates.numel() and (coordinates.min() < 0 or coordinates.max() > 1):
        raise ValueError(
            f"Coordinate maps must hold values in [0, 1], got [{float(coordinates.min()):.3g}, "
            f"{float(coordinates.max()):.3g}]."
        )
    boxes = F.adaptive_avg_pool2d(coordinates.float(), (height // factor, width // factor))  # (B, 1, h, w)
    return (boxes.clamp(0.0, 1.0) * levels).round().long().flatten(1)  # (B, h * w)


def coordinates_from_tokens(tokens: torch.LongTensor, levels: int, factor: int) -> torch.Tensor:
    """The inverse of `coordinate_tokens` up to its rounding, as taming's `CoordStage.decode`: tokens of shape
    `(batch, h, w)` to maps `(batch, 1, h * factor, w * factor)` in [0, 1], each box holding `token / levels`."""
    if tokens.ndim != 3:
        raise ValueError(f"Coordinate tokens must have shape (batch, h, w), got {tuple(tokens.shape)}.")
    return upsample_lowres(tokens[:, None].float() / levels, factor)


def derive_condition(
    condition_type: str,
    pixel_values: torch.Tensor,
    lowres_factor: int = 8,
    lowres_full_size: bool = False,
    edge_sigma: float = 1.0,
    edge_low_threshold: float | None = None,
    edge_high_threshold: float | None = None,
) -> torch.Tensor:
    """
    The derived condition (`"edges"` or `"lowres"`) of images in [-1, 1] of shape `(C, H, W)` or `(B, C, H, W)`.

    The one function used at training time and at sampling time (through `VQGANImageProcessor`).
    """
    if condition_type == "edges":
        return edges_condition(pixel_values, edge_sigma, edge_low_threshold, edge_high_threshold)
    if condition_type == "lowres":
        lowres = lowres_condition(pixel_values, lowres_factor)
        return upsample_lowres(lowres, lowres_factor) if lowres_full_size else lowres
    raise ValueError(f"Condition type {condition_type!r} is not derived; expected one of {DERIVED_CONDITION_TYPES}.")


def condition_to_pixels(condition: torch.Tensor, condition_type: str, size: int | None = None) -> torch.Tensor:
    """
    Render conditions of shape `(B, channels, h, w)` as images in [-1, 1] for grids: segmentations in a fixed colour
    palette (3 channels), others as they are; repeated up to `size` x `size` pixels when given.
    """
    _check_condition_type(condition_type)
    if condition_type == "segmentation":
        num_labels = condition.shape[1]
        # A fixed random palette: distinct-looking colours for any number of classes, the same on every call.
        palette = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(num_labels, 3))).float()
        palette = palette.to(condition.device) / 127.5 - 1.0  # (num_labels, 3)
        condition = palette[labels_from_logits(condition)].permute(0, 3, 1, 2)  # (B, 3, h, w)
    if size is not None and condition.shape[-1] != size:
        if size % condition.shape[-1]:
            raise ValueError(f"`size` ({size}) must be a multiple of the condition width ({condition.shape[-1]}).")
        condition = upsample_lowres(condition, size // condition.shape[-1])
    return condition
