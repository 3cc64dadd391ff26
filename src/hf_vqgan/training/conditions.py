"""Condition maps for training: the math lives in `hf_vqgan.conditions`, the per-example transform in
`VQGANImageProcessor` (shared with the sampling pipeline); this module re-exports them for the training code.

`ConditionTransform` is kept for the training data pipeline's call convention (`condition_transform(pixel_values,
paired_map, geometry=..., transform=...)` and `output_shape`); it is a `VQGANImageProcessor` with a
`condition_type` and no resolution of its own.
"""

from __future__ import annotations

from typing import Any

import torch

from ..conditions import (  # noqa: F401
    CONDITION_TYPES,
    DERIVED_CONDITION_TYPES,
    canny_edges,
    check_labels,
    condition_channels,
    condition_to_pixels,
    derive_condition,
    edges_condition,
    labels_from_logits,
    lowres_condition,
    normalize_depth,
    one_hot_labels,
    read_depth_map,
    read_label_map,
    upsample_lowres,
)
from ..image_processor import Geometry, VQGANImageProcessor


class ConditionTransform(VQGANImageProcessor):
    """
    A condition processor called per training example (see `VQGANImageProcessor.condition_map`).

    Args:
        condition_type (`str`): One of `"segmentation"`, `"depth"`, `"edges"`, `"lowres"`.
        num_labels, depth_range, lowres_factor, lowres_full_size, edge_sigma, edge_low_threshold,
        edge_high_threshold: as in `VQGANImageProcessor`.
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
        if condition_type not in CONDITION_TYPES:
            raise ValueError(f"Unknown condition type {condition_type!r}; expected one of {CONDITION_TYPES}.")
        super().__init__(
            condition_type=condition_type, num_labels=num_labels, depth_range=depth_range,
            lowres_factor=lowres_factor, lowres_full_size=lowres_full_size, edge_sigma=edge_sigma,
            edge_low_threshold=edge_low_threshold, edge_high_threshold=edge_high_threshold,
        )  # fmt: skip

    def output_shape(self, image_channels: int, resolution: int) -> tuple[int, int, int]:
        return self.condition_shape(image_channels, resolution)

    def __call__(  # type: ignore[override]
        self,
        pixel_values: torch.Tensor | None = None,
        condition: Any = None,
        geometry: Geometry | None = None,
        transform: VQGANImageProcessor | None = None,
    ) -> torch.Tensor:
        return self.condition_map(pixel_values, condition, geometry=geometry, image_processor=transform)
