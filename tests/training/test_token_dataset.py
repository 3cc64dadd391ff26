"""training/token_dataset.py: the token-dataset format (issue 19): save / load round trips, the card, the tokenizer
checks, the errors a bad dataset gets, and the push (intercepted at `HfApi`)."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, DatasetDict, IterableDatasetDict, load_from_disk
from huggingface_hub import DatasetCard

from hf_vqgan.training.sources import DatasetConfigError
from hf_vqgan.training.token_dataset import (
    TOKENS_METADATA,
    check_tokenizer_matches,
    load_token_dataset,
    push_token_dataset_to_hub,
    save_token_dataset,
    token_dataset_card,
)
from hf_vqgan.training.tokenize import model_fingerprint
from hub_recorder import record_hub_calls
from testing_utils import small_vqgan_config, tiny_vqgan
from token_datasets import CLASS_NAMES, as_hub_cache, build_token_dataset


@pytest.fixture(scope="module")
def vqgan():
    return tiny_vqgan(0, **small_vqgan_config())


@pytest.fixture
def saved(tmp_path, vqgan):
    """A class-labelled token dataset (16 train, 4 validation rows) and its metadata."""
    return build_token_dataset(tmp_path / "tokens", vqgan, "user/tiny-vqgan")


def _rows(split) -> list[dict]:
    return [dict(row) for row in split]


def test_save_load_round_trip_is_exact(saved, vqgan):
    path, _ = saved
    assert {p.name for p in path.iterdir()} == {
        "dataset_dict.json",
        "train",
        "validation",
        TOKENS_METADATA,
        "README.md",
    }
    raw = load_from_disk(str(path))  # the layout is plain `save_to_disk`
    tokens, metadata = load_token_dataset(path)
    assert isinstance(tokens, DatasetDict) and set(tokens) == {"train", "validation"}
    assert _rows(tokens["train"]) == _rows(raw["train"]) and len(tokens["train"]) == 16
    assert tokens["train"].features["label"] == ClassLabel(names=CLASS_NAMES)
    assert tokens["train"]["label"] == [i % 3 for i in range(16)]
    assert all(
        len(row["indices"]) == 64 and 0 <= min(row["indices"]) <= max(row["indices"]) < 16 for row in raw["train"]
    )
    assert metadata["format_version"] == 1 and metadata["num_rows"] == {"train": 16, "validation": 4}
    assert metadata["tokenizer"] == {"name_or_path": "user/tiny-vqgan", "fingerprint": model_fingerprint(vqgan),
                                     "codebook_size": 16, "latent_shape": [8, 8]}  # fmt: skip
    assert json.loads((path / TOKENS_METADATA).read_text()) == metadata

    streamed, _ = load_token_dataset(path, streaming=True)
    assert isinstance(streamed, IterableDatasetDict)
    assert _rows(streamed["validation"]) == _rows(raw["validation"])


def test_the_card_states_what_the_metadata_holds(saved):
    path, metadata = saved
    card = DatasetCard((path / "README.md").read_text())
    assert card.data.tags == ["hf-vqgan", "vqgan-tokens"]
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                  {"split": "validation", "path": "data/validation-*"}]  # fmt: skip
    text = card.text
    for fact in [metadata["tokenizer"]["fingerprint"], "`user/tiny-vqgan`", "| Codebook size | 16 |",
                 "64 (8x8, row-major)", "16 px, center crop", "| Rows (train) | 16 |", "| Rows (validation) | 4 |",
                 "circle, square, star", "| Mirrored copies | no |", 'load_token_dataset("path/to/tokens")']:  # fmt: skip
        assert fact in text, fact
    pushed = token_dataset_card(metadata, repo_id="me/digit-tokens")
    assert "--tokenized_dataset me/digit-tokens" in pushed and "# digit-tokens" in pushed


def test_tokenizer_check_accepts_a_copy_and_names_both_sides_of_a_difference(saved, vqgan, tmp_path):
    _, metadata = saved
    vqgan.save_pretrained(tmp_path / "copy")
    check_tokenizer_matches(metadata, type(vqgan).from_pretrained(tmp_path / "copy"))  # another folder, same codes
    other = tiny_vqgan(1, **small_vqgan_config())
    with pytest.raises(DatasetConfigError, match="fingerprint") as error:
        check_tokenizer_matches(metadata, other)
    assert metadata["tokenizer"]["fingerprint"] in str(error.value) and model_fingerprint(other) in str(error.value)
    assert "'user/tiny-vqgan'" in str(error.value)
    with pytest.raises(DatasetConfigError, match="has no condition codes"):
        check_tokenizer_matches(metadata, vqgan, cond_vqgan=other)


def _drop_validation(path):
    shutil.rmtree(path / "validation")
    (path / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))


def _extra_column(path):
    tokens = load_from_disk(str(path))
    tokens = DatasetDict({n: s.add_column("pixels", [0] * len(s)) for n, s in tokens.items()})
    tokens.save_to_disk(str(path.with_name("with_pixels")))
    for split in ("train", "validation"):
        shutil.rmtree(path / split)
        shutil.copytree(path.with_name("with_pixels") / split, path / split)


def _edit_metadata(**changes):
    def edit(path):
        metadata = json.loads((path / TOKENS_METADATA).read_text())
        (path / TOKENS_METADATA).write_text(json.dumps({**metadata, **changes}))

    return edit


def _other_grid(path):
    metadata = json.loads((path / TOKENS_METADATA).read_text())
    metadata["tokenizer"]["latent_shape"] = [4, 4]
    (path / TOKENS_METADATA).write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: (path / TOKENS_METADATA).unlink(), "is not a token dataset: it has no hf_vqgan_tokens.json"),
        (_drop_validation, r"lacks the split\(s\) \['validation'\]: its metadata lists \['train', 'validation'\]"),
        (_extra_column, r"columns \['indices', 'label', 'pixels'\], expected \['indices', 'label'\] .*unexpected "
                        r"\['pixels'\]"),
        (_edit_metadata(class_column=None), r"expected \['indices'\] \(missing \[\], unexpected \['label'\]\)"),
        (_edit_metadata(num_rows={"train": 20, "validation": 4}), "has 16 rows, its metadata says 20"),
        (_other_grid, r"has 'indices' rows of 64 codes, its tokenizer's 4x4 grid has 16"),
        (_edit_metadata(format_version=2), "format_version 2; this hf_vqgan reads token datasets of format 1"),
        (_edit_metadata(tokenizer={"name_or_path": "x"}), r"lacks \['fingerprint', 'codebook_size', 'latent_shape'\]"),
    ],
    ids=["no-metadata", "missing-split", "extra-column", "unexpected-label", "truncated", "other-grid", "newer-format",
         "bad-entry"],
)  # fmt: skip
def test_a_damaged_token_dataset_is_refused_with_what_is_missing(saved, damage, message):
    path, _ = saved
    damage(path)
    with pytest.raises(DatasetConfigError, match=message):
        load_token_dataset(path)


def test_names_that_are_neither_folders_nor_repo_ids_are_refused(tmp_path):
    with pytest.raises(DatasetConfigError, match="the folder does not exist"):
        load_token_dataset(tmp_path / "missing")
    with pytest.raises(DatasetConfigError, match="neither an existing folder nor a Hub dataset repo id"):
        load_token_dataset("not a repo id")


def test_save_replaces_a_token_dataset_but_refuses_other_folders(saved, vqgan, tmp_path):
    path, metadata = saved
    build_token_dataset(path, vqgan, "user/tiny-vqgan", num_train=6, classes=False)  # over the first one
    tokens, metadata = load_token_dataset(path)
    assert metadata["num_rows"] == {"train": 6, "validation": 4} and tokens["train"].column_names == ["indices"]
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]  # no temporary or old folder left behind
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetConfigError, match="is not a token dataset"):
        save_token_dataset(tokens, other, metadata)
    assert (other / "notes.txt").read_text() == "keep me"


def _parquet_rows(content: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(content)).to_pylist()


def test_push_uploads_exactly_the_parquet_shards_card_and_metadata(saved, monkeypatch):
    path, metadata = saved
    hub = record_hub_calls(monkeypatch)
    url = push_token_dataset_to_hub(path, "me/tokens", private=True, token="hf_x", max_shard_bytes=3000)
    assert url == "https://huggingface.co/me/tokens/commit/abc"
    assert hub["create_repo"] == [dict(repo_id="me/tokens", token="hf_x", private=True, exist_ok=True,
                                       repo_type="dataset")]  # fmt: skip
    (upload,) = hub["upload"]
    assert upload["repo_type"] == "dataset" and upload["delete_patterns"] == ["data/*"]
    train_shards = sorted(name for name in upload["files"] if name.startswith("data/train-"))
    assert len(train_shards) > 1 and train_shards[0] == f"data/train-00000-of-{len(train_shards):05d}.parquet"
    assert set(upload["files"]) == {*train_shards, "data/validation-00000-of-00001.parquet", "README.md",
                                    TOKENS_METADATA}  # fmt: skip
    tokens = load_from_disk(str(path))
    assert [row for shard in train_shards for row in _parquet_rows(upload["files"][shard])] == _rows(tokens["train"])
    assert json.loads(upload["files"][TOKENS_METADATA]) == metadata  # a Hub id stays as it is
    assert "--tokenized_dataset me/tokens" in upload["files"]["README.md"].decode()
    push_token_dataset_to_hub(path, "me/tokens", revision="v2", commit_message="Codes at 16 px")
    assert hub["create_branch"] == [dict(repo_id="me/tokens", branch="v2", token=None, exist_ok=True,
                                         repo_type="dataset")]  # fmt: skip
    assert hub["upload"][1]["revision"] == "v2" and hub["upload"][1]["commit_message"] == "Codes at 16 px"


def test_push_names_local_tokenizers_and_data_by_base_name(tmp_path, vqgan, monkeypatch):
    source = tmp_path / "my-images"
    source.mkdir()
    path, metadata = build_token_dataset(tmp_path / "tokens", vqgan, str(tmp_path / "runs" / "vqgan"))
    metadata["source"]["dataset_name"] = str(source)
    (path / TOKENS_METADATA).write_text(json.dumps(metadata))
    hub = record_hub_calls(monkeypatch)
    push_token_dataset_to_hub(path, "me/tokens")
    files = hub["upload"][0]["files"]
    pushed = json.loads(files[TOKENS_METADATA])
    assert pushed["tokenizer"] == {**metadata["tokenizer"], "name_or_path": "vqgan"}  # fingerprint and all kept
    assert pushed["source"]["dataset_name"] == "my-images" and pushed["class_names"] == CLASS_NAMES
    assert str(tmp_path) not in files["README.md"].decode() + files[TOKENS_METADATA].decode()


def test_a_pushed_dataset_loads_by_repo_id_from_the_offline_hub_cache(saved, monkeypatch, tmp_path):
    path, metadata = saved
    hub = record_hub_calls(monkeypatch)
    push_token_dataset_to_hub(path, "me/tokens")
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    snapshot = as_hub_cache(hub["upload"][0]["files"], tmp_path / "hub", "me/tokens")
    downloaded, loaded = load_token_dataset(snapshot)  # a downloaded copy of the repo, opened as a folder
    assert loaded == metadata and _rows(downloaded["train"]) == _rows(load_from_disk(str(path))["train"])
    with pytest.raises(DatasetConfigError, match="neither a local folder nor in the Hub cache"):
        load_token_dataset("me/other-tokens")
    for streaming, revision in [(False, None), (True, None), (False, "0" * 40)]:  # a pinned commit too
        tokens, loaded = load_token_dataset("me/tokens", streaming=streaming, revision=revision)
        assert loaded == metadata
        assert _rows(tokens["train"]) == _rows(load_from_disk(str(path))["train"])
        assert isinstance(tokens, IterableDatasetDict) == streaming
