"""Chunked, resumable, sharded extraction (issue 19): the assembled token dataset does not depend on how many
processes extracted it, on the batch size, or on a run killed half way; finished chunks are kept, damaged ones
redone. The processes of a run are played here one after the other by a stand-in for `accelerate.Accelerator` (the
2-process launches are in tests/examples/test_train_tokenize.py)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.training.extraction import Extraction, work_folder
from hf_vqgan.training.tokenize import tokenize_split
from testing_utils import small_vqgan_config, tiny_vqgan

NAMES = ["circle", "square", "star"]


@dataclass
class ProcessOf:
    """Process `process_index` of `num_processes`, run alone: the barriers pass and the sums are its own counts."""

    process_index: int
    num_processes: int
    device: str = "cpu"

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def wait_for_everyone(self) -> None:
        pass

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor


def _png(image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _splits(num_train: int = 11, bad: tuple[int, ...] = (4,)) -> dict:
    """A `train` split of `num_train` asymmetric PNGs (those at `bad` unreadable) with ClassLabel labels, and a
    `validation` split of 2."""
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=NAMES)})

    def split(n: int, bad_rows=()):
        images = [_png(Image.fromarray(rng.integers(0, 256, (8, 12), dtype=np.uint8), mode="L")) for _ in range(n)]
        for row in bad_rows:
            images[row] = {"bytes": b"not a png", "path": f"broken-{row}.png"}
        return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)

    return {"train": split(num_train, bad), "validation": split(2)}


@pytest.fixture(scope="module")
def vqgan():
    return tiny_vqgan(**small_vqgan_config())


def _extraction(vqgan, splits, **overrides) -> Extraction:
    settings = dict(
        key={"tokenizer": "tiny", "data": {name: split._fingerprint for name, split in splits.items()}},
        label_column="label",
        class_names=NAMES,
        flip_splits=("train",),
        batch_size=2,
        chunk_size=3,
    )
    return Extraction(splits, vqgan, VQGANImageProcessor(16, channels=1), "image", **{**settings, **overrides})


def _rows(dataset_dict) -> dict:
    return {name: split.to_dict() for name, split in dataset_dict.items()}


def test_one_process_gives_what_tokenising_each_split_whole_gives(tmp_path, vqgan):
    splits = _splits()
    tokens = _extraction(vqgan, splits).run(tmp_path / "work")
    for name, flips in (("train", True), ("validation", False)):
        whole = tokenize_split(splits[name], vqgan, VQGANImageProcessor(16, channels=1), "image",
                               label_column="label", flips=flips, class_names=NAMES)  # fmt: skip
        assert tokens[name].to_dict() == whole.to_dict()
        assert tokens[name].features == whole.features
    assert tokens["train"].features["label"].names == NAMES
    # 11 images, one unreadable: 10 kept, each followed by its mirror.
    assert len(tokens["train"]) == 20 and tokens["train"]["label"][:6] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("num_processes", [2, 3, 5])
def test_any_number_of_processes_assembles_the_same_dataset(tmp_path, vqgan, num_processes):
    """11 + 2 rows in chunks of 3 (5 chunks): not divisible by the processes, nor by the batch of 2."""
    splits = _splits()
    reference = _extraction(vqgan, splits).run(tmp_path / "one")
    work = tmp_path / "many"
    extraction = _extraction(vqgan, splits, batch_size=5)
    extraction._prepare(work)  # what the main process does before the first barrier of a run
    for rank in reversed(range(num_processes)):  # the main process last: it assembles
        if rank:
            assert extraction.run(work, ProcessOf(rank, num_processes)) is None
    # Each process wrote only its own chunks (chunk k on process k % n) before the main process ran.
    written = sorted(int(p.name.split("-")[1]) for p in (work / "train").glob("chunk-*"))
    assert written == [k for k in range(4) if k % num_processes]
    tokens = extraction.run(work, ProcessOf(0, num_processes))
    assert _rows(tokens) == _rows(reference)
    assert tokens["train"].features == reference["train"].features
    assert extraction.skipped == {"train": 1, "validation": 0}


def _chunk_times(work) -> dict:
    return {p.relative_to(work).as_posix(): os.stat(p / "COMPLETE").st_mtime_ns for p in work.glob("*/chunk-??????")}


def test_a_killed_run_keeps_its_finished_chunks_and_redoes_a_damaged_one(tmp_path, vqgan, monkeypatch, caplog):
    splits = _splits()
    reference = _extraction(vqgan, splits).run(tmp_path / "reference")
    work = tmp_path / "work"
    extraction = _extraction(vqgan, splits)
    done = []
    original = Extraction._extract_chunk

    def extract_then_die(self, split, index, rows, folder, device):
        if len(done) == 3:
            raise KeyboardInterrupt  # the process dies here (tests/examples kills one for real)
        original(self, split, index, rows, folder, device)
        done.append(folder.relative_to(work).as_posix())

    monkeypatch.setattr(Extraction, "_extract_chunk", extract_then_die)
    with pytest.raises(KeyboardInterrupt):
        extraction.run(work)
    monkeypatch.setattr(Extraction, "_extract_chunk", original)
    before = _chunk_times(work)
    assert sorted(before) == done == ["train/chunk-000000", "train/chunk-000001", "train/chunk-000002"]
    (work / "train" / "chunk-000003.tmp999").mkdir()  # a chunk half written when the process died
    arrow = next((work / "train" / "chunk-000001").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:50])  # cut short after it was written

    redone = []

    def record(self, split, index, *args):
        redone.append((split, index))
        original(self, split, index, *args)

    monkeypatch.setattr(Extraction, "_extract_chunk", record)
    with caplog.at_level("WARNING", logger="hf_vqgan.training.extraction"):
        tokens = extraction.run(work)
    assert f"{arrow} has 50 bytes" in caplog.text and "extracting it again" in caplog.text
    assert redone == [("train", 1), ("train", 3), ("validation", 0)]  # not chunks 0 and 2
    after = _chunk_times(work)
    assert after["train/chunk-000000"] == before["train/chunk-000000"]
    assert after["train/chunk-000002"] == before["train/chunk-000002"]
    assert not list(work.glob("*/*.tmp*"))
    assert _rows(tokens) == _rows(reference)


def test_a_work_folder_of_other_settings_is_discarded_not_resumed(tmp_path, vqgan, caplog):
    splits, work = _splits(), tmp_path / "work"
    _extraction(vqgan, splits).run(work)
    other = _extraction(vqgan, splits, flip_splits=(), key={"tokenizer": "other"})
    with caplog.at_level("WARNING", logger="hf_vqgan.training.extraction"):
        tokens = other.run(work)
    assert "extracted with other settings" in caplog.text
    assert len(tokens["train"]) == 10  # no mirrors: nothing of the first run was kept
    # Another chunk size cuts other chunks: also a new plan.
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_vqgan.training.extraction"):
        _extraction(vqgan, splits, flip_splits=(), key={"tokenizer": "other"}, chunk_size=4).run(work)
    assert "extracted with other settings" in caplog.text


def test_clean_up_and_work_folder(tmp_path, vqgan):
    assert work_folder(tmp_path / "tokens") == tmp_path / ".tokens.extraction"
    extraction = _extraction(vqgan, _splits(num_train=2, bad=()))
    extraction.run(work_folder(tmp_path / "tokens"))
    extraction.clean_up(work_folder(tmp_path / "tokens"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 2 and 0"):
        _extraction(vqgan, {}, chunk_size=0)
