"""Condition maps for conditional generation: a second VQGAN tokenizes them, the prior reads the tokens as a prefix.

Four condition types, each a tensor in [-1, 1] like the images (one pixel range for every VQGAN):

- `"segmentation"` (paired): an integer label map with `num_labels` classes, resized with nearest neighbour (labels
  are never interpolated), one-hot encoded as `(num_labels, H, W)` with values in {-1, 1} (1 for the pixel's class).
  `labels_from_logits` decodes a reconstruction back to labels with an argmax, which the {-1, 1} choice leaves
  unchanged. Palette (`"P"`) PNGs are read as their palette indices.
- `"depth"` (paired): a one-channel float map, resized bilinearly, as `(1, H, W)`; scaled to [-1, 1] per image
  (its minimum to -1, its maximum to 1) or from a fixed `depth_range` (values outside it clipped).
- `"edges"` (derived): Canny edges (scikit-image) of the grayscale of the already-transformed image, `(1, H, W)`
  with values in {-1, 1}.
- `"lowres"` (derived): the already-transformed image averaged over `factor` x `factor` boxes, `(C, H/f, W/f)`.
  The condition VQGAN tokenizes this low-resolution map itself; with `lowres_full_size=True` it gets the map
  upsampled back to `(C, H, W)` by pixel repetition instead (`upsample_lowres`). For 32x32 digits, factor 8
  gives a 4x4 condition.

Derived conditions are computed by `derive_condition` from pixel values in [-1, 1], both by the data pipeline at
training time and by whoever builds the condition at sampling time, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import Geometry, ImageTransform, decode_image

CONDITION_TYPES = ("segmentation", "depth", "edges", "lowres")
DERIVED_CONDITION_TYPES = ("edges", "lowres")
"""Condition types computed from the image itself; the others come from a paired dataset column."""

_LABEL_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "1")
_DEPTH_MODES = ("F", "I", "I;16", "I;16B", "I;16L", "I;16N", "L")


def _check_condition_type(condition_type: str) -> None:
    if condition_type not in CONDITION_TYPES:
        raise ValueError(f"Unknown condition type {condition_type!r}; expected one of {CONDITION_TYPES}.")


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
def read_label_map(value: Any) -> np.ndarray:
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
    image = decode_image(value)
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


def one_hot_labels(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Labels of shape `(..., height, width)` -> float one-hot of shape `(..., num_labels, height, width)` in {-1, 1}."""
    check_labels(labels, num_labels)
    one_hot = F.one_hot(labels.long(), num_labels).movedim(-1, -3)  # (..., num_labels, H, W)
    return one_hot.float() * 2.0 - 1.0


def labels_from_logits(condition: torch.Tensor) -> torch.LongTensor:
    """A (reconstructed) one-hot map of shape `(..., num_labels, height, width)` -> labels `(..., height, width)`."""
    if condition.ndim < 3:
        raise ValueError(f"Expected a map of shape (..., num_labels, height, width), got {tuple(condition.shape)}.")
    return condition.argmax(dim=-3)


# ----------------------------------------------------------------------------------------------------- depth
def read_depth_map(value: Any) -> np.ndarray:
    """A depth map as a `float32` array of shape `(height, width)` in its stored units (no 8-bit rescaling)."""
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        if value.ndim != 2:
            raise ValueError(f"Expected a depth map of shape (height, width), got shape {value.shape}.")
        return value.astype(np.float32)
    image = decode_image(value)
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


