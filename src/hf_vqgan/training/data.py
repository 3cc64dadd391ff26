"""Datasets and image transforms for training VQGAN tokenizers and their priors.

Everything here sits at the edge where files become tensors: images leave this module as `float32` tensors of shape
`(channels, resolution, resolution)` in [-1, 1], the one pixel range used by the models.

- `load_digits_dataset` builds the offline default: scikit-learn's 1,797 handwritten digits (8x8, grayscale) with a
  fixed, stratified held-out split of `DIGITS_NUM_VALIDATION` = 180 images (1,617 for training, 18 per class in
  validation).
- `load_image_dataset` opens any dataset `datasets.load_dataset` can open (a Hub id, a local folder or loader script,
  an `imagefolder`), a `save_to_disk` folder, or data files (parquet, csv / jsonl of image paths, arrow); checks the
  requested columns and the splits at start-up and returns `train` and `validation` splits. What cannot train
  raises `DatasetConfigError`, naming the value and the fix.
- `with_image_transform` / `preprocess_batch` / `collate_fn` wire a `hf_vqgan.VQGANImageProcessor` (the
  per-example transform the sampling pipeline shares: resize, crop, flip, paired condition maps) into a dataset so
  that images which fail to decode (corrupt, truncated, empty files) or exceed the pixel budget (decompression bombs,
  refused from their header before decoding) are skipped and counted once per file by a `BadImageCounter` instead of
  stopping a run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..image_processor import VQGANImageProcessor
from ..image_utils import ImageTooLargeError
from . import sources
from .sources import DatasetConfigError

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

DIGITS_NUM_VALIDATION = 180
"""Size of the fixed validation split of the digits (10% of 1,797, 18 per class); the other 1,617 train."""

DIGITS_SPLIT_SEED = 0
"""Seed of the stratified shuffle that fixes the digits split; changing it changes every reported digits figure."""

_DIGITS_MAX_VALUE = 16  # scikit-learn's digits count dark pixels in 4x4 blocks: values 0..16


# ----------------------------------------------------------------------------------------------- digits dataset
def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits split: sorted indices into `sklearn.datasets.load_digits()` for train and validation."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, validation = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_NUM_VALIDATION, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train), np.sort(validation)


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """
    The raw digits of one split of the fixed split.

    Returns:
        `(images, labels)`: `float64` images of shape `(num_images, 8, 8)` with values in 0..16 (scikit-learn's
        native scale) and `int64` labels of shape `(num_images,)`.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "validation"):
        raise ValueError(f"`split` must be 'train' or 'validation', got {split!r}.")
    digits = load_digits()
    train, validation = digits_split_indices()
    indices = train if split == "train" else validation
    return digits.images[indices], digits.target[indices].astype(np.int64)


def load_digits_dataset() -> datasets.DatasetDict:
    """
    scikit-learn's handwritten digits as a `datasets.DatasetDict` with `train` (1,617) and `validation` (180) splits.

    Features: `image`, an 8x8 grayscale (`"L"`) PIL image whose 0..16 values are scaled to 0..255, and `label`, a
    `ClassLabel` named `"0"` to `"9"`. The split is stratified with a fixed seed, so it is identical on every call and
    every machine; nothing is written to disk.
    """
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(digit) for digit in range(10)])}
    )
    splits = {}
    for split in ("train", "validation"):
        images, labels = digits_arrays(split)
        pixels = np.rint(images * (255.0 / _DIGITS_MAX_VALUE)).astype(np.uint8)  # (N, 8, 8)
        splits[split] = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(image, mode="L") for image in pixels], "label": labels.tolist()},
            features=features,
        )
    return datasets.DatasetDict(splits)


# ------------------------------------------------------------------------------------------ any image dataset
_SOURCES = ("dataset_name", "train_data_dir", "data_files")  # the options that name a dataset; one at most


def _column_names(dataset) -> list[str]:
    names = dataset.column_names
    if names is None:  # a streamed dataset whose features are unknown until the first example is read
        names = list((sources.first_example(dataset) or {}).keys())
    return list(names)


