"""training/from_tokens.py: a prior's splits from a token dataset, map-style or streamed (issue 19). The tokenizer
and class checks run end to end in tests/examples/test_train_from_tokens.py."""

from __future__ import annotations

import pytest
from datasets import DatasetDict, IterableDatasetDict, Value

from hf_vqgan.training.from_tokens import class_names_and_count, training_splits
from hf_vqgan.training.sources import DatasetConfigError
from hf_vqgan.training.token_dataset import load_token_dataset
from testing_utils import small_vqgan_config, tiny_vqgan
from token_datasets import CLASS_NAMES, build_token_dataset


@pytest.fixture(scope="module")
def vqgan():
    return tiny_vqgan(0, **small_vqgan_config())


def _rows(split) -> list[dict]:
    return [dict(row) for row in split]


def test_training_splits_hold_out_whole_mirrored_pairs_when_there_is_no_validation_split(tmp_path, vqgan):
    path, _ = build_token_dataset(tmp_path / "flips", vqgan, "v", num_train=5, flips=True)
    tokens, metadata = load_token_dataset(path)
    assert metadata["num_rows"]["train"] == 10  # five images, each then its mirror
    train_only = DatasetDict(train=tokens["train"])
    metadata = {**metadata, "num_rows": {"train": 10}}
    for stream in (False, True):
        source = train_only if not stream else IterableDatasetDict(train=tokens["train"].to_iterable_dataset())
        splits, rows = training_splits(source, metadata, validation_split=0.25, max_eval_samples=3)
        assert rows == 6  # ceil(2.5) = 3 rows held out, rounded up to 4: two whole pairs
        assert _rows(splits["train"]) == _rows(tokens["train"].select(range(6)))
        assert _rows(splits["validation"]) == _rows(tokens["train"].select(range(6, 9)))
    with pytest.raises(DatasetConfigError, match="holds out 10 of the token dataset's 10 training rows"):
        training_splits(train_only, metadata, validation_split=10)


@pytest.mark.parametrize("stream", [False, True])
def test_classes_come_from_the_metadata_or_else_from_the_labels(tmp_path, vqgan, stream):
    path, _ = build_token_dataset(tmp_path / "tokens", vqgan, "v")
    tokens, metadata = load_token_dataset(path, streaming=stream)
    assert class_names_and_count(tokens["train"], metadata) == (3, CLASS_NAMES)
    unnamed = {**metadata, "class_names": None}
    plain = load_token_dataset(path)[0]["train"].cast_column("label", Value("int64"))  # integers, no names
    plain = plain.to_iterable_dataset() if stream else plain
    assert class_names_and_count(plain, unnamed) == (3, None)  # labels 0, 1, 2: largest + 1
    assert class_names_and_count(tokens["train"], {**metadata, "class_column": None}) == (0, None)