def edges_condition(
    pixel_values: torch.Tensor,
    sigma: float = 1.0,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
) -> torch.Tensor:
    """
    Canny edges of images in [-1, 1] of shape `(C, H, W)` or `(B, C, H, W)`, as `(1, H, W)` / `(B, 1, H, W)` in {-1, 1}.

    The grayscale image (ITU-R 601 luma, as PIL's `"L"` conversion, for 3 channels) is scaled to [0, 1] and passed to
    `skimage.feature.canny` with `sigma` and the thresholds (scikit-image's defaults when `None`).
    """
    from skimage.feature import canny

    batch, squeeze = _as_batch(pixel_values)
    images = ((batch.detach().cpu().double() + 1.0) / 2.0).clamp(0.0, 1.0)  # (B, C, H, W) in [0, 1]
    if images.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        gray = (images * luma).sum(dim=1)  # (B, H, W)
    elif images.shape[1] == 1:
        gray = images[:, 0]
    else:
        raise ValueError(f"Edges need 1- or 3-channel images, got {images.shape[1]} channels.")
    edges = [
        canny(image.numpy(), sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold) for image in gray
    ]
    edges = torch.from_numpy(np.stack(edges)).unsqueeze(1)  # (B, 1, H, W) bool
    edges = edges.to(device=pixel_values.device, dtype=pixel_values.dtype) * 2.0 - 1.0
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

    The one function used at training time (through `ConditionTransform`) and at sampling time.
    """
    if condition_type == "edges":
        return edges_condition(pixel_values, edge_sigma, edge_low_threshold, edge_high_threshold)
    if condition_type == "lowres":
        lowres = lowres_condition(pixel_values, lowres_factor)
        return upsample_lowres(lowres, lowres_factor) if lowres_full_size else lowres
    raise ValueError(f"Condition type {condition_type!r} is not derived; expected one of {DERIVED_CONDITION_TYPES}.")


# ------------------------------------------------------------------------------------------------- transform
class ConditionTransform:
    """
    Computes the condition map of one example, for `preprocess_batch` and for sampling pipelines.

    Args:
        condition_type (`str`): One of `"segmentation"`, `"depth"`, `"edges"`, `"lowres"`.
        num_labels (`int`, *optional*): Number of segmentation classes (required for `"segmentation"`).
        depth_range (`tuple[float, float]`, *optional*): Fixed `(low, high)` depth scale; per-image min/max if `None`.
        lowres_factor (`int`, defaults to 8): Box size of the `"lowres"` average.
        lowres_full_size (`bool`, defaults to `False`): Give the `"lowres"` map upsampled back to full size.
        edge_sigma (`float`, defaults to 1.0): Gaussian smoothing of the Canny detector, in pixels at the resolution.
        edge_low_threshold, edge_high_threshold (`float`, *optional*): Canny hysteresis thresholds.
    """

    def __init__(
        self,
        condition_type: str,
        num_labels: int | None = None,
        depth_range: tuple[float, float] | None = None,
        lowres_factor: int = 8,
        lowres_full_size: bool = False,
        edge_sigma: float = 1.0,
        edge_low_threshold: float | None = None,
        edge_high_threshold: float | None = None,
    ):
        _check_condition_type(condition_type)
        if condition_type == "segmentation":
            condition_channels(condition_type, num_labels)  # validates num_labels
        if depth_range is not None and not depth_range[1] > depth_range[0]:
            raise ValueError(f"`depth_range` must be (low, high) with high > low, got {depth_range}.")
        if lowres_factor < 1:
            raise ValueError(f"`lowres_factor` must be >= 1, got {lowres_factor}.")
        self.condition_type = condition_type
        self.num_labels = num_labels
        self.depth_range = depth_range
        self.lowres_factor = lowres_factor
        self.lowres_full_size = lowres_full_size
        self.edge_sigma = edge_sigma
        self.edge_low_threshold = edge_low_threshold
        self.edge_high_threshold = edge_high_threshold

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.condition_type!r}, num_labels={self.num_labels})"

    @property
    def derived(self) -> bool:
        """Whether the condition is computed from the image rather than read from a paired column."""
        return self.condition_type in DERIVED_CONDITION_TYPES

    def channels(self, image_channels: int = 3) -> int:
        return condition_channels(self.condition_type, self.num_labels, image_channels)

    def output_shape(self, image_channels: int, resolution: int) -> tuple[int, int, int]:
        """`(channels, height, width)` of the condition of a `resolution` x `resolution` image."""
        size = resolution
        if self.condition_type == "lowres" and not self.lowres_full_size:
            size = resolution // self.lowres_factor
        return (self.channels(image_channels), size, size)

    def derive(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`derive_condition` with this transform's options, for `(C, H, W)` or `(B, C, H, W)` pixel values."""
        return derive_condition(
            self.condition_type,
            pixel_values,
            lowres_factor=self.lowres_factor,
            lowres_full_size=self.lowres_full_size,
            edge_sigma=self.edge_sigma,
            edge_low_threshold=self.edge_low_threshold,
            edge_high_threshold=self.edge_high_threshold,
        )

    def __call__(
        self,
        pixel_values: torch.Tensor | None = None,
        condition: Any = None,
        geometry: Geometry | None = None,
        transform: ImageTransform | None = None,
    ) -> torch.Tensor:
        """
        The condition of one example.

        Args:
            pixel_values (`torch.Tensor` of shape `(channels, height, width)`): The transformed image, in [-1, 1];
                derived conditions are computed from it.
            condition (*optional*): The paired map (an image, an undecoded dataset value, a path or an array), for
                `"segmentation"` and `"depth"`.
            geometry (`Geometry`, *optional*): The resize, crop and flip the image went through, applied to the
                paired map, which must have the image's original size. If `None` and `transform` is given, the map
                gets `transform`'s own geometry (the center crop at sampling time); with neither it is used as is.

        Returns:
            `torch.Tensor` of shape `output_shape(...)`: `(num_labels, H, W)`, `(1, H, W)` or `(C, h, w)`.
        """
        if self.derived:
            if pixel_values is None:
                raise ValueError(f"A {self.condition_type!r} condition is derived from `pixel_values`; none given.")
            return self.derive(pixel_values)
        if condition is None:
            raise ValueError(f"A {self.condition_type!r} condition needs its paired map; none given.")

        if self.condition_type == "segmentation":
            array = read_label_map(condition)
            check_labels(array, self.num_labels)
            array, resample = array.astype(np.int32), Image.NEAREST  # nearest: labels are never interpolated
        else:
            array, resample = read_depth_map(condition), Image.BILINEAR  # bilinear: no overshoot past the range
        height, width = array.shape
        if geometry is not None and (width, height) != geometry.source_size:
            raise ValueError(
                f"Condition map of size {(width, height)} does not match its image of size {geometry.source_size}."
            )
        if geometry is None and transform is not None:
            geometry = transform.sample_geometry(width, height)
        if geometry is not None:
            array = np.asarray(ImageTransform.apply_geometry(Image.fromarray(array), geometry, resample=resample))

        if self.condition_type == "segmentation":
            return one_hot_labels(torch.from_numpy(array.astype(np.int64)), self.num_labels)  # (num_labels, H, W)
        return normalize_depth(torch.from_numpy(array.copy()), self.depth_range).unsqueeze(0)  # (1, H, W)


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