def _check_column(dataset, column: str, role: str, split: str) -> None:
    names = _column_names(dataset)
    if column not in names:
        raise DatasetConfigError(f"{role} column {column!r} not found in split {split!r}; available columns: {names}.")


def _check_validation_split(validation_split: Any) -> None:
    if isinstance(validation_split, bool):
        raise TypeError(f"`validation_split` must be a float, an int or a split name, got {validation_split!r}.")
    if isinstance(validation_split, float) and not 0.0 < validation_split < 1.0:
        raise DatasetConfigError(f"`validation_split` as a fraction must be in (0, 1), got {validation_split}.")
    if isinstance(validation_split, int) and validation_split < 1:
        raise DatasetConfigError(f"`validation_split` as a number of examples must be >= 1, got {validation_split}.")
    if not isinstance(validation_split, (float, int, str)):
        raise TypeError(
            f"`validation_split` must be a float fraction, an int count or a split name, got {validation_split!r}."
        )


def _split_streaming(train, validation_split: float | int, split_name: str):
    if isinstance(validation_split, int):
        count = validation_split
    else:
        split_info = (train.info.splits or {}).get(split_name)
        if split_info is None or not split_info.num_examples:
            raise DatasetConfigError(
                f"Cannot take a fraction ({validation_split}) of a streamed split of unknown size; pass "
                "`validation_split` as a number of examples (an int) or as the name of a split."
            )
        count = max(1, round(validation_split * split_info.num_examples))
    # The first `count` examples, never shuffled: a shuffle would change with `set_epoch` and leak them into train.
    return train.skip(count), train.take(count)


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | os.PathLike | None = None,
    data_files: str | Sequence[str] | dict[str, str | Sequence[str]] | None = None,
    image_column: str = "image",
    label_column: str | None = None,
    validation_split: float | int | str = 0.1,
    max_train_samples: int | None = None,
    streaming: bool = False,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    condition_column: str | None = None,
    decode: bool = False,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """
    Open an image dataset with a `train` and a `validation` split.

    Args:
        dataset_name (`str`, *optional*): A `save_to_disk` folder, or what `datasets.load_dataset` takes as a path:
            a Hub id, a local directory, a loader script or a packaged builder name.
        dataset_config_name (`str`, *optional*): The configuration of `dataset_name`.
        train_data_dir (`str`, *optional*): A folder of images, opened with the `imagefolder` builder (sub-folders
            become a `label` column). With no source option the built-in digits (`load_digits_dataset`) are used.
        data_files (`str`, a list, or `dict` of split name to files, *optional*): Data files of one format, read by
            `hf_vqgan.training.sources.open_data_files` (a path or list is the `train` split).
        image_column (`str`, defaults to `"image"`): The column holding images.
        label_column (`str`, *optional*): A class-label column to keep for class-conditional training.
        validation_split (`float`, `int` or `str`, defaults to 0.1): The name of the split to validate on; or, when
            the dataset has no `validation` split, the fraction (float) or number (int) of training examples to hold
            out. Map-style datasets hold out a seeded random subset (`train_test_split`); streamed datasets hold out
            their first examples (a fraction needs the split size from the dataset's metadata).
        max_train_samples (`int`, *optional*): Keep this many training examples (a seeded random subset, or the first
            ones when streaming).
        streaming (`bool`, defaults to `False`): Return `IterableDataset`s read on the fly.
        seed (`int`, defaults to 0): Seed of the held-out split and of the `max_train_samples` subset.
        cache_dir (`str`, *optional*): Passed to `datasets.load_dataset`.
        condition_column (`str`, *optional*): A column of paired condition maps (segmentation, depth) to check.
        decode (`bool`, defaults to `False`): Keep the datasets library's lazy PIL decoding of the image column. By
            default the column is cast to `datasets.Image(decode=False)`, so that `preprocess_batch` decodes each file
            itself and can skip the ones that fail instead of raising inside the dataset.

    Returns:
        A `datasets.DatasetDict` (an `IterableDatasetDict` when streaming) with exactly `train` and `validation`.

    Raises:
        `DatasetConfigError` (a `ValueError`) naming a missing column or split and the available ones, an empty
        split, a class column that is not integer or `ClassLabel`, or an unreadable data file name.
    """
    import datasets

    given = [
        f"`{name}` ({value!r})" for name, value in zip(_SOURCES, (dataset_name, train_data_dir, data_files)) if value
    ]
    if len(given) > 1:
        raise DatasetConfigError(f"Pass either {' or '.join(given)}, not both.")
    if dataset_config_name is not None and dataset_name is None:
        raise DatasetConfigError(f"`dataset_config_name` ({dataset_config_name!r}) needs a `dataset_name`.")
    _check_validation_split(validation_split)
    if max_train_samples is not None and max_train_samples < 1:
        raise DatasetConfigError(f"`max_train_samples` must be >= 1, got {max_train_samples}.")

    if data_files is not None:
        raw = sources.open_data_files(data_files, streaming, cache_dir, image_column)
    else:
        raw = _open_dataset(dataset_name, dataset_config_name, train_data_dir, streaming, cache_dir)
    splits = _train_and_validation(raw, validation_split, streaming, seed)
    for split_name, split in splits.items():
        split_label = "train" if split_name == "train" else _validation_name(raw, validation_split)
        _check_split(split, split_name, split_label, image_column, label_column, condition_column)
    if max_train_samples is not None:
        train = splits["train"]
        if streaming:
            splits["train"] = train.take(max_train_samples)
        else:
            splits["train"] = train.shuffle(seed=seed).select(range(min(max_train_samples, len(train))))
    if not decode:
        splits = {name: _undecoded(split, (image_column, condition_column)) for name, split in splits.items()}
    return datasets.IterableDatasetDict(splits) if streaming else datasets.DatasetDict(splits)


