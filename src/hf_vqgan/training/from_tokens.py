"""Training a prior from a token dataset (`token_dataset`): the tokenizers and processors its metadata names, checked;
its `train` / `validation` splits, map-style or streamed; its classes."""

from __future__ import annotations

import logging
import math

from .sources import DatasetConfigError
from .token_dataset import TOKENS_METADATA, check_tokenizer_matches

logger = logging.getLogger(__name__)


def load_tokenizers(metadata: dict, vqgan_name_or_path: str | None = None, cond_vqgan_name_or_path: str | None = None):
    """`(vqgan, cond_vqgan)` for a prior trained on the token dataset `metadata` describes, frozen and in eval mode.

    The given tokenizers, else those the metadata names (the prior's pipeline needs the tokenizer to decode its
    samples, so it must load from there); either way checked with `check_tokenizer_matches`. `cond_vqgan` is `None`
    for a dataset without condition codes. Raises `DatasetConfigError` naming a tokenizer that cannot be loaded.
    """
    from .presets import load_vqgan

    def load(key: str, given: str | None):
        recorded = metadata.get(key)
        if recorded is None and given is None:
            return None
        name = given or recorded["name_or_path"]
        if given is None:
            what = key.replace("_", " ")
            logger.info(
                "Using the %s %r that the token dataset's metadata names (the pipeline keeps a copy).", what, name
            )
        try:
            return load_vqgan(name).requires_grad_(False).eval()
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            flag = "--vqgan_model_name_or_path" if key == "tokenizer" else "--cond_vqgan_model_name_or_path"
            raise DatasetConfigError(
                f"Cannot load the {key.replace('_', ' ')} {name!r} ({reason}). The prior's pipeline needs the "
                f"tokenizer that made the codes to decode its samples: pass a copy of it with {flag}."
            ) from err

    vqgan = load("tokenizer", vqgan_name_or_path)
    cond_vqgan = load("cond_tokenizer", cond_vqgan_name_or_path)
    check_tokenizer_matches(metadata, vqgan, cond_vqgan)
    return vqgan, cond_vqgan


def load_processors(metadata: dict):
    """`(image_processor, condition_processor)`: the `VQGANImageProcessor`s the codes were made with (the second
    `None` without conditions), rebuilt from the metadata; the pipeline saves them, so sampling preprocesses alike."""
    from ..image_processor import VQGANImageProcessor

    processors = []
    for key in ("image_processor", "condition_processor"):
        settings = metadata.get(key)
        processors.append(None if settings is None else VQGANImageProcessor.from_config(dict(settings)))
    if processors[0] is None:
        raise DatasetConfigError(
            f"The token dataset's metadata has no 'image_processor' settings ({TOKENS_METADATA})."
        )
    return tuple(processors)


def _head(split, count: int):
    from datasets import IterableDataset

    return split.take(count) if isinstance(split, IterableDataset) else split.select(range(count))


def _tail(split, start: int, count: int):
    from datasets import IterableDataset

    return split.skip(start) if isinstance(split, IterableDataset) else split.select(range(start, start + count))


def training_splits(
    tokens,
    metadata: dict,
    *,
    validation_split: float | int | str = 0.1,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
):
    """`({"train": ..., "validation": ...}, number of training rows)` of a token dataset, map-style or streamed.

    The validation split is the dataset's `validation` (or the split named by a string `validation_split`); when it
    has none, the last `validation_split` rows of `train` (a fraction or a count, whole mirrored pairs when the
    dataset has them). `max_train_samples` / `max_eval_samples` keep the first rows. Row counts come from the metadata,
    so a stream needs no pass over the data.
    """
    num_rows = dict(metadata["num_rows"])
    train, train_rows = tokens["train"], num_rows["train"]
    name = validation_split if isinstance(validation_split, str) else "validation"
    if name in tokens and name != "train":
        validation, validation_rows = tokens[name], num_rows.get(name)
    elif isinstance(validation_split, str):
        raise DatasetConfigError(
            f"--validation_split {validation_split!r}: the token dataset has no such split, only {sorted(tokens)}."
        )
    else:
        held = validation_split if isinstance(validation_split, int) else math.ceil(validation_split * train_rows)
        held += held % 2 if metadata.get("tokenize_flips") else 0  # an image and its mirror stay on one side
        if held >= train_rows:
            raise DatasetConfigError(
                f"--validation_split {validation_split} holds out {held} of the token dataset's {train_rows} training "
                "rows (it has no validation split): hold out fewer."
            )
        validation, validation_rows = _tail(train, train_rows - held, held), held
        train, train_rows = _head(train, train_rows - held), train_rows - held
    if max_train_samples is not None and max_train_samples < train_rows:
        train, train_rows = _head(train, max_train_samples), max_train_samples
    if max_eval_samples is not None and (validation_rows is None or max_eval_samples < validation_rows):
        validation = _head(validation, max_eval_samples)
    return {"train": train, "validation": validation}, train_rows


def class_names_and_count(train, metadata: dict) -> tuple[int, list[str] | None]:
    """`(num_classes, class_names)` of a token dataset: the metadata's names, else `label`'s largest value + 1 (a
    stream's labels are read once for it); `(0, None)` without labels."""
    from .data import count_classes

    if not metadata.get("class_column"):
        return 0, None
    names = metadata.get("class_names")
    if names:
        return len(names), list(names)
    labels = None if hasattr(train, "__len__") else {row["label"] for row in train.select_columns(["label"])}
    return count_classes(train, "label", labels), None
