"""`VQGANImageProcessor`: pixels and condition maps in and out, the same at training and at sampling time.

    processor = VQGANImageProcessor(resolution=32, channels=1)
    pixels = processor.preprocess(pil_images)                    # (batch, 1, 32, 32) in [-1, 1]
    images = processor.postprocess(pixels, output_type="pil")

    edges = VQGANImageProcessor(resolution=32, channels=3, condition_type="edges")
    condition = edges.preprocess_condition(photo)                # (batch, 1, 32, 32) in {-1, 1}

A pipeline holds two of them, `image_processor` and `condition_processor` (for image-conditional priors), each saved
in its own folder as `preprocessor_config.json`. The training data pipeline uses the same class for its per-example
transform (`transform`, with the resize, crop and flip it drew as a `Geometry` that paired condition maps follow),
so preprocessing cannot drift between training and sampling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config

from . import conditions
from .image_utils import DEFAULT_MAX_IMAGE_PIXELS, check_pixel_budget, convert_image_mode, decode_image
from .loading import check_model_folder

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass(frozen=True)
class Geometry:
    """
    Where one example is resized, cropped and flipped; shared by an image and its paired condition map.

    Args:
        source_size (`tuple[int, int]`): `(width, height)` of the original image.
        size (`tuple[int, int]`): `(width, height)` after resizing the shorter side to the resolution.
        box (`tuple[int, int, int, int]`): The `(left, top, right, bottom)` crop in the resized image.
        flip (`bool`): Whether the crop is mirrored left-right.
    """

    source_size: tuple[int, int]
    size: tuple[int, int]
    box: tuple[int, int, int, int]
    flip: bool


def pixels_from_images(images: Any, channels: int, name: str = "image") -> torch.Tensor:
    """
    PIL images, uint8 or float arrays, or tensors to a float tensor of shape `(batch, channels, height, width)`.

    PIL images are converted with `convert_image_mode`; uint8 arrays (`(H, W, C)`, `(B, H, W, C)` or channels first)
    are read as 0..255; float arrays and tensors are taken as already in [-1, 1]. No resizing happens here.
    """
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, list) and images and all(isinstance(image, PIL.Image.Image) for image in images):
        tensors = [VQGANImageProcessor.to_tensor(convert_image_mode(image, channels)) for image in images]
        sizes = {(*t.shape[-2:], t.shape[0]) for t in tensors}  # (H, W, C), as numpy shapes them
        if len(sizes) != 1:
            raise ValueError(f"All `{name}` images must have the same size, got {sorted(sizes)}.")
        return torch.stack(tensors)  # (B, C, H, W)
    if isinstance(images, np.ndarray):
        tensor = torch.from_numpy(images)
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim == 4 and tensor.shape[-1] in (1, 3) and tensor.shape[1] not in (1, 3):
            tensor = tensor.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        images = tensor.float() / 127.5 - 1.0 if images.dtype == np.uint8 else tensor.float()
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a PIL image, a list of them, a numpy array or a tensor; got {type(images).__name__}."
        )
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"`{name}` must have shape (batch, {channels}, height, width), got {tuple(images.shape)}.")
    return images.float()


# SchedulerMixin is only the loadable base: diffusers' pipeline loader saves and loads a third-party component only if
# it derives from one of its `LOADABLE_CLASSES`, and SchedulerMixin is the one whose `save_pretrained` /
# `from_pretrained` read and write a single JSON config, which is all a processor is. Nothing here schedules.
class VQGANImageProcessor(SchedulerMixin, ConfigMixin):
    r"""
    Images (and condition maps) to model inputs in [-1, 1] and back, in the spirit of diffusers' `VaeImageProcessor`.

    Args:
        resolution (`int`, *optional*): Output height and width: the shorter side is resized to it (bicubic,
            antialiased) and the image cropped to a square. `None` keeps the input size.
        channels (`int`, defaults to 3): 1 for grayscale models, 3 for RGB.
        center_crop (`bool`, defaults to `True`): The training transform's crop: centred, or else random. Inference
            (`preprocess`) always crops in the centre.
        random_flip (`bool`, defaults to `False`): Mirror left-right with probability 0.5 in the training transform.
        condition_type (`str`, *optional*): For a condition processor: `"segmentation"`, `"depth"`, `"edges"`,
            `"lowres"` or `"coordinates"` (see `hf_vqgan.conditions`); `resolution` and `channels` are then those of
            the images.
        num_labels (`int`, *optional*): Segmentation classes (required for `"segmentation"`).
        lowres_factor (`int`, defaults to 8): Box size of the `"lowres"` average, and of the `"coordinates"` one
            (taming's `CoordStage.down_factor`).
        lowres_full_size (`bool`, defaults to `False`): Give the `"lowres"` map upsampled back to full size.
        depth_range (`list[float]`, *optional*): A fixed `(low, high)` depth scale; per-image min/max if `None`.
        edge_sigma (`float`, defaults to 1.0): Gaussian smoothing of the Canny detector, in pixels.
        edge_low_threshold, edge_high_threshold (`float`, *optional*): Canny hysteresis thresholds (0.1 and 0.2).
        one_hot_off_value (`float`, defaults to -1.0): The value of the classes a segmentation pixel is not: -1 keeps
            one-hot maps in the models' [-1, 1] range; converted taming-transformers segmentation models read 0
            (their data pipeline's `np.eye(n_labels)[labels]`), which `hf-vqgan convert-taming` sets.
        coordinate_levels (`int`, *optional*): For `"coordinates"` (required there): the number of steps between
            coordinate 0 and 1 (taming's `CoordStage.n_embed`); `condition_tokens` gives codes in `[0, levels]`.

    Attributes:
        max_image_pixels (`int` or `None`, defaults to `DEFAULT_MAX_IMAGE_PIXELS`, 40 Mpx): The pixel budget of one
            image: `transform` refuses a larger file from its header, before decoding it, and `preprocess` a larger
            image or array, with `ImageTooLargeError` (a `ValueError`) naming it and its size. `None` disables the
            check. A setting of the process, not of the model: it is not saved with the config.
    """

    config_name = "preprocessor_config.json"

    @register_to_config
    def __init__(
        self,
        resolution: int | None = None,
        channels: int = 3,
        center_crop: bool = True,
        random_flip: bool = False,
        condition_type: str | None = None,
        num_labels: int | None = None,
        lowres_factor: int = 8,
        lowres_full_size: bool = False,
        depth_range: list[float] | tuple[float, float] | None = None,
        edge_sigma: float = 1.0,
        edge_low_threshold: float | None = None,
        edge_high_threshold: float | None = None,
        one_hot_off_value: float = -1.0,
        coordinate_levels: int | None = None,
    ):
        if resolution is not None and (
            not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1
        ):
            raise ValueError(f"`resolution` must be None or a positive int, got {resolution!r}.")
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if condition_type is not None:
            conditions.condition_channels(condition_type, num_labels, channels)  # validates the type and num_labels
        if depth_range is not None and (len(depth_range) != 2 or not depth_range[1] > depth_range[0]):
            raise ValueError(f"`depth_range` must be (low, high) with high > low, got {depth_range}.")
        if not isinstance(lowres_factor, int) or lowres_factor < 1:
            raise ValueError(f"`lowres_factor` must be an int >= 1, got {lowres_factor!r}.")
        if condition_type == conditions.COORDINATES and (
            not isinstance(coordinate_levels, int) or isinstance(coordinate_levels, bool) or coordinate_levels < 1
        ):
            raise ValueError(f"`coordinates` conditions need `coordinate_levels` >= 1, got {coordinate_levels!r}.")
        self.generator: torch.Generator | None = None
        """Draws the training transform's random crops and flips when no generator is passed (see `SeededDataset`)."""
        self.max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None = None, subfolder: str | None = None, **kwargs
    ):
        """diffusers' `from_pretrained`, after `hf_vqgan.loading.check_model_folder` has checked a local folder: an
        empty or corrupt config, or a pipeline root without `subfolder="image_processor"`, is named in one error."""
        if pretrained_model_name_or_path is not None:
            check_model_folder(pretrained_model_name_or_path, subfolder, cls.__name__, cls.config_name)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)

    # Read-only views of the config that the training data code reads on every example.
    @property
    def resolution(self) -> int | None:
        return self.config.resolution

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def condition_type(self) -> str | None:
        return self.config.condition_type

    @property
    def derived(self) -> bool:
        """Whether the condition is computed from the image rather than read from a paired map."""
        return self.config.condition_type in conditions.DERIVED_CONDITION_TYPES

    # ----------------------------------------------------------------------------------- per-example transform
    def sample_geometry(
        self, width: int, height: int, generator: torch.Generator | None = None, inference: bool = False
    ) -> Geometry:
        """Draw the resize, crop and flip for an image of `width` x `height` pixels (`inference`: centred, no flip)."""
        if width < 1 or height < 1:
            raise ValueError(f"Image has zero size ({width}, {height}).")
        side = self.config.resolution
        if side is None:
            new_width, new_height, left, top = width, height, 0, 0
        else:
            scale = side / min(width, height)
            new_width, new_height = max(side, round(width * scale)), max(side, round(height * scale))
            left, top = (new_width - side) // 2, (new_height - side) // 2
            if not (inference or self.config.center_crop):
                left = int(torch.randint(new_width - side + 1, (), generator=generator))
                top = int(torch.randint(new_height - side + 1, (), generator=generator))
        box = (left, top, left + (side or width), top + (side or height))
        flip = not inference and self.config.random_flip and bool(torch.rand((), generator=generator) < 0.5)
        return Geometry(source_size=(width, height), size=(new_width, new_height), box=box, flip=flip)

    @staticmethod
    def apply_geometry(
        image: PIL.Image.Image, geometry: Geometry, resample: int = PIL.Image.BICUBIC
    ) -> PIL.Image.Image:
        """Resize, crop and flip `image` as `geometry` says; pass `Image.NEAREST` for label maps."""
        if geometry.size != image.size:
            image = image.resize(geometry.size, resample=resample)
        if geometry.box != (0, 0, *image.size):
            image = image.crop(geometry.box)
        return image.transpose(PIL.Image.FLIP_LEFT_RIGHT) if geometry.flip else image

    @staticmethod
    def to_tensor(image: PIL.Image.Image) -> torch.Tensor:
        """An 8-bit `"L"` or `"RGB"` image -> `float32` tensor of shape `(channels, height, width)` in [-1, 1]."""
        array = np.array(image, dtype=np.uint8)  # (H, W) or (H, W, C)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1.0  # (C, H, W)

    def transform(self, image: Any, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Geometry]:
        """
        The training transform of one example: decode, convert the mode, resize, crop and flip.

        Random choices use `generator`, else the `generator` attribute, else torch's global generator.

        Returns:
            The image as a tensor of shape `(channels, resolution, resolution)` in [-1, 1], and the `Geometry` used,
            for its paired condition map (`condition_map`).
        """
        generator = self.generator if generator is None else generator
        image = convert_image_mode(decode_image(image, self.max_image_pixels), self.config.channels)
        geometry = self.sample_geometry(image.width, image.height, generator=generator)
        return self.to_tensor(self.apply_geometry(image, geometry)), geometry

    def __call__(self, image: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        """`transform` without the geometry: one example as `(channels, resolution, resolution)` in [-1, 1]."""
        return self.transform(image, generator=generator)[0]

    # ---------------------------------------------------------------------------------------------- inference
    def preprocess(self, images: Any, resize: bool = True, name: str = "image") -> torch.Tensor:
        """
        Images to model inputs of shape `(batch, channels, height, width)` in [-1, 1].

        Args:
            images: a PIL image or a list of them (any mode, converted as `convert_image_mode` does), a uint8 array
                (0..255), a float array or a tensor in [-1, 1], `(H, W, C)` / `(B, H, W, C)` or channels first.
            resize (`bool`, defaults to `True`): With a `resolution`, resize the shorter side to it and crop the centre
                as the training transform does (PIL images exactly so; arrays and tensors with torch's antialiased
                bicubic). `False` keeps the given size.
            name (`str`): How errors name the argument.

        Raises:
            `ImageTooLargeError` (a `ValueError`) for an image over `max_image_pixels`, before a lazily opened PIL
            image is decoded.
        """
        self._check_pixel_budget(images, name)
        side = self.config.resolution if resize else None
        if side is not None and isinstance(images, (PIL.Image.Image, list)):
            images = [images] if isinstance(images, PIL.Image.Image) else images
            if images and all(isinstance(image, PIL.Image.Image) for image in images):
                converted = [convert_image_mode(image, self.config.channels) for image in images]
                geometries = [self.sample_geometry(image.width, image.height, inference=True) for image in converted]
                images = [self.apply_geometry(image, g) for image, g in zip(converted, geometries)]
        pixels = pixels_from_images(images, self.config.channels, name)  # (B, C, H, W)
        if side is not None and tuple(pixels.shape[-2:]) != (side, side):
            height, width = pixels.shape[-2:]
            scale = side / min(height, width)
            size = (max(side, round(height * scale)), max(side, round(width * scale)))
            pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            pixels = pixels[..., top : top + side, left : left + side].clamp(-1.0, 1.0)
        return pixels

    def _check_pixel_budget(self, images: Any, name: str) -> None:
        """Refuse any image of `images` (a PIL image, a list of them, an array or a tensor) over `max_image_pixels`."""
        if isinstance(images, (PIL.Image.Image, list)):
            for i, image in enumerate([images] if isinstance(images, PIL.Image.Image) else images):
                if isinstance(image, PIL.Image.Image):  # its size comes from the header, decoded or not
                    source = f"`{name}` {i}" + (f" ({image.filename})" if getattr(image, "filename", "") else "")
                    check_pixel_budget(*image.size, self.max_image_pixels, source)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim >= 2:
            # Channels last (H, W, C) / (B, H, W, C) or first (C, H, W) / (B, C, H, W): the two largest of the last
            # three dimensions are the image's height and width.
            height, width = sorted(images.shape[-3:])[-2:]
            check_pixel_budget(width, height, self.max_image_pixels, f"`{name}`")

    @staticmethod
    def postprocess(pixels: torch.Tensor, output_type: str = "pil"):
        """
        Model outputs of shape `(batch, channels, height, width)` in [-1, 1] to images: `"pil"` (a list), `"np"`
        (`(batch, height, width, channels)` floats in [0, 1]) or `"pt"` (`(batch, channels, height, width)` in [0, 1]).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES} for decoded images, got {output_type!r}.")
        images = (pixels.detach().float() / 2 + 0.5).clamp(0, 1)  # (B, C, H, W) in [0, 1]
        if output_type == "pt":
            return images.cpu()
        array = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        if output_type == "np":
            return array
        uint8 = (array * 255).round().astype(np.uint8)
        return [PIL.Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in uint8]

    # --------------------------------------------------------------------------------------------- conditions
    def _require_condition(self) -> str:
        if self.config.condition_type is None:
            raise ValueError("This processor has no `condition_type`; it processes images, not conditions.")
        return self.config.condition_type

    def condition_channels(self, image_channels: int | None = None) -> int:
        """Channels of the condition map: the condition VQGAN's `in_channels`."""
        channels = self.config.channels if image_channels is None else image_channels
        return conditions.condition_channels(self._require_condition(), self.config.num_labels, channels)

    def condition_shape(
        self, image_channels: int | None = None, resolution: int | None = None
    ) -> tuple[int, int, int]:
        """`(channels, height, width)` of the condition of a `resolution` x `resolution` image."""
        size = self.config.resolution if resolution is None else resolution
        if self.config.condition_type == "lowres" and not self.config.lowres_full_size:
            size = size // self.config.lowres_factor
        return (self.condition_channels(image_channels), size, size)

    def derive(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The derived condition (`"edges"`, `"lowres"`) of pixels in [-1, 1], `(C, H, W)` or `(B, C, H, W)`."""
        config = self.config
        return conditions.derive_condition(
            self._require_condition(), pixel_values, lowres_factor=config.lowres_factor,
            lowres_full_size=config.lowres_full_size, edge_sigma=config.edge_sigma,
            edge_low_threshold=config.edge_low_threshold, edge_high_threshold=config.edge_high_threshold,
        )  # fmt: skip

    def _depth_range(self) -> tuple[float, float] | None:
        return None if self.config.depth_range is None else tuple(self.config.depth_range)

    def condition_map(
        self,
        pixel_values: torch.Tensor | None = None,
        condition: Any = None,
        geometry: Geometry | None = None,
        image_processor: VQGANImageProcessor | None = None,
    ) -> torch.Tensor:
        """
        The condition of one training example.

        Args:
            pixel_values (`torch.Tensor` of shape `(channels, height, width)`): The transformed image, in [-1, 1];
                derived conditions are computed from it.
            condition (*optional*): The paired map (an image, an undecoded dataset value, a path or an array), for
                `"segmentation"` and `"depth"`.
            geometry (`Geometry`, *optional*): The resize, crop and flip the image went through, applied to the
                paired map, which must have the image's original size. If `None`, `image_processor` (when given)
                draws one for the map; with neither the map is used as is.

        Returns:
            `torch.Tensor` of shape `condition_shape(...)`: `(num_labels, H, W)`, `(1, H, W)` or `(C, h, w)`.
        """
        condition_type = self._require_condition()
        if condition_type == conditions.COORDINATES:
            raise ValueError(
                "`coordinates` conditions are not a training condition here (no condition VQGAN reads them)."
            )
        if self.derived:
            if pixel_values is None:
                raise ValueError(f"A {condition_type!r} condition is derived from `pixel_values`; none given.")
            return self.derive(pixel_values)
        if condition is None:
            raise ValueError(f"A {condition_type!r} condition needs its paired map; none given.")
        if condition_type == "segmentation":
            array = conditions.read_label_map(condition, self.max_image_pixels)
            conditions.check_labels(array, self.config.num_labels)
            array, resample = array.astype(np.int32), PIL.Image.NEAREST  # nearest: labels are never interpolated
        else:
            array = conditions.read_depth_map(condition, self.max_image_pixels)
            resample = PIL.Image.BILINEAR  # no overshoot past the range
        height, width = array.shape
        if geometry is not None and (width, height) != geometry.source_size:
            raise ValueError(
                f"Condition map of size {(width, height)} does not match its image of size {geometry.source_size}."
            )
        if geometry is None and image_processor is not None:
            geometry = image_processor.sample_geometry(width, height)
        if geometry is not None:
            array = np.asarray(self.apply_geometry(PIL.Image.fromarray(array), geometry, resample=resample))
        if condition_type == "segmentation":
            labels = torch.from_numpy(array.astype(np.int64))
            return conditions.one_hot_labels(labels, self.config.num_labels, self.config.one_hot_off_value)
        return conditions.normalize_depth(torch.from_numpy(array.copy()), self._depth_range()).unsqueeze(0)

    def preprocess_condition(self, condition_image: Any) -> torch.Tensor:
        """
        Check and preprocess conditions for the condition VQGAN, exactly as the training data pipeline does.

        - `segmentation`: label maps (a palette or grayscale PIL image, or an integer array/tensor of shape `(H, W)`
          or `(batch, H, W)`) with labels in `[0, num_labels)`, at `resolution`.
        - `depth`: float maps (PIL, array or tensor of shape `(H, W)`, `(batch, H, W)` or `(batch, 1, H, W)`).
        - `edges`, `lowres`: the images to derive the condition from, at `resolution` (for `lowres`, already
          downsampled images of `resolution / lowres_factor` pixels are taken as they are).
        - `coordinates`: float maps in [0, 1] (see `hf_vqgan.conditions.coordinate_map`) of shape `(H, W)`,
          `(batch, H, W)` or `(batch, 1, H, W)`, at `resolution`; returned in [0, 1] (no VQGAN reads them, see
          `condition_tokens`).

        Returns a tensor of shape `(batch, channels, height, width)` in [-1, 1].
        """
        if self._require_condition() == conditions.COORDINATES:
            return self._coordinate_condition(condition_image)
        if self.derived:
            return self._derived_condition(condition_image)
        return self._paired_condition(condition_image)

    def _derived_condition(self, condition_image: Any) -> torch.Tensor:
        config = self.config
        pixels = self.preprocess(condition_image, resize=False, name="condition_image")  # (B, C, H, W)
        if pixels.numel() and (pixels.min() < -1.001 or pixels.max() > 1.001):
            raise ValueError(
                "A float `condition_image` must hold pixels in [-1, 1] (pass uint8 arrays or PIL images for "
                f"0..255), got values in [{float(pixels.min()):.3g}, {float(pixels.max()):.3g}]."
            )
        size, side = tuple(pixels.shape[-2:]), config.resolution
        if side is None:
            return self.derive(pixels)
        low = side // config.lowres_factor
        if config.condition_type == "lowres" and size == (low, low):
            return conditions.upsample_lowres(pixels, config.lowres_factor) if config.lowres_full_size else pixels
        if size != (side, side):
            expected = f"{side}x{side}" + (f" (or {low}x{low})" if config.condition_type == "lowres" else "")
            raise ValueError(f"`condition_image` must be {expected} pixels, got {size[0]}x{size[1]}.")
        return self.derive(pixels)

    def _paired_condition(self, condition_image: Any) -> torch.Tensor:
        config = self.config
        self._check_pixel_budget(condition_image, "condition_image")
        if isinstance(condition_image, PIL.Image.Image):
            segmentation = config.condition_type == "segmentation"
            reader = conditions.read_label_map if segmentation else conditions.read_depth_map
            condition_image = reader(condition_image)
        if not isinstance(condition_image, torch.Tensor):
            condition_image = np.asarray(condition_image)
        maps = torch.as_tensor(condition_image)
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if maps.ndim == 2:
            maps = maps[None]
        side = config.resolution
        if maps.ndim != 3 or (side is not None and tuple(maps.shape[-2:]) != (side, side)):
            expected = "(H, W) or (batch, H, W)" if side is None else f"({side}, {side}) or (batch, {side}, {side})"
            raise ValueError(
                f"A {config.condition_type} `condition_image` must be a map of shape {expected}, got "
                f"{tuple(maps.shape)}."
            )
        if config.condition_type == "depth":
            return torch.stack([conditions.normalize_depth(m.float(), self._depth_range()) for m in maps])[:, None]
        if maps.is_floating_point() and not torch.equal(maps, maps.round()):
            raise ValueError("A segmentation `condition_image` must hold integer labels, got fractional values.")
        return conditions.one_hot_labels(maps.long(), config.num_labels, config.one_hot_off_value)  # (B, L, H, W)

    def _coordinate_condition(self, condition_image: Any) -> torch.Tensor:
        maps = torch.as_tensor(np.asarray(condition_image) if not isinstance(condition_image, torch.Tensor) else
                               condition_image)  # fmt: skip
        if maps.ndim == 2:
            maps = maps[None, None]
        elif maps.ndim == 3:
            maps = maps[:, None]
        side = self.config.resolution
        if maps.ndim != 4 or maps.shape[1] != 1 or (side is not None and tuple(maps.shape[-2:]) != (side, side)):
            size = "H, W" if side is None else f"{side}, {side}"
            raise ValueError(
                f"A coordinates `condition_image` must be a map of shape ({size}), (batch, {size}) or "
                f"(batch, 1, {size}), got {tuple(maps.shape)}."
            )
        if not maps.is_floating_point():
            raise TypeError(f"A coordinates `condition_image` must hold floats in [0, 1], got {maps.dtype}.")
        return maps.float()

    def condition_tokens(self, condition_image: Any) -> torch.LongTensor:
        """
        The tokens of a condition that needs no condition VQGAN (`"coordinates"`): `preprocess_condition`, then
        `hf_vqgan.conditions.coordinate_tokens` with `coordinate_levels` and `lowres_factor`.

        Returns a `torch.LongTensor` of shape `(batch, (resolution / lowres_factor) ** 2)`.
        """
        if self._require_condition() != conditions.COORDINATES:
            raise ValueError(
                f"`{self.config.condition_type}` conditions are tokenized by the condition VQGAN, not the processor."
            )
        maps = self.preprocess_condition(condition_image)  # (B, 1, H, W) in [0, 1]
        return conditions.coordinate_tokens(maps, self.config.coordinate_levels, self.config.lowres_factor)