def _undecoded(split, columns):
    """`split` with its image `columns` cast to undecoded values, which `preprocess_batch` decodes itself."""
    import datasets

    for column in columns:
        if column is not None and isinstance((split.features or {}).get(column), datasets.Image):
            split = split.cast_column(column, datasets.Image(decode=False))
    return split


def _check_split(split, name: str, label: str, image_column: str, label_column, condition_column) -> None:
    """At start-up: the split has examples (`label` names it in errors), the columns exist, the classes are ints."""
    sources.check_not_empty(split, label)
    for column, role in ((image_column, "Image"), (label_column, "Label"), (condition_column, "Condition")):
        if column is not None:
            _check_column(split, column, role, name)
    if label_column is not None:
        sources.check_label_column(split, label_column, name)


def _validation_name(raw, validation_split: float | int | str) -> str:
    """How errors name the validation split: its name, or the held-out part of `train`."""
    if isinstance(validation_split, str):
        return validation_split
    return "validation" if "validation" in raw else f"{validation_split} held out of 'train'"


def _open_dataset(dataset_name, dataset_config_name, train_data_dir, streaming: bool, cache_dir):
    """The raw dataset dict: a named dataset, a `save_to_disk` folder, an image folder, or the built-in digits."""
    import datasets

    if dataset_name is not None and sources.is_saved_dataset(str(dataset_name)):
        if dataset_config_name is not None:
            raise DatasetConfigError(
                f"A save_to_disk folder ({dataset_name}) has no configurations: drop {dataset_config_name!r}."
            )
        return sources.open_saved_dataset(str(dataset_name), streaming)
    if dataset_name is not None:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=streaming)
    if train_data_dir is not None:
        return datasets.load_dataset(
            "imagefolder", data_dir=str(train_data_dir), cache_dir=cache_dir, streaming=streaming
        )
    raw = load_digits_dataset()
    if streaming:
        raw = datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in raw.items()})
    return raw


