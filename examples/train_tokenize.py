"""Extract a tokenizer's codes of an image dataset into a token dataset, on every process (issue 19).

    accelerate launch examples/train.py tokenize --vqgan_model_name_or_path outputs/vqgan \\
        --class_column label --output_dir outputs/tokens

Every process tokenises its own chunks of each split in batches on its device; the main process assembles one
`datasets.DatasetDict` (`train`, `validation`) in the dataset's row order, the same on any number of processes, and
saves it to `--output_dir` with its metadata (`hf_vqgan_tokens.json`: the tokenizer's name and fingerprint, the
resolution and settings) and a dataset card. `datasets.load_from_disk(OUTPUT_DIR)` opens it; the transformer stage
trains from it with `--tokenized_dataset OUTPUT_DIR`. A killed run started again with the same flags keeps the
chunks it finished (in the hidden folder `.NAME.extraction` beside `--output_dir`) and does the rest. Reads top to
bottom: arguments, Accelerator, tokenizers, data, extraction, save.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from accelerate import Accelerator

import train_transformer as transformer_stage  # examples/train_transformer.py: the same tokenizers and settings key
from hf_vqgan.training import data as data_lib
from hf_vqgan.training import tokenize as tokenize_lib
from hf_vqgan.training.arguments import add_data_arguments, dataset_kwargs, positive_int
from hf_vqgan.training.extraction import Extraction, work_folder
from hf_vqgan.training.sources import DatasetConfigError
from hf_vqgan.training.token_dataset import (
    TOKENS_METADATA,
    push_token_dataset_to_hub,
    save_token_dataset,
    tokenizer_metadata,
)

logger = logging.getLogger("train.tokenize")
TOKENIZER_FLAGS = ("vqgan_model_name_or_path", "cond_vqgan_model_name_or_path")


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This stage's flags: the data and condition flags of the training stages, and the extraction's own."""
    parser = argparse.ArgumentParser(
        prog="train.py tokenize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(stage="tokenize")
    add_data_arguments(parser)
    g = parser.add_argument_group("extraction")
    g.add_argument("--vqgan_model_name_or_path", required=True, help="A VQGANModel (or pipeline) folder or Hub id.")
    g.add_argument("--cond_vqgan_model_name_or_path", default=None, help="Tokenizer of image-like conditions.")
    g.add_argument("--output_dir", required=True, help="The token dataset's folder (new, or a token dataset).")
    g.add_argument("--tokenize_flips", action="store_true", help="Also tokenise mirrored training images.")
    g.add_argument("--batch_size", type=positive_int, default=64, help="Images per tokenizer call, per process.")
    g.add_argument("--chunk_size", type=positive_int, default=1024, help="Images per chunk: the unit of resuming.")
    g.add_argument("--seed", type=int, default=0, help="Of the held-out split, --max_train_samples, random crops.")
    g.add_argument("--overwrite_output_dir", action="store_true", help="Replace a token dataset of other settings.")
    g.add_argument(
        "--push_to_hub", action="store_true", help="Publish the token dataset as the Hub dataset repo --hub_model_id."
    )
    g.add_argument("--hub_model_id", default=None, help="The dataset repo to push to, e.g. 'user/digits-tokens'.")
    g.add_argument("--hub_private_repo", action="store_true", help="Create the dataset repo as private.")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (a dataset repo id, e.g. 'user/digits-tokens').")
    refused = {
        "--streaming": "a stream has no fingerprint to resume by; extract from the map-style dataset",
        "--random_flip": "a random flip is drawn once and kept; pass --tokenize_flips for both orientations",
    }
    for flag, reason in refused.items():
        if getattr(args, flag[2:]):
            raise ValueError(f"{flag} does not apply to `train.py tokenize`: {reason}.")
    if (args.condition_type is None) != (args.cond_vqgan_model_name_or_path is None):
        raise ValueError("--condition_type and --cond_vqgan_model_name_or_path go together.")
    if args.condition_type in ("segmentation", "depth") and args.condition_column is None:
        raise ValueError(f"--condition_type {args.condition_type} reads paired maps: pass --condition_column.")
    if args.class_names is not None and args.class_column is None:
        raise ValueError(f"--class_names {args.class_names!r} names the classes of a --class_column: pass one.")
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output_dir {args.output_dir!r} is a file; expected a new folder or a token dataset.")
    if output.is_dir() and any(output.iterdir()) and not (output / TOKENS_METADATA).is_file():
        raise ValueError(
            f"--output_dir {args.output_dir!r} holds other files (no {TOKENS_METADATA}); expected a new or empty "
            "folder, or a token dataset to update."
        )
    return args


# ------------------------------------------------------------------------------------------------ tokenizers
def load_tokenizers(args):
    """`(vqgan, image_processor, cond_vqgan, condition_processor)` as the transformer stage loads them, frozen; a
    tokenizer that cannot be loaded, or a condition tokenizer that does not fit, raises `DatasetConfigError`."""
    try:
        return transformer_stage.load_tokenizers(args)
    except OSError as error:  # no such folder or Hub repo, or no model in it
        given = [f"--{flag} {getattr(args, flag)!r}" for flag in TOKENIZER_FLAGS if getattr(args, flag)]
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetConfigError(f"{' or '.join(given)} cannot be loaded as a VQGANModel: {reason}") from error
    except ValueError as error:  # e.g. a condition tokenizer of another condition type
        raise DatasetConfigError(str(error)) from error


# ------------------------------------------------------------------------------------------------------ data
def load_splits(args):
    """`(splits, class_names)`: the map-style `train` / `validation` splits and the class names (`None` when
    unknown), as the transformer stage reads them."""
    splits = data_lib.load_image_dataset(**dataset_kwargs(args), label_column=args.class_column)
    if args.max_eval_samples:
        splits["validation"] = splits["validation"].take(args.max_eval_samples)
    class_names = None
    if args.class_column:
        num_classes = data_lib.count_classes(splits["train"], args.class_column)
        _, class_names = data_lib.class_names(splits["train"], args.class_column, num_classes, args.class_names)
    return dict(splits), class_names


def token_metadata(args, extraction: Extraction, resolution: int) -> dict:
    """The token dataset's `hf_vqgan_tokens.json` (PLAN's format; `save_token_dataset` adds the row counts)."""
    cond_tokenizer = None
    if extraction.cond_vqgan is not None:  # its maps have their own size (lowres maps are smaller)
        cond_size = tuple(extraction.condition_processor.condition_shape()[1:])
        cond_tokenizer = tokenizer_metadata(extraction.cond_vqgan, args.cond_vqgan_model_name_or_path, cond_size)
    return {
        "tokenizer": tokenizer_metadata(extraction.vqgan, args.vqgan_model_name_or_path, resolution),
        "cond_tokenizer": cond_tokenizer,
        "image_processor": tokenize_lib.processor_fingerprint(extraction.image_processor),
        "condition_processor": tokenize_lib.processor_fingerprint(extraction.condition_processor),
        "resolution": resolution,
        "center_crop": not args.random_crop,
        "random_flip": False,
        "tokenize_flips": args.tokenize_flips,
        "condition_type": args.condition_type,
        "class_column": args.class_column,
        "class_names": extraction.class_names,
        "source": {
            "dataset_name": args.dataset_name or args.train_data_dir or (None if args.data_files else "digits"),
            "dataset_config_name": args.dataset_config_name,
            "data_files": args.data_files,
            "fingerprint": extraction.key["data"],
        },
        "settings_key": tokenize_lib.parts_key(extraction.key),  # what a rerun compares to skip the work
        "skipped_images": dict(extraction.skipped),
    }


def publish(args: argparse.Namespace, output: Path) -> None:
    """With `--push_to_hub`, publish the saved token dataset as a Hub dataset repo (parquet shards, card, metadata)."""
    if args.push_to_hub:
        url = push_token_dataset_to_hub(output, args.hub_model_id, private=args.hub_private_repo or None)
        logger.info("Pushed the token dataset to %s", url)


# ---------------------------------------------------------------------------------------------------- extract
def extract(args: argparse.Namespace) -> dict | None:
    """Tokenise the dataset on every process and save the token dataset; returns its row counts (main process)."""
    accelerator = Accelerator()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    vqgan, image_processor, cond_vqgan, condition_processor = load_tokenizers(args)
    resolution = image_processor.resolution
    splits, class_names = load_splits(args)
    key = transformer_stage.token_settings(args, vqgan, splits, image_processor, cond_vqgan, condition_processor)
    output = Path(args.output_dir)
    metadata_file = output / TOKENS_METADATA
    if metadata_file.is_file():
        previous = json.loads(metadata_file.read_text(encoding="utf-8"))
        if previous.get("settings_key") == tokenize_lib.parts_key(key) and previous.get("class_names") == class_names:
            logger.info(
                "%s already holds these codes (same tokenizer, data and settings): nothing to extract.", output
            )
            if accelerator.is_main_process:
                publish(args, output)
            return {"num_rows": previous.get("num_rows")}
        if not args.overwrite_output_dir:
            raise DatasetConfigError(
                f"--output_dir {str(output)!r} holds a token dataset of other settings (tokenizer, data or flags): "
                "pass another --output_dir, or --overwrite_output_dir to replace it."
            )
    extraction = Extraction(
        splits,
        vqgan,
        image_processor,
        args.image_column,
        key=key,
        label_column=args.class_column,
        class_names=class_names,
        cond_vqgan=cond_vqgan,
        condition_processor=condition_processor,
        condition_column=args.condition_column,
        flip_splits=("train",) if args.tokenize_flips else (),
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        seed=args.seed,
    )
    tokens = extraction.run(work_folder(output), accelerator)
    summary = None
    if accelerator.is_main_process:
        save_token_dataset(tokens, output, token_metadata(args, extraction, resolution))
        extraction.clean_up(work_folder(output))
        publish(args, output)
        summary = {"num_rows": {name: len(split) for name, split in tokens.items()}, "skipped": extraction.skipped}
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
