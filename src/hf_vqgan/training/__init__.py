"""What only training needs, used by the stage scripts in `examples/`; nothing outside `training/` imports it.

- `arguments`: the flags both stages share; `loop`: set-up helpers and `TrainingRun` (the code around each step);
- `state`: resumable counters, the non-finite guard, seeds, JSON-lines logs; `checkpointing`: kill-safe checkpoints;
- `data`: datasets, image transforms, bad-image handling; `conditions`: condition maps; `tokenize`: cached codes;
- `evaluation`: validation and saved outputs; `metrics`: the image grid; `presets`: model configurations;
- `speedups`: result-preserving training speed-ups.
"""

from .conditions import (
    CONDITION_TYPES,
    DERIVED_CONDITION_TYPES,
    ConditionTransform,
    condition_channels,
    condition_to_pixels,
    derive_condition,
    labels_from_logits,
    one_hot_labels,
)
from .data import (
    DIGITS_NUM_VALIDATION,
    BadImageCounter,
    Geometry,
    ImageTransform,
    collate_fn,
    convert_image_mode,
    decode_image,
    load_digits_dataset,
    load_image_dataset,
    preprocess_batch,
    with_image_transform,
)
from .metrics import make_image_grid

__all__ = [
    "CONDITION_TYPES",
    "DERIVED_CONDITION_TYPES",
    "DIGITS_NUM_VALIDATION",
    "BadImageCounter",
    "ConditionTransform",
    "Geometry",
    "ImageTransform",
    "collate_fn",
    "condition_channels",
    "condition_to_pixels",
    "convert_image_mode",
    "decode_image",
    "derive_condition",
    "labels_from_logits",
    "load_digits_dataset",
    "load_image_dataset",
    "make_image_grid",
    "one_hot_labels",
    "preprocess_batch",
    "with_image_transform",
]