def _train_and_validation(raw, validation_split: float | int | str, streaming: bool, seed: int) -> dict:
    """`{"train": ..., "validation": ...}`: a named split, the dataset's own validation split, or a held-out part."""
    available = list(raw.keys())
    if "train" not in available:
        raise DatasetConfigError(f"The dataset has no 'train' split; available splits: {available}.")
    if isinstance(validation_split, str):
        if validation_split not in available:
            raise DatasetConfigError(
                f"Validation split {validation_split!r} not found; available splits: {available}."
            )
        return {"train": raw["train"], "validation": raw[validation_split]}
    if "validation" in available:
        return {"train": raw["train"], "validation": raw["validation"]}
    if streaming:
        train, validation = _split_streaming(raw["train"], validation_split, "train")
        return {"train": train, "validation": validation}
    held_out = raw["train"].train_test_split(test_size=validation_split, seed=seed)
    return {"train": held_out["train"], "validation": held_out["test"]}


def count_classes(dataset, column: str, labels: Sequence[int] | None = None) -> int:
    """
    Number of classes of a label column: its `ClassLabel` size, or max + 1 of its integers (of `labels` when given,
    e.g. a streamed dataset's labels once read; else of the column's unique values).
    """
    feature = (dataset.features or {}).get(column)
    if hasattr(feature, "num_classes"):
        return feature.num_classes
    labels = set(dataset.unique(column) if labels is None else labels)
    if not labels or any(not isinstance(label, int) or label < 0 for label in labels):
        raise DatasetConfigError(
            f"--class_column {column!r} must hold non-negative integer labels, found {sorted(labels, key=str)[:5]}."
        )
    return max(labels) + 1


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names of a `--class_names` file: one per line, class 0 first; surrounding blanks are ignored."""
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names) or len(set(names)) != len(names):
        raise DatasetConfigError(
            f"--class_names {os.fspath(path)!r} must hold one distinct, non-empty name per line (class 0 first), got "
            f"{names[:10]}."
        )
    return names


def class_names(dataset, column: str, num_classes: int, names_file: str | os.PathLike | None = None):
    """`(num_classes, names)` of a label column: the names of its `ClassLabel` feature, or those of `names_file`
    (which may name classes the data does not show; `num_classes` grows to their count); `names` is `None` for
    plain integer labels without a file."""
    feature = (dataset.features or {}).get(column)
    column_names = list(getattr(feature, "names", None) or []) or None
    if names_file is None:
        return num_classes, column_names
    names = read_class_names(names_file)
    if column_names is not None and len(names) != len(column_names):
        raise DatasetConfigError(
            f"--class_names {os.fspath(names_file)!r} names {len(names)} classes, but the ClassLabel column "
            f"{column!r} has {len(column_names)}: {column_names[:10]}."
        )
    if len(names) < num_classes:
        raise DatasetConfigError(
            f"--class_names {os.fspath(names_file)!r} names {len(names)} classes, but column {column!r} holds labels "
            f"up to {num_classes - 1}: give one name per class, class 0 first."
        )
    return len(names), names


# ----------------------------------------------------------------------------------------- decoding and modes
def image_source(value: Any) -> str | None:
    """The file name behind an image value (a path, an undecoded `{"bytes", "path"}` dict, a PIL image), if known."""
    if isinstance(value, dict):
        return value.get("path")
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return getattr(value, "filename", None) or None


# ------------------------------------------------------------------------------------ batches with bad images
class BadImageCounter:
    """
    Counts the images skipped because they could not be read (or, with a condition, their condition map), or were
    over the pixel budget (`ImageTooLargeError`, see `VQGANImageProcessor.max_image_pixels`), once per file per run.

    A file skipped again in a later epoch is not counted or logged again (images held in memory, with no file name,
    are counted each time); `summary` gives the line a run ends with. Each `DataLoader` worker holds its own copy:
    the training process's count is exact with `--dataloader_num_workers 0` (batches carry tensors only, see
    `collate_fn`).

    Args:
        max_consecutive (`int`, defaults to 100): Raise `RuntimeError` after this many failures in a row: at that
            point the dataset or the transform configuration is wrong, and skipping would hide it.
    """

    def __init__(self, max_consecutive: int = 100):
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.oversized = 0
        self.consecutive = 0
        self.last_file: str | None = None
        self.last_error: str | None = None
        self.files: dict[str, str] = {}  # file -> why it was skipped, in the order first seen

    def record_success(self) -> None:
        self.consecutive = 0

    def record(self, file: str | None, error: BaseException) -> None:
        """Count one skipped example, remember its file name and error, and log it the first time it is seen."""
        self.consecutive += 1
        self.last_file = file
        self.last_error = f"{type(error).__name__}: {error}"
        if file is None or file not in self.files:
            self.skipped += 1
            self.oversized += isinstance(error, ImageTooLargeError)
            if file is not None:
                self.files[file] = self.last_error
            logger.warning(
                "Skipping unreadable image %s (%s); %d skipped so far.",
                file or "<in memory>",
                self.last_error,
                self.skipped,
            )
        if self.consecutive >= self.max_consecutive:
            raise RuntimeError(
                f"{self.consecutive} images in a row failed to load, the last {file or '<in memory>'} with "
                f"{self.last_error}; check the dataset and the transform settings."
            ) from error

    def summary(self, max_files: int = 5) -> str | None:
        """A line naming how many images were skipped, how many over the pixel budget, and the first files; None
        when nothing was skipped."""
        if not self.skipped:
            return None
        names = list(self.files)
        listed = ", ".join(names[:max_files]) + (
            f" and {len(names) - max_files} more" if len(names) > max_files else ""
        )
        return (
            f"Skipped {self.skipped} images ({self.oversized} over the pixel budget, --max_image_pixels; "
            f"{self.skipped - self.oversized} unreadable)" + (f": {listed}." if listed else ".")
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(skipped={self.skipped}, oversized={self.oversized}, last_file={self.last_file!r}, "
            f"last_error={self.last_error!r})"
        )


default_bad_image_counter = BadImageCounter()
"""The counter `preprocess_batch` uses when none is given."""


def preprocess_batch(
    batch: dict[str, list],
    transform: VQGANImageProcessor,
    image_column: str = "image",
    label_column: str | None = None,
    condition_transform: VQGANImageProcessor | None = None,
    condition_column: str | None = None,
    counter: BadImageCounter | None = None,
) -> dict[str, list]:
    """
    Transform a batch of examples (a dict of columns, as `Dataset.with_transform` and `IterableDataset.map` give).

    Args:
        batch (`dict[str, list]`): Columns of the raw examples.
        transform (`VQGANImageProcessor`): Its training transform is applied to `batch[image_column]`.
        label_column (`str`, *optional*): Copied to `labels`.
        condition_transform (`VQGANImageProcessor` with a `condition_type`, *optional*): Computes
            `condition_values`, from the transformed image for derived conditions or from `batch[condition_column]`
            (with the image's crop and flip) for paired ones.
        counter (`BadImageCounter`, *optional*): Counts skipped examples; `default_bad_image_counter` if not given.

    Returns:
        Columns `pixel_values` (tensors of shape `(channels, resolution, resolution)` in [-1, 1]), `valid` (`False`
        for an example whose image failed to load; its tensors are zero placeholders for `collate_fn` to drop), and
        `labels` / `condition_values` when asked for.
    """
    counter = default_bad_image_counter if counter is None else counter
    resolution, channels = transform.resolution, transform.channels
    outputs: dict[str, list] = {"pixel_values": [], "valid": []}
    if label_column is not None:
        outputs["labels"] = [-1 if label is None else label for label in batch[label_column]]
    if condition_transform is not None:
        outputs["condition_values"] = []
    for i, value in enumerate(batch[image_column]):
        try:
            pixel_values, geometry = transform.transform(value)
            if condition_transform is not None:
                paired = None if condition_column is None else batch[condition_column][i]
                condition = condition_transform.condition_map(
                    pixel_values, paired, geometry=geometry, image_processor=transform
                )
        except Exception as error:  # any failure to read one file skips that example, see BadImageCounter
            source = image_source(value)
            if condition_transform is not None and condition_column is not None:
                source = f"{source} (condition {image_source(batch[condition_column][i])})"
            counter.record(source, error)
            outputs["pixel_values"].append(torch.zeros(channels, resolution, resolution))
            outputs["valid"].append(False)
            if condition_transform is not None:
                shape = condition_transform.condition_shape(channels, resolution)
                outputs["condition_values"].append(torch.zeros(shape))
            continue
        counter.record_success()
        outputs["pixel_values"].append(pixel_values)
        outputs["valid"].append(True)
        if condition_transform is not None:
            outputs["condition_values"].append(condition)
    return outputs


def with_image_transform(
    dataset,
    transform: VQGANImageProcessor,
    image_column: str = "image",
    label_column: str | None = None,
    condition_transform=None,
    condition_column: str | None = None,
    counter: BadImageCounter | None = None,
):
    """
    Attach `preprocess_batch` to a `Dataset` (`with_transform`, applied on access) or an `IterableDataset` (`map`),
    or to every split of a `DatasetDict` / `IterableDatasetDict`. Examples then carry the columns `preprocess_batch`
    returns; batch them with `collate_fn`.
    """
    import datasets

    function = partial(
        preprocess_batch,
        transform=transform,
        image_column=image_column,
        label_column=label_column,
        condition_transform=condition_transform,
        condition_column=condition_column,
        counter=counter,
    )
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)(
            {
                name: with_image_transform(
                    split, transform, image_column, label_column, condition_transform, condition_column, counter
                )
                for name, split in dataset.items()
            }
        )
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(function, batched=True, remove_columns=dataset.column_names)
    if isinstance(dataset, datasets.Dataset):
        return dataset.with_transform(function)
    raise TypeError(f"Expected a datasets Dataset, IterableDataset or dict of them, got {type(dataset).__name__}.")


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Stack examples from `preprocess_batch`, dropping those whose image failed to load.

    Returns:
        `pixel_values` of shape `(batch_size, channels, resolution, resolution)`, `labels` of shape `(batch_size,)`
        and `condition_values` of shape `(batch_size, ...)` when present; tensors only, which accelerate needs (it
        reads the batch size from the first value, and concatenates streamed batches for several processes). The
        `BadImageCounter` counts the examples dropped. `batch_size` is 0 when every example failed; a training step
        should then be skipped.
    """
    kept = [example for example in examples if example.get("valid", True)]
    batch: dict[str, Any] = {}
    for key in ("pixel_values", "condition_values"):
        if key in examples[0]:
            # Failed examples hold zero placeholders of the right shape, which keeps an all-failed batch well shaped.
            stacked = torch.stack([torch.as_tensor(example[key]) for example in (kept or examples)])
            batch[key] = stacked if kept else stacked[:0]
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([example["labels"] for example in kept], dtype=torch.long)
    return batch


class SeededDataset(torch.utils.data.Dataset):
    """
    A map-style dataset whose random augmentations are a function of `(seed, epoch, index)` only.

    Before example `index` is read, `transform.generator` is reseeded from `(seed, epoch, index)`, so an example is
    flipped and cropped the same way whichever process, `DataLoader` worker or batch reads it. A resumed run therefore
    repeats the interrupted one exactly, although accelerate's loaders read one batch ahead (a checkpoint's RNG state
    already includes the next batch's draws), and runs on 1 or N processes see the same images.

    Args:
        dataset: a map-style dataset whose transform is `transform` (see `with_image_transform`).
        transform (`VQGANImageProcessor`): the random transform; its `generator` attribute is set here.
        seed (`int`): the run's seed.

    Call `set_epoch` at the start of every epoch (accelerate's loaders do not when their sampler is seedable).
    """

    def __init__(self, dataset, transform: VQGANImageProcessor, seed: int = 0):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        transform.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1, np.uint64)[0]
        self.transform.generator.manual_seed(int(seed))
        return self.dataset[index]
