"""Distributed, resumable extraction of a tokenizer's codes into a token dataset (as LlamaGen extracts codes on all
GPUs, but into one `datasets.DatasetDict`).

Each split is cut into chunks of `chunk_size` consecutive source rows; chunk `k` of the flat list of all splits'
chunks goes to process `k % num_processes`, which tokenises it in batches on its device
(`tokenize.tokenize_split`, the one per-batch code path) and saves it atomically (a temporary folder renamed into
place) as `<work_dir>/<split>/chunk-<k>/`, with a `COMPLETE` marker listing its files and sizes and a `chunk.json`
of its row and skipped-image counts. The main process then concatenates the chunks in order. Because the chunks
depend on the data and `chunk_size` only, the assembled dataset is the same on any number of processes: the same
rows in the dataset's row order (with flips, each image's row and then its mirror's), and the same images skipped
and counted.

A killed run resumes where it stopped: its finished chunks are kept and skipped (a damaged one is named in a warning
and redone), provided the work folder's `plan.json` records the same settings; a folder of other settings is
discarded. Progress: after each round of one chunk per process, the processes sum the images they read (one small
all-reduce per round); the main process shows the total of all processes in one bar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import tokenize as tokenize_lib

logger = logging.getLogger(__name__)

CHUNK_INFO = "chunk.json"
PLAN = "plan.json"


def work_folder(path: str | os.PathLike) -> Path:
    """The resumable work folder of an extraction whose result goes to `path`: a hidden sibling of it."""
    path = Path(path)
    return path.with_name(f".{path.name}.extraction")


def _chunk_folder(work_dir: Path, split: str, index: int) -> Path:
    return work_dir / split / f"chunk-{index:06d}"


def _finished(folder: Path) -> bool:
    """Whether chunk `folder` was written completely; a damaged one is named in a warning (and then redone)."""
    if not (folder / "COMPLETE").is_file():
        return False
    problem = tokenize_lib.damaged_cache_file(folder)
    if problem is not None:
        logger.warning("The extracted chunk %s is damaged (%s): extracting it again.", folder, problem)
    return problem is None


@contextlib.contextmanager
def _quiet_datasets():
    """Without `datasets`' own bar per chunk saved or loaded: the extraction shows one bar for all chunks."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _sum_over_processes(count: int, accelerator) -> int:
    if accelerator is None or accelerator.num_processes == 1:
        return count
    total = accelerator.reduce(torch.tensor([count], device=accelerator.device), reduction="sum")
    return int(total.item())


