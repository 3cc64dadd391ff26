"""Token datasets: a tokenizer's codes of an image dataset, saved once, shared on the Hub, trained on directly.

A token dataset is a folder that `datasets.load_from_disk` opens as a `DatasetDict` (`train`, and `validation` when
there is one) with the columns

- `indices`: the `h*w` codes of one image, row-major (a list of int64);
- `label`: its class (int64, a `ClassLabel` carrying the class names when they are known; absent without classes);
- `cond_indices`: the codes of its condition map (absent without a condition tokenizer);

plus `hf_vqgan_tokens.json` (`TOKENS_METADATA`: which tokenizer made the codes, at which settings, from which data)
and a dataset card `README.md`. On the Hub the same dataset is a dataset repo of parquet shards
(`data/{split}-00000-of-0000N.parquet`), the card and the metadata file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from .sources import DatasetConfigError
from .tokenize import model_fingerprint

logger = logging.getLogger(__name__)

TOKENS_METADATA = "hf_vqgan_tokens.json"
FORMAT_VERSION = 1
CARD_TAGS = ["hf-vqgan", "vqgan-tokens"]
MAX_SHARD_BYTES = 500 * 2**20  # per parquet file on the Hub, as `datasets.push_to_hub` shards by default
_REQUIRED_TOKENIZER_KEYS = ("name_or_path", "fingerprint", "codebook_size", "latent_shape")


# ------------------------------------------------------------------------------------------------------ metadata
def tokenizer_metadata(vqgan, name_or_path: str, size: int | tuple[int, int]) -> dict:
    """The metadata entry of a tokenizer: `{"name_or_path", "fingerprint", "codebook_size", "latent_shape"}`, the
    latent shape `[h, w]` being that of the images (or condition maps) it tokenised: `size` pixels square, or
    `(height, width)` (a condition tokenizer's maps, `condition_processor.condition_shape()[1:]`)."""
    height, width = (size, size) if isinstance(size, int) else size
    return {
        "name_or_path": str(name_or_path),
        "fingerprint": model_fingerprint(vqgan),
        "codebook_size": int(vqgan.config.codebook_size),
        "latent_shape": list(vqgan.latent_shape(height, width)),
    }


def check_metadata(metadata, where: str) -> dict:
    """Refuse metadata that is not a format-1 token dataset's (`where` names the file in the message)."""
    if not isinstance(metadata, dict):
        raise DatasetConfigError(f"{where} must hold a JSON object, found {type(metadata).__name__}.")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetConfigError(
            f"{where} has format_version {version!r}; this hf_vqgan reads token datasets of format {FORMAT_VERSION} "
            "(a newer one was written by a newer hf_vqgan: upgrade it)."
        )
    for key in ("tokenizer", "cond_tokenizer"):
        entry = metadata.get(key)
        if entry is None and key == "cond_tokenizer":
            continue
        missing = [k for k in _REQUIRED_TOKENIZER_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DatasetConfigError(
                f"{where}: its {key!r} entry lacks {missing}; expected an object with "
                f"{list(_REQUIRED_TOKENIZER_KEYS)}."
            )
    return metadata


def _expected_columns(metadata: dict) -> set[str]:
    columns = {"indices"}
    if metadata.get("class_column"):
        columns.add("label")
    if metadata.get("cond_tokenizer"):
        columns.add("cond_indices")
    return columns


def check_token_splits(dataset_dict, metadata: dict, where: str) -> None:
    """Refuse a dataset whose splits or columns are not what `metadata` describes, naming what is missing and what
    was expected. Map-style splits are also checked for their row counts and the length of a first code row."""
    expected_splits = set(metadata.get("num_rows") or {}) | {"train"}
    missing = sorted(expected_splits - set(dataset_dict))
    if missing:
        raise DatasetConfigError(
            f"The token dataset {where} lacks the split(s) {missing}: its metadata lists {sorted(expected_splits)}, "
            f"the data has {sorted(dataset_dict)}."
        )
    expected = _expected_columns(metadata)
    for name, split in dataset_dict.items():
        columns = split.column_names
        if columns is None:  # a stream whose features are only known once read
            continue
        if set(columns) != expected:
            raise DatasetConfigError(
                f"The {name!r} split of the token dataset {where} has the columns {sorted(columns)}, expected "
                f"{sorted(expected)} (missing {sorted(expected - set(columns))}, unexpected "
                f"{sorted(set(columns) - expected)})."
            )
        if not hasattr(split, "__len__"):
            continue
        recorded = (metadata.get("num_rows") or {}).get(name)
        if recorded is not None and recorded != len(split):
            raise DatasetConfigError(
                f"The {name!r} split of the token dataset {where} has {len(split)} rows, its metadata says {recorded} "
                "(an incomplete copy?)."
            )
        grids = {"indices": metadata["tokenizer"]["latent_shape"]}
        if metadata.get("cond_tokenizer"):
            grids["cond_indices"] = metadata["cond_tokenizer"]["latent_shape"]
        first = split[0] if len(split) else {}
        for column, (height, width) in grids.items():
            if column in first and len(first[column]) != height * width:
                raise DatasetConfigError(
                    f"The {name!r} split of the token dataset {where} has {column!r} rows of {len(first[column])} "
                    f"codes, its tokenizer's {height}x{width} grid has {height * width}."
                )


def check_tokenizer_matches(metadata: dict, vqgan, cond_vqgan=None) -> None:
    """Refuse tokenizers that did not make the codes of the token dataset `metadata` describes.

    Compares `vqgan` (and `cond_vqgan`) with the metadata's `tokenizer` (`cond_tokenizer`): weights and config
    (fingerprint), codebook size, and latent grid at the dataset's resolution. Raises `DatasetConfigError` naming both
    sides of the first difference.
    """
    resolution = metadata.get("resolution") or vqgan.config.sample_size
    pairs = [("tokenizer", vqgan, "--vqgan_model_name_or_path"), ("cond_tokenizer", cond_vqgan, "condition tokenizer")]
    for key, model, flag in pairs:
        recorded = metadata.get(key)
        if recorded is None and model is None:
            continue
        if recorded is None or model is None:
            has = (
                "has no condition codes"
                if recorded is None
                else f"has condition codes of {recorded['name_or_path']!r}"
            )
            given = "one is given" if model is not None else "none is given"
            raise DatasetConfigError(f"The token dataset {has}, but {given} (--cond_vqgan_model_name_or_path).")
        if key == "cond_tokenizer":  # condition maps have their own size: compare the grid the codes were made at
            found = {"codebook_size": model.config.codebook_size, "latent_shape": recorded["latent_shape"]}
        else:
            found = {
                "codebook_size": model.config.codebook_size,
                "latent_shape": list(model.latent_shape(resolution, resolution)),
            }
        found["fingerprint"] = model_fingerprint(model)
        for field in ("codebook_size", "latent_shape", "fingerprint"):  # the plainest difference first
            if found[field] != recorded[field]:
                source = getattr(model.config, "_name_or_path", None) or "the given model"
                raise DatasetConfigError(
                    f"The token dataset was made by the {key.replace('_', ' ')} {recorded['name_or_path']!r} "
                    f"({field} {recorded[field]}), but the {flag} {source!r} has {field} {found[field]}: its codes "
                    "mean something else. Pass the tokenizer that made the dataset, or none to use that one."
                )


# ------------------------------------------------------------------------------------------------------- card
def _settings_rows(metadata: dict) -> list[tuple[str, object]]:
    tokenizer = metadata["tokenizer"]
    cond = metadata.get("cond_tokenizer")
    h, w = tokenizer["latent_shape"]
    rows = [
        ("Tokenizer", f"`{tokenizer['name_or_path']}` (fingerprint `{tokenizer['fingerprint']}`)"),
        ("Codebook size", tokenizer["codebook_size"]),
        ("Codes per image", f"{h * w} ({h}x{w}, row-major)"),
        (
            "Resolution",
            f"{metadata.get('resolution')} px, {'center' if metadata.get('center_crop') else 'random'} crop",
        ),
        ("Mirrored copies", "yes: each image gives two consecutive rows" if metadata.get("tokenize_flips") else "no"),
        ("Class column", f"`{metadata['class_column']}`" if metadata.get("class_column") else "none"),
    ]
    if metadata.get("class_names"):
        names = metadata["class_names"]
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        rows.append(("Classes", shown))
    if cond:
        codes = math.prod(cond["latent_shape"])
        tokenizer = f"`{cond['name_or_path']}` (fingerprint `{cond['fingerprint']}`, {codes} codes)"
        rows.append(("Condition", f"{metadata.get('condition_type')}, tokenised by {tokenizer}"))
    source = metadata.get("source") or {}
    if source.get("dataset_name"):
        rows.append(("Source dataset", f"`{source['dataset_name']}`"))
    for split, count in (metadata.get("num_rows") or {}).items():
        rows.append((f"Rows ({split})", f"{count:,}"))
    return rows


def token_dataset_card(metadata: dict, repo_id: str | None = None) -> str:
    """The dataset card (`README.md`) of a token dataset, from `model_cards/token_dataset.md`: YAML front matter
    (tags, the parquet files of each split on the Hub), the tokenizer and settings, row counts, and how to load it and
    train a prior on it. `repo_id` is the Hub id its examples name (`path/to/tokens` when `None`)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..hub import template_path

    splits = list(metadata.get("num_rows") or {"train": None})
    card_data = DatasetCardData(
        tags=list(CARD_TAGS),
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
    )
    columns = ["its `indices` (the codes of one image)"]
    if metadata.get("class_column"):
        columns.append("its class `label`")
    if metadata.get("cond_tokenizer"):
        columns.append("the `cond_indices` of its condition map")
    card = DatasetCard.from_template(
        card_data,
        template_path=str(template_path("token_dataset")),
        title=repo_id.split("/")[-1] if repo_id else "Token dataset",
        repo_id=repo_id or "path/to/tokens",
        hf_vqgan_version=metadata.get("hf_vqgan_version", ""),
        columns=", ".join(columns[:-1]) + " and " + columns[-1] if len(columns) > 1 else columns[0],
        tokenizer_name=metadata["tokenizer"]["name_or_path"],
        settings=_settings_rows(metadata),
        metadata_file=TOKENS_METADATA,
    )
    return str(card)


# ------------------------------------------------------------------------------------------------------ save
def _with_class_names(split, class_names: list[str] | None):
    """`split` with its `label` column a `ClassLabel` of `class_names` (when there are names and it is not one)."""
    from datasets import ClassLabel

    if not class_names or "label" not in split.column_names or isinstance(split.features["label"], ClassLabel):
        return split
    return split.cast_column("label", ClassLabel(names=list(class_names)))


def save_token_dataset(dataset_dict, output_dir: str | os.PathLike, metadata: dict) -> Path:
    """Save a token `DatasetDict` with its metadata and card to `output_dir`, replacing a token dataset there.

    Args:
        dataset_dict: `train` (and usually `validation`) splits of `indices` / `label` / `cond_indices` columns.
        output_dir: the folder to write; written under a temporary name then renamed, so a killed save leaves the
            previous contents (or nothing), never half a dataset. A folder there that is not a token dataset
            (no `hf_vqgan_tokens.json`) and not empty is refused.
        metadata: see the module docstring and PLAN's format; `format_version`, `num_rows` and `hf_vqgan_version`
            are filled in here. `class_names` (when given) turn `label` into a `ClassLabel` of those names.

    Returns:
        The folder written.
    """
    from .. import __version__

    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / TOKENS_METADATA).is_file():
        raise DatasetConfigError(
            f"{output_dir} exists and is not a token dataset (no {TOKENS_METADATA}): choose an empty or new folder."
        )
    splits = {name: _with_class_names(split, metadata.get("class_names")) for name, split in dataset_dict.items()}
    metadata = {
        **metadata,
        "format_version": FORMAT_VERSION,
        "num_rows": {name: len(split) for name, split in splits.items()},
        "hf_vqgan_version": metadata.get("hf_vqgan_version", __version__),
    }
    check_metadata(metadata, "the metadata given")
    from datasets import DatasetDict

    dataset_dict = DatasetDict(splits)
    check_token_splits(dataset_dict, metadata, str(output_dir))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        dataset_dict.save_to_disk(str(tmp))
        (tmp / TOKENS_METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(token_dataset_card(metadata), encoding="utf-8")
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
            os.replace(output_dir, old)
            os.replace(tmp, output_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("Saved the token dataset %s (%s rows)", output_dir, metadata["num_rows"])
    return output_dir


# ------------------------------------------------------------------------------------------------------ load
def _is_local(path_or_repo_id: str) -> bool:
    path = Path(path_or_repo_id).expanduser()
    return (
        path.exists() or path.is_absolute() or path_or_repo_id.startswith((".", "~")) or path_or_repo_id.count("/") > 1
    )


def _load_local(folder: Path, streaming: bool, cache_dir: str | None):
    """(splits, metadata) of a folder `save_token_dataset` wrote, or of a downloaded copy of a Hub token dataset."""
    import datasets

    if not folder.is_dir():
        raise DatasetConfigError(f"No token dataset at {folder}: the folder does not exist.")
    metadata_file = folder / TOKENS_METADATA
    if not metadata_file.is_file():
        raise DatasetConfigError(
            f"{folder} is not a token dataset: it has no {TOKENS_METADATA} (`train.py tokenize` and "
            "`save_token_dataset` write one next to the data)."
        )
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetConfigError(f"{metadata_file} is not valid JSON ({err}).") from err
    if (folder / "dataset_dict.json").is_file():  # save_to_disk's layout
        dataset_dict = datasets.load_from_disk(str(folder))
        if streaming:
            dataset_dict = datasets.IterableDatasetDict(
                {name: split.to_iterable_dataset() for name, split in dataset_dict.items()}
            )
    else:  # parquet shards and the card's `configs`, as on the Hub
        dataset_dict = datasets.load_dataset(str(folder), streaming=streaming, cache_dir=cache_dir)
    return dataset_dict, metadata


def _load_hub(repo_id: str, streaming: bool, revision: str | None, token: str | None, cache_dir: str | None):
    """(splits, metadata) of the Hub dataset repo `repo_id`; offline, of its snapshot in the Hub cache."""
    import datasets
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        metadata_file = hf_hub_download(repo_id, TOKENS_METADATA, repo_type="dataset", revision=revision, token=token)
    except LocalEntryNotFoundError as err:
        raise DatasetConfigError(
            f"The token dataset {repo_id!r} is neither a local folder nor in the Hub cache, and the Hub cannot be "
            f"reached (offline?): {err}"
        ) from err
    except RepositoryNotFoundError as err:
        raise DatasetConfigError(
            f"No dataset repo {repo_id!r} on the Hub (nor a local folder of that name; a private repo needs a token)."
        ) from err
    except EntryNotFoundError as err:
        raise DatasetConfigError(
            f"The dataset repo {repo_id!r} is not a token dataset: it has no {TOKENS_METADATA}."
        ) from err
    metadata = json.loads(Path(metadata_file).read_text(encoding="utf-8"))
    try:
        dataset_dict = datasets.load_dataset(
            repo_id, revision=revision, token=token, streaming=streaming, cache_dir=cache_dir
        )
    except ConnectionError:
        # Offline (HF_HUB_OFFLINE=1) or unreachable: `datasets` only reuses what it prepared itself, so read the
        # parquet shards of the repo's snapshot in the Hub cache (where the metadata was found just now).
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision, token=token, local_files_only=True)
        logger.info("The Hub cannot be reached: reading the token dataset %s from the Hub cache %s", repo_id, folder)
        dataset_dict = datasets.load_dataset(folder, streaming=streaming, cache_dir=cache_dir)
    return dataset_dict, metadata


def load_token_dataset(
    path_or_repo_id: str | os.PathLike,
    *,
    streaming: bool = False,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
):
    """Open a token dataset and its metadata, checked against each other.

    Args:
        path_or_repo_id: a folder `save_token_dataset` (or `train.py tokenize`) wrote, a downloaded copy of a Hub
            token dataset, or a Hub dataset repo id (`user/name`; read through the Hub cache when offline).
        streaming: give `IterableDataset`s read on the fly instead of map-style `Dataset`s.
        revision, token: of the Hub repo.
        cache_dir: the `datasets` cache for the prepared parquet data (its default when `None`).

    Returns:
        `(splits, metadata)`: a `DatasetDict` (an `IterableDatasetDict` when streaming) and the metadata dict.

    Raises:
        `DatasetConfigError` (a `ValueError`) naming what is missing and what was expected: no such folder or repo,
        no metadata, a missing split, wrong columns, a row count or code length that disagrees with the metadata.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name = str(path_or_repo_id)
    if _is_local(name):
        dataset_dict, metadata = _load_local(Path(name).expanduser(), streaming, cache_dir)
        where = name
    else:
        try:
            validate_repo_id(name)
        except HFValidationError as err:
            raise DatasetConfigError(f"{name!r} is neither an existing folder nor a Hub dataset repo id.") from err
        dataset_dict, metadata = _load_hub(name, streaming, revision, token, cache_dir)
        where = f"{name!r} (Hub)"
    check_metadata(metadata, f"The metadata of {where}")
    check_token_splits(dataset_dict, metadata, where)
    return dataset_dict, metadata


# ------------------------------------------------------------------------------------------------------ push
def write_parquet_shards(dataset_dict, folder: str | os.PathLike, max_shard_bytes: int = MAX_SHARD_BYTES) -> list[str]:
    """Write each split as `data/{split}-{i:05d}-of-{n:05d}.parquet` under `folder` (about `max_shard_bytes` each, in
    row order); returns the paths written, relative to `folder`."""
    written = []
    for name, split in dataset_dict.items():
        num_shards = max(1, min(len(split), math.ceil(split.data.nbytes / max_shard_bytes)))  # no empty shard
        for index in range(num_shards):
            path = f"data/{name}-{index:05d}-of-{num_shards:05d}.parquet"
            Path(folder, path).parent.mkdir(parents=True, exist_ok=True)
            split.shard(num_shards, index, contiguous=True).to_parquet(str(Path(folder, path)))
            written.append(path)
    return written


def shareable_metadata(metadata: dict) -> dict:
    """`metadata` as it is published: the local paths that name its tokenizers and source data reduced to their
    base names (`/home/me/runs/vqgan` -> `vqgan`), as `training_args.json` records them; they say nothing to a reader.
    """
    from .evaluation import shareable_value

    shared = json.loads(json.dumps(metadata, default=str))  # a deep copy
    for key in ("tokenizer", "cond_tokenizer"):
        if shared.get(key):
            shared[key]["name_or_path"] = shareable_value(shared[key]["name_or_path"])
    source = shared.get("source") or {}
    for key in ("dataset_name", "data_files"):
        if source.get(key):
            source[key] = shareable_value(source[key])
    return shared


def push_token_dataset_to_hub(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> str:
    """Publish the token dataset saved at `path` as the Hub dataset repo `repo_id`, in one commit.

    The commit holds exactly the parquet shards of every split (`data/...`), the card (`README.md`, its examples
    naming `repo_id`) and `hf_vqgan_tokens.json` (local paths in it reduced to base names: `shareable_metadata`);
    shards of an earlier push that this one does not rewrite are deleted in the same commit. A tokenizer named by a
    local path is logged: whoever trains on the dataset then passes a copy of it. `private` applies when the repo is
    created; `revision` commits to that branch, `create_pr` opens a pull request instead (not both). Returns the URL
    of the commit (or pull request).
    """
    from ..hub import push_folder_to_hub

    dataset_dict, metadata = load_token_dataset(path)
    shared = shareable_metadata(metadata)
    if shared["tokenizer"]["name_or_path"] != metadata["tokenizer"]["name_or_path"]:
        logger.warning(
            "The tokenizer of %s is a local folder (%s): the pushed dataset names it %r, and whoever trains on it "
            "passes a copy with --vqgan_model_name_or_path (push the tokenizer to the Hub and tokenise with its id "
            "to name it there).",
            path,
            metadata["tokenizer"]["name_or_path"],
            shared["tokenizer"]["name_or_path"],
        )
    metadata = shared
    with tempfile.TemporaryDirectory() as folder:
        files = write_parquet_shards(dataset_dict, folder, max_shard_bytes)
        Path(folder, TOKENS_METADATA).write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
        Path(folder, "README.md").write_text(token_dataset_card(metadata, repo_id=repo_id), encoding="utf-8")
        return push_folder_to_hub(
            folder, repo_id, files=[*files, TOKENS_METADATA, "README.md"], private=private, token=token,
            commit_message=commit_message or "Upload a token dataset with hf_vqgan", create_pr=create_pr,
            revision=revision, repo_type="dataset", delete_patterns=["data/*"],
        )  # fmt: skip
