"""Tokenise an image dataset once into code sequences, saved to disk and reused (as LlamaGen pre-extracts codes).

The cache key is a fingerprint of everything that changes the codes (`cache_parts`): the tokenizer's weights and
config, the dataset's own fingerprint, the resolution and crop, the flip augmentation and the condition settings. A
second run with the same inputs loads the saved `datasets.Dataset` instead of running the tokenizer again.
`tokenize_split` is the one per-batch tokenising path: `hf_vqgan.training.extraction.Extraction` runs it on every
process's chunks, for this cache (`load_or_tokenize`) and for `train.py tokenize` alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a model's config and weights."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        # Without the bookkeeping keys (`_name_or_path`, `_diffusers_version`, ...): the same tokenizer read from
        # another folder, or a copy of it inside a pipeline folder, must find the same cache entry.
        settings = {key: value for key, value in dict(config).items() if not key.startswith("_")}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def processor_fingerprint(processor) -> dict | None:
    """The settings of a `VQGANImageProcessor` that change the codes (its config without bookkeeping keys)."""
    if processor is None:
        return None
    return {key: value for key, value in dict(processor.config).items() if not key.startswith("_")}


def check_token_ranges(tokens, codebook_size: int, num_classes: int = 0, cond_codebook_size: int = 0) -> None:
    """
    Check once, when a token dataset is loaded, that every code and label is in range, so that the training step
    can build its inputs without a check (and a host sync) per batch. Raises `ValueError` naming the split, the
    column and the values found. `tokens` is a `DatasetDict` of `indices` / `label` / `cond_indices` columns.
    """
    bounds = {"indices": codebook_size, "label": num_classes, "cond_indices": cond_codebook_size}
    for split_name, split in tokens.items():
        for column in [name for name in bounds if name in split.column_names]:
            low, high = None, None
            for batch in split.with_format("numpy").iter(batch_size=8192):
                values = batch[column]
                if len(values):
                    low = values.min() if low is None else min(low, values.min())
                    high = values.max() if high is None else max(high, values.max())
            if low is not None and (low < 0 or high >= bounds[column]):
                raise ValueError(
                    f"The {split_name!r} token dataset's {column!r} must lie in [0, {bounds[column]}), found values "
                    f"in [{int(low)}, {int(high)}] (a label of -1 is an example without a class)."
                )


def dataset_fingerprint(dataset) -> str:
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError("Only map-style datasets (not streaming ones) can be tokenised into a cache.")
    return fingerprint


def parts_key(parts: dict) -> str:
    """A short hash of `parts`, the settings that change the codes (key order is irrelevant)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenized_cache_path(cache_root: str | os.PathLike, parts: dict) -> Path:
    return Path(cache_root) / f"tokens-{parts_key(parts)}"


def cache_parts(
    vqgan,
    splits: dict,
    image_processor,
    *,
    cond_vqgan=None,
    condition_processor=None,
    flips: bool = False,
    class_column: str | None = None,
    condition: list | None = None,
    max_image_pixels: int | None = None,
    streaming: bool = False,
) -> dict:
    """Everything that changes the codes of `splits` (a dict of split name to dataset): the cache key's parts."""
    return {
        "tokenizer": model_fingerprint(vqgan),
        "cond_tokenizer": model_fingerprint(cond_vqgan) if cond_vqgan else None,
        "data": None if streaming else {name: dataset_fingerprint(split) for name, split in splits.items()},
        "image_processor": processor_fingerprint(image_processor),
        "condition_processor": processor_fingerprint(condition_processor),
        "flips": flips,
        "class_column": class_column,
        "condition": condition,
        "max_image_pixels": max_image_pixels,  # which images are skipped
    }


def token_features(label: bool = False, class_names: list[str] | None = None, cond: bool = False):
    """The `datasets.Features` of a token dataset: `indices` (h*w int64 codes), `label` (a `ClassLabel` carrying
    `class_names` when they are known, else int64; -1 is an example without a class), `cond_indices`."""
    from datasets import ClassLabel, Features, List, Value

    features = {"indices": List(Value("int64"))}
    if label:
        features["label"] = ClassLabel(names=list(class_names)) if class_names else Value("int64")
    if cond:
        features["cond_indices"] = List(Value("int64"))
    return Features(features)


def _interleave(codes: torch.Tensor, mirrored: torch.Tensor | None) -> torch.Tensor:
    """`(B, T)` codes, or with `mirrored` `(2B, T)`: each image's row followed by its mirror's."""
    if mirrored is None:
        return codes
    return torch.stack([codes, mirrored], dim=1).flatten(0, 1)  # (B, 2, T) -> (2B, T)