@dataclass
class Extraction:
    """
    What to tokenise and how: run it with `run(work_dir, accelerator)` on every process.

    Args:
        splits (`dict[str, datasets.Dataset]`): Map-style splits whose `image_column` holds images (undecoded
            values are decoded by `preprocess_batch`, which skips the unreadable ones).
        vqgan, image_processor: The tokenizer and its `VQGANImageProcessor`.
        key (`dict`): The settings that change the codes (`tokenize.cache_parts`); a work folder written under
            other settings is discarded instead of resumed.
        label_column, class_names: A class column copied to `label` (a `ClassLabel` of `class_names` when given).
        cond_vqgan, condition_processor, condition_column: The condition tokenizer, its processor and paired maps.
        flip_splits (`tuple[str, ...]`): Splits whose images also contribute their mirror (the row after each image).
        batch_size (`int`): Images per tokenizer call, per process.
        chunk_size (`int`): Source rows per chunk: the unit of work, of resuming and of progress.
        seed (`int`): Seeds each chunk's random crops (`--random_crop`), so that they do not depend on which
            process reads the chunk.
    """

    splits: dict
    vqgan: torch.nn.Module
    image_processor: object
    image_column: str = "image"
    key: dict = field(default_factory=dict)
    label_column: str | None = None
    class_names: list[str] | None = None
    cond_vqgan: torch.nn.Module | None = None
    condition_processor: object | None = None
    condition_column: str | None = None
    flip_splits: tuple[str, ...] = ()
    batch_size: int = 64
    chunk_size: int = 1024
    seed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Images skipped per split, filled in by `run` on the main process."""

    def __post_init__(self):
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError(f"batch_size and chunk_size must be >= 1, got {self.batch_size} and {self.chunk_size}.")

    def chunks(self) -> list[tuple[str, int, range]]:
        """`(split, index, source rows)` of every chunk, split by split, in row order."""
        return [
            (name, index, range(start, min(start + self.chunk_size, len(split))))
            for name, split in self.splits.items()
            for index, start in enumerate(range(0, len(split), self.chunk_size))
        ]

    def _plan(self) -> dict:
        return {
            "key": tokenize_lib.parts_key(self.key),
            "chunk_size": self.chunk_size,
            "num_rows": {name: len(split) for name, split in self.splits.items()},
        }

    def _prepare(self, work_dir: Path) -> None:
        """Main process, before any chunk: keep a work folder of the same plan (minus unfinished temporary
        folders), discard one of another plan."""
        plan_file = work_dir / PLAN
        if work_dir.exists():
            plan = json.loads(plan_file.read_text()) if plan_file.is_file() else None
            if plan != self._plan():
                logger.warning("Discarding %s: it was extracted with other settings.", work_dir)
                shutil.rmtree(work_dir)
            else:
                for tmp in work_dir.glob("*/*.tmp*"):
                    shutil.rmtree(tmp, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(self._plan(), indent=2))

    @torch.no_grad()
    def _extract_chunk(self, split: str, index: int, rows: range, folder: Path, device) -> None:
        """Tokenise one chunk and save it atomically with its counts and `COMPLETE` marker."""
        from .data import BadImageCounter

        counter = BadImageCounter()
        seed = np.random.SeedSequence([self.seed, list(self.splits).index(split), index]).generate_state(1)[0]
        self.image_processor.generator = torch.Generator().manual_seed(int(seed))
        tokens = tokenize_lib.tokenize_split(
            self.splits[split].select(rows),
            self.vqgan,
            self.image_processor,
            self.image_column,
            label_column=self.label_column,
            condition_transform=self.condition_processor,
            condition_column=self.condition_column,
            cond_vqgan=self.cond_vqgan,
            flips=split in self.flip_splits,
            batch_size=self.batch_size,
            device=device,
            class_names=self.class_names,
            counter=counter,
            show_progress=False,
        )
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        with _quiet_datasets():
            tokens.save_to_disk(str(tmp))
        info = {"start": rows.start, "rows": len(rows), "tokens": len(tokens), "skipped": counter.skipped,
                "oversized": counter.oversized, "files": counter.files}  # fmt: skip
        (tmp / CHUNK_INFO).write_text(json.dumps(info, indent=2))
        tokenize_lib.mark_complete(tmp)
        tokenize_lib.replace_folder(tmp, folder)

    def run(self, work_dir: str | os.PathLike, accelerator=None):
        """
        Tokenise this process's chunks into `work_dir` (skipping finished ones), then, on the main process,
        assemble them. Every process of `accelerator` must call it. Returns the `datasets.DatasetDict` on the main
        process, `None` on the others.
        """
        from tqdm.auto import tqdm

        work_dir = Path(work_dir)
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        device = accelerator.device if accelerator else "cpu"
        chunks = self.chunks()
        if rank == 0:
            self._prepare(work_dir)
            logger.info("Extracting %d chunks of %d images on %d processes in %s", len(chunks), self.chunk_size,
                        world, work_dir)  # fmt: skip
        if accelerator is not None:
            accelerator.wait_for_everyone()
        total = sum(len(split) for split in self.splits.values())
        bar = tqdm(total=total, desc="Extracting codes", unit="img", disable=rank != 0 or not total)
        reused = 0
        for start in range(0, len(chunks), world):  # a round: one chunk per process
            count = 0
            if start + rank < len(chunks):
                split, index, rows = chunks[start + rank]
                folder = _chunk_folder(work_dir, split, index)
                if _finished(folder):
                    reused += 1
                else:
                    self._extract_chunk(split, index, rows, folder, device)
                count = len(rows)
            bar.update(_sum_over_processes(count, accelerator))
        bar.close()
        if reused:
            logger.info("Process %d kept %d chunks extracted by an earlier run.", rank, reused)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return self.assemble(work_dir) if rank == 0 else None

    def assemble(self, work_dir: str | os.PathLike):
        """The finished chunks in `work_dir` concatenated split by split, in row order, as a `DatasetDict`; logs
        the images skipped (and fills `skipped`)."""
        from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk

        from .data import BadImageCounter

        features = tokenize_lib.token_features(
            self.label_column is not None, self.class_names, self.condition_processor is not None
        )
        parts: dict[str, list] = {name: [] for name in self.splits}
        counters = {name: BadImageCounter() for name in self.splits}
        for split, index, _ in self.chunks():
            folder = _chunk_folder(Path(work_dir), split, index)
            if not _finished(folder):
                raise RuntimeError(f"The chunk {folder} is missing or damaged after extraction.")
            info = json.loads((folder / CHUNK_INFO).read_text())
            counters[split].skipped += info["skipped"]
            counters[split].oversized += info["oversized"]
            counters[split].files.update(info["files"])
            with _quiet_datasets():
                parts[split].append(load_from_disk(str(folder)))
        splits = {}
        for name, chunks in parts.items():
            splits[name] = (
                concatenate_datasets(chunks)
                if chunks
                else Dataset.from_dict({column: [] for column in features}, features=features)
            )
            self.skipped[name] = counters[name].skipped
            if counters[name].skipped:
                logger.warning("Extracting %s: %s", name, counters[name].summary())
        return DatasetDict(splits)

    def clean_up(self, work_dir: str | os.PathLike) -> None:
        """Remove the work folder once its chunks are assembled and saved."""
        shutil.rmtree(work_dir, ignore_errors=True)
