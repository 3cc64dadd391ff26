"""What only training needs, used by the stage scripts in `examples/`; nothing outside `training/` imports it.

- `arguments`: the flags both stages share; `loop`: set-up helpers and `TrainingRun` (the code around each step);
- `state`: resumable counters, the non-finite guard, seeds, JSON-lines logs; `checkpointing`: kill-safe checkpoints
  that prove they are complete (a manifest checked on resume);
- `data`: datasets, the image processor wired into them, bad-image handling; `sources`: data files, saved
  datasets and the start-up checks of what was opened; `tokenize`: cached codes; `extraction`: codes extracted on
  every process in resumable chunks (`train.py tokenize` and the cache); `token_dataset`: token datasets
  (codes saved with their metadata and card, loaded from a folder or the Hub, pushed as parquet); `from_tokens`:
  a prior's inputs from a token dataset;
- `evaluation`: validation and saved outputs; `curves`: the training-curves figure; `trackers`: images to every
  `--report_to` tracker; `presets`: model configurations;
- `speedups`: result-preserving training speed-ups.

Pixels and condition maps are `hf_vqgan.VQGANImageProcessor`'s (shared with the sampling pipeline), the numerics
`hf_vqgan.metrics`'.
"""

from .data import (
    DIGITS_NUM_VALIDATION,
    BadImageCounter,
    DatasetConfigError,
    collate_fn,
    load_digits_dataset,
    load_image_dataset,
    preprocess_batch,
    with_image_transform,
)

__all__ = [
    "DIGITS_NUM_VALIDATION",
    "BadImageCounter",
    "DatasetConfigError",
    "collate_fn",
    "load_digits_dataset",
    "load_image_dataset",
    "preprocess_batch",
    "with_image_transform",
]
