"""Tiny token datasets for the tests: random images tokenised by `training/tokenize.tokenize_split` and saved with
`training/token_dataset.save_token_dataset` (the layout `train.py tokenize` writes), and the Hub cache layout a
pushed one takes once downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.training.token_dataset import TOKENS_METADATA, save_token_dataset, tokenizer_metadata
from hf_vqgan.training.tokenize import processor_fingerprint, tokenize_split

CLASS_NAMES = ["circle", "square", "star"]


def random_image_dataset(num_images: int, seed: int, size: int = 16) -> Dataset:
    """`num_images` random grayscale `size`-pixel images with `label`s cycling through `CLASS_NAMES`."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(num_images)]
    features = Features({"image": Image(), "label": ClassLabel(names=CLASS_NAMES)})

    rows = {"image": [PILImage.fromarray(a, mode="L") for a in images], "label": [i % 3 for i in range(num_images)]}
    return Dataset.from_dict(rows, features=features)


def build_token_dataset(
    folder: str | Path,
    vqgan,
    name_or_path: str,
    *,
    num_train: int = 16,
    num_validation: int = 4,
    classes: bool = True,
    flips: bool = False,
    cond_vqgan=None,
    cond_name_or_path: str | None = None,
) -> tuple[Path, dict]:
    """Tokenise random images with `vqgan` (named `name_or_path` in the metadata) into a token dataset at `folder`;
    with `cond_vqgan`, also their half-resolution `lowres` maps. Returns the folder and the metadata as saved."""
    resolution = vqgan.config.sample_size
    processor = VQGANImageProcessor(resolution=resolution, channels=vqgan.config.in_channels, center_crop=True)
    condition_processor = None
    if cond_vqgan is not None:
        condition_processor = VQGANImageProcessor(
            resolution=resolution, channels=vqgan.config.in_channels, condition_type="lowres", lowres_factor=2
        )
    label_column = "label" if classes else None
    splits = {
        name: tokenize_split(
            random_image_dataset(count, seed), vqgan, processor, "image", label_column=label_column,
            flips=flips and name == "train", condition_transform=condition_processor, cond_vqgan=cond_vqgan,
        )
        for name, count, seed in [("train", num_train, 0), ("validation", num_validation, 1)]
    }  # fmt: skip
    cond_tokenizer = None
    if cond_vqgan is not None:
        cond_size = condition_processor.condition_shape()[1:]
        cond_tokenizer = tokenizer_metadata(cond_vqgan, cond_name_or_path, cond_size)
    metadata = {
        "tokenizer": tokenizer_metadata(vqgan, name_or_path, resolution),
        "cond_tokenizer": cond_tokenizer,
        "image_processor": processor_fingerprint(processor),
        "condition_processor": processor_fingerprint(condition_processor),
        "resolution": resolution,
        "center_crop": True,
        "random_flip": False,
        "tokenize_flips": flips,
        "condition_type": None if cond_vqgan is None else "lowres",
        "class_column": label_column,
        "class_names": CLASS_NAMES if classes else None,
        "source": {"dataset_name": "random-images", "dataset_config_name": None, "data_files": None,
                   "fingerprint": None},
    }  # fmt: skip
    path = save_token_dataset(DatasetDict(splits), folder, metadata)
    return path, json.loads((path / TOKENS_METADATA).read_text())


def as_hub_cache(files: dict[str, bytes], cache: Path, repo_id: str, commit: str = "0" * 40) -> Path:
    """Lay out `files` (`{path in repo: bytes}`, e.g. a recorded upload) as the Hub cache holds a downloaded dataset
    repo: `datasets--{owner}--{name}/snapshots/{commit}/...` and `refs/main` naming the commit. Returns the snapshot."""
    repo_folder = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / commit
    for name, content in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(content)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit)
    return snapshot