@torch.no_grad()
def tokenize_split(
    dataset,
    vqgan,
    transform,
    image_column: str,
    *,
    label_column: str | None = None,
    condition_transform=None,
    condition_column: str | None = None,
    cond_vqgan=None,
    flips: bool = False,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    desc: str = "Tokenising",
    class_names: list[str] | None = None,
    counter=None,
    show_progress: bool = True,
):
    """Run the tokenizer over one split (or one chunk of it); returns a `datasets.Dataset` with `indices` (h*w ints)
    and optional `label` / `cond_indices` columns, of `token_features`. With `flips`, each image (and its condition)
    contributes two consecutive rows, the image's then its mirror's, whatever the batch size. Unreadable images are
    skipped and counted by `counter` (a `hf_vqgan.training.data.BadImageCounter`, a fresh one when not given)."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    from .data import BadImageCounter, collate_fn, preprocess_batch

    local_counter = counter is None
    counter = BadImageCounter() if counter is None else counter
    features = token_features(label_column is not None, class_names, condition_transform is not None)
    rows: dict[str, list] = {name: [] for name in features}
    vqgan = vqgan.to(device).eval()
    if cond_vqgan is not None:
        cond_vqgan = cond_vqgan.to(device).eval()
    # `iter` reads map-style and streamed datasets alike; a stream's length is unknown until read.
    num_batches = -(-len(dataset) // batch_size) if isinstance(dataset, Dataset) else None
    for raw in tqdm(
        dataset.iter(batch_size=batch_size),
        desc=desc,
        total=num_batches,
        disable=not show_progress or (num_batches is not None and num_batches <= 1),
    ):
        columns = preprocess_batch(
            raw,
            transform,
            image_column,
            label_column,
            condition_transform,
            condition_column,
            counter,
        )
        examples = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        batch = collate_fn(examples)
        pixels = batch["pixel_values"]  # (B, C, H, W)
        if pixels.shape[0] == 0:
            continue
        codes = vqgan.tokenize(pixels.to(device)).flatten(1)  # (B, h*w)
        mirrored = vqgan.tokenize(pixels.flip(-1).to(device)).flatten(1) if flips else None
        rows["indices"].extend(_interleave(codes, mirrored).cpu().tolist())
        if label_column is not None:
            labels = batch["labels"]  # (B,)
            rows["label"].extend(_interleave(labels[:, None], labels[:, None] if flips else None)[:, 0].tolist())
        if condition_transform is not None:
            condition = batch["condition_values"].to(device)
            cond_codes = cond_vqgan.tokenize(condition).flatten(1)
            cond_mirrored = cond_vqgan.tokenize(condition.flip(-1)).flatten(1) if flips else None
            rows["cond_indices"].extend(_interleave(cond_codes, cond_mirrored).cpu().tolist())
    if local_counter and counter.skipped:
        logger.warning("%s: %s", desc, counter.summary())
    return Dataset.from_dict(rows, features=features)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}


def mark_complete(folder: Path) -> None:
    """Write `folder`'s `COMPLETE` marker: every file in it with its size (see `damaged_cache_file`)."""
    (folder / "COMPLETE").write_text(json.dumps(_file_sizes(folder), indent=2))


def replace_folder(tmp: Path, path: Path) -> None:
    """Move the finished folder `tmp` to `path`, replacing what is there (a damaged or stale copy)."""
    import shutil

    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def damaged_cache_file(path: Path) -> str | None:
    """What is wrong with the saved cache `path`, naming the file (`None` if nothing is). Its `COMPLETE` marker
    lists every file with its size; a marker of older versions (the text "ok") lists none, and passes."""
    marker = (path / "COMPLETE").read_bytes()
    if marker == b"ok":
        return None
    try:
        expected = json.loads(marker)
    except (ValueError, UnicodeDecodeError):
        expected = None
    if not isinstance(expected, dict):
        return f"its marker {path / 'COMPLETE'} is not a JSON list of its files (cut short, or not written by this)"
    for name, size in expected.items():
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        if file.stat().st_size != size:
            return f"{file} has {file.stat().st_size:,} bytes, {size:,} when it was written (truncated or changed)"
    return None


def load_or_tokenize(cache_root, parts: dict, build, accelerator=None):
    """Load the tokenised `DatasetDict` for `parts` from `cache_root`, or build it and save it first.

    `build` is an `hf_vqgan.training.extraction.Extraction`, which every process of `accelerator` runs on its shard
    (into a resumable work folder beside the cache entry; the main process assembles and saves), or a callable
    returning the `DatasetDict`, which the main process runs alone. The other processes wait, then load the same
    files. A saved cache whose files do not match the sizes its `COMPLETE` marker lists is reported (a warning
    naming the file) and tokenised again: the same inputs give the same codes. One that still cannot be read raises
    `CorruptFileError` naming the folder.
    """
    from datasets import load_from_disk

    from ..loading import CorruptFileError
    from .extraction import Extraction, work_folder

    path = tokenized_cache_path(cache_root, parts)
    complete = path / "COMPLETE"

    def cached() -> bool:
        if complete.is_file():
            problem = damaged_cache_file(path)
            if problem is None:
                return True
            logger.warning("The tokenised dataset %s is damaged (%s): tokenising again.", path, problem)
        return False

    def save(dataset) -> None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        dataset.save_to_disk(str(tmp))
        (tmp / "parts.json").write_text(json.dumps(parts, indent=2, sort_keys=True, default=str))
        mark_complete(tmp)
        replace_folder(tmp, path)

    if isinstance(build, Extraction):
        is_main = accelerator is None or accelerator.is_main_process
        # Every process reads the marker before any can rewrite it: all agree whether to extract.
        done = cached()
        if accelerator is not None:
            accelerator.wait_for_everyone()
        if not done:
            logger.info("Tokenising the dataset into %s", path)
            work_dir = work_folder(path)
            dataset = build.run(work_dir, accelerator)
            if is_main:
                save(dataset)
                build.clean_up(work_dir)
            if accelerator is not None:
                accelerator.wait_for_everyone()
    else:

        def _build():
            if not cached():
                logger.info("Tokenising the dataset into %s", path)
                save(build())

        if accelerator is None:
            _build()
        else:
            with accelerator.main_process_first():
                if accelerator.is_main_process:
                    _build()
    logger.info("Using tokenised dataset %s", path)
    try:
        return load_from_disk(str(path)), path
    except (OSError, ValueError, KeyError) as err:  # pyarrow's ArrowInvalid is a ValueError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorruptFileError(
            f"The tokenised dataset {path} cannot be read ({reason}). Delete the folder to tokenise again."
        ) from err
