"""Where training examples come from besides `datasets.load_dataset`, and what is checked once they are open.

- `open_data_files` reads `--data_files`: parquet, arrow, or csv / json / jsonl whose image column holds file paths
  (made absolute against the data file's folder, so a run works from any directory).
- `open_saved_dataset` reads a `save_to_disk` folder passed as `--dataset_name` (`load_dataset` refuses those).
- `check_not_empty` and `check_label_column` refuse, at start-up, splits and class columns that cannot train.

Every refusal is a `DatasetConfigError` (a `ValueError`) that names the value and the fix, raised before the first
training step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence


class DatasetConfigError(ValueError):
    """A dataset that cannot train as configured (a missing column, an empty split, ...), found at start-up."""


DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
"""The `datasets` builder of each data-file extension `--data_files` takes."""


def first_example(dataset) -> dict | None:
    """The first example, or None; a stream's images stay undecoded (a corrupt file is skipped later, not here)."""
    import datasets

    if isinstance(dataset, datasets.IterableDataset) and dataset.features is not None:  # unknown: nothing to decode
        dataset = dataset.decode(False)
    return next(iter(dataset.take(1)), None)


def check_label_column(dataset, column: str, split: str) -> None:
    """Class labels must be integers or a `ClassLabel`: strings or floats would fail only when tokenised."""
    import datasets

    feature = (dataset.features or {}).get(column)
    if isinstance(feature, datasets.ClassLabel):
        return
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith(("int", "uint")):
            return
        found = f"of type {feature.dtype}"
    else:  # a streamed dataset of unknown features: judge by the first value
        value = (first_example(dataset) or {}).get(column)
        if feature is None and (value is None or (isinstance(value, int) and not isinstance(value, bool))):
            return
        found = f"of type {type(value).__name__ if feature is None else feature} (e.g. {value!r})"
    raise DatasetConfigError(
        f"Class column {column!r} of split {split!r} is {found}; it must hold integer labels or be a "
        f"datasets.ClassLabel. Encode it first (`dataset.class_encode_column({column!r})`, then save_to_disk), or "
        "pass the integer column's name."
    )


def check_not_empty(dataset, split: str) -> None:
    """Refuse a split without examples; `split` is how the message names it ("train" gets its own message)."""
    empty = len(dataset) == 0 if hasattr(dataset, "__len__") else first_example(dataset) is None
    if not empty:
        return
    if split == "train":
        raise DatasetConfigError("The training split has no examples; check the dataset path or --data_files.")
    raise DatasetConfigError(
        f"The validation split ({split!r}) has no examples; pass --validation_split as a held-out fraction (0.1), "
        "a number of training examples to hold out (20), or the name of a split that has examples."
    )


def is_saved_dataset(path: str) -> bool:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`load_dataset` refuses those)."""
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
    )


def open_saved_dataset(path: str, streaming: bool):
    """A `save_to_disk` folder as a dataset dict; a single saved `Dataset` becomes the `train` split."""
    import datasets

    saved = datasets.load_from_disk(path)
    if isinstance(saved, datasets.Dataset):
        saved = datasets.DatasetDict({"train": saved})
    if streaming:
        return datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in saved.items()})
    return saved


def parse_data_files(values: str | os.PathLike | Sequence | dict) -> dict[str, list[str]]:
    """
    `--data_files` values as `{split: [files]}`: `FILE` belongs to `train`, `SPLIT=FILE` (e.g.
    `validation=val.parquet`) to `SPLIT`. A dict is returned with each value made a list.
    """
    if isinstance(values, dict):
        return {
            split: [os.fspath(files)] if isinstance(files, str | os.PathLike) else [os.fspath(f) for f in files]
            for split, files in values.items()
        }
    files: dict[str, list[str]] = {}
    for value in [values] if isinstance(values, str | os.PathLike) else values:
        value = os.fspath(value)
        match = None if os.path.exists(value) else re.fullmatch(r"(\w+)=(.+)", value)
        split, path = match.groups() if match else ("train", value)
        files.setdefault(split, []).append(path)
    return files


def _data_files_builder(files: dict[str, list[str]]) -> str:
    """The one `datasets` builder that reads every file, from their extensions."""
    builders = set()
    for split, paths in files.items():
        for path in paths:
            if not any(char in path for char in "*?[") and not os.path.isfile(path):
                raise DatasetConfigError(f"--data_files: the {split} file {path!r} does not exist.")
            extension = os.path.splitext(path)[1].lower()
            if extension not in DATA_FILE_BUILDERS:
                raise DatasetConfigError(
                    f"--data_files: {path!r} is not a data file this loader reads; use one of "
                    f"{', '.join(DATA_FILE_BUILDERS)} (or --train_data_dir for a folder of images)."
                )
            builders.add(DATA_FILE_BUILDERS[extension])
    if len(builders) != 1:
        raise DatasetConfigError(f"--data_files mixes formats ({sorted(builders)}); pass files of one format.")
    return builders.pop()


def open_data_files(data_files, streaming: bool, cache_dir, image_column: str):
    """Data files as a dataset dict; image paths in csv / json files are made absolute (see `_absolute_paths`)."""
    import datasets

    files = parse_data_files(data_files)
    raw = datasets.load_dataset(_data_files_builder(files), data_files=files, cache_dir=cache_dir, streaming=streaming)
    for split in list(raw):
        folder = os.path.dirname(os.path.abspath(files[split][0]))
        raw[split] = _absolute_paths(raw[split], image_column, folder, files[split][0])
    return raw


def _absolute_paths(dataset, column: str, folder: str, data_file: str):
    """
    When `column` holds file paths (strings), join the relative ones to `folder`, the data file's folder, so a csv
    or jsonl next to its images trains from any working directory. Checks that the first image exists.
    """
    import datasets

    feature = (dataset.features or {}).get(column)
    first = (first_example(dataset) or {}).get(column) if feature is None else None
    is_path = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if not (is_path or isinstance(first, str)):
        return dataset  # embedded images (parquet, arrow), or a missing column that `_check_column` reports

    def absolute(batch: dict[str, list]) -> dict[str, list]:
        paths = batch[column]
        return {column: [p if p is None or os.path.isabs(p) else os.path.join(folder, p) for p in paths]}

    dataset = dataset.map(absolute, batched=True)
    path = (first_example(dataset) or {}).get(column)
    if path is not None and not os.path.isfile(path):
        raise DatasetConfigError(
            f"Image {path!r} (column {column!r} of {data_file}) does not exist; paths in a data file are read as "
            f"absolute or relative to the data file's folder ({folder})."
        )
    return dataset
