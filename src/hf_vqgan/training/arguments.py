"""The command-line flags both training stages have: data, conditions, optimisation, checkpoints and logging.

Each stage script (`examples/train_vqgan.py`, `examples/train_transformer.py`) defines its own flags in its own
`parse_args` and calls `add_shared_arguments` for these, so every flag of a stage is in one of two visible tables.
"""

from __future__ import annotations

import argparse
import math

from ..conditions import CONDITION_TYPES
from ..image_utils import DEFAULT_MAX_IMAGE_PIXELS

PAIRED_COLUMN_HELP = (
    "The column of paired maps, needed by segmentation (integer label maps, palette PNGs read as labels) and depth "
    "(one-channel float maps). For a local folder, pass --train_data_dir with a metadata.jsonl whose rows name the "
    'image and its map, e.g. {"file_name": "images/0.png", "segmentation_file_name": "maps/0.png"}: the imagefolder '
    "loader turns `<column>_file_name` into an image column `<column>`. Maps must have their image's size."
)

CLASS_NAMES_HELP = (
    "A text file of class names, one per line, class 0 first: saved in the prior's config (`id2label`), so that "
    '`pipe(class_labels="circle")` works. Defaults to the names of a ClassLabel --class_column (an image folder\'s '
    "sub-folders)."
)
DATA_FILES_HELP = (
    "Data files of one format (globs allowed): parquet, arrow, or csv / json / jsonl whose --image_column holds image "
    "paths, absolute or relative to the data file's folder. FILE is the train split; SPLIT=FILE names another "
    "(validation=val.parquet)."
)
VALIDATION_SPLIT_HELP = (
    "The validation split's name, or when the dataset has none, the fraction (0.1) or number (20) of training "
    "examples held out; a streamed dataset of unknown size needs a number."
)
STREAMING_HELP = (
    "Read the dataset as a stream instead of downloading it first. The tokenizer stage then needs --max_train_steps; "
    "the transformer stage tokenises the stream once per run (no cache: a stream has no fingerprint)."
)
TRAIN_BATCH_SIZE_HELP = (
    "Per process. Incomplete batches are dropped, so a run refuses to start when the training split has fewer "
    "examples than one batch on every process."
)


def positive_int(value: str) -> int:
    """An argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def non_negative_float(value: str) -> float:
    """An argparse type: a finite number >= 0."""
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return number


def validation_split(value: str) -> float | int | str:
    """An argparse type for `--validation_split`: a held-out fraction in (0, 1), a count >= 1, or a split name."""
    if value.lstrip("-").isdigit():
        if int(value) < 1:
            raise argparse.ArgumentTypeError(f"a held-out number of examples must be >= 1, got {value}")
        return int(value)
    try:
        fraction = float(value)
    except ValueError:
        return value
    if not 0.0 < fraction < 1.0:
        raise argparse.ArgumentTypeError(f"a held-out fraction must be in (0, 1), got {value}")
    return fraction


# A table, one flag per line: long only because it is one.
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data and condition flags to `parser`: those of both training stages and of `train.py tokenize`."""
    g = parser.add_argument_group("data (defaults to the built-in scikit-learn digits)")
    g.add_argument("--dataset_name", help="A Hub dataset id, a save_to_disk folder, or what load_dataset takes.")
    g.add_argument("--dataset_config_name")
    g.add_argument("--train_data_dir", help="A folder of images (loaded with the `imagefolder` builder).")
    g.add_argument("--data_files", nargs="+", metavar="[SPLIT=]FILE", default=None, help=DATA_FILES_HELP)
    g.add_argument("--image_column", default="image")
    g.add_argument("--class_column", default=None, help="Integer class labels (class-conditional priors).")
    g.add_argument("--class_names", default=None, help=CLASS_NAMES_HELP)
    g.add_argument("--validation_split", type=validation_split, default=0.1, help=VALIDATION_SPLIT_HELP)
    g.add_argument("--resolution", type=positive_int, default=None, help="Defaults to the model's sample_size.")
    g.add_argument("--random_crop", action="store_true", help="Random instead of center crop.")
    g.add_argument("--random_flip", action="store_true", help="Random horizontal flips.")
    g.add_argument("--max_train_samples", type=positive_int, default=None)
    g.add_argument("--max_eval_samples", type=positive_int, default=None, help="Validate on the first N only.")
    g.add_argument("--streaming", action="store_true", help=STREAMING_HELP)
    g.add_argument("--cache_dir", default=None)
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g.add_argument(
        "--max_image_pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="Skip images with more pixels (width x height), read from the file header before decoding: decompression "
        f"bombs. Each skipped file is counted once and named at the end. Default {DEFAULT_MAX_IMAGE_PIXELS:,}.",
    )

    g = parser.add_argument_group("conditions (image-like conditions of a prior, and their tokenizers)")
    g.add_argument("--condition_type", choices=CONDITION_TYPES, default=None)
    g.add_argument("--condition_column", default=None, help=PAIRED_COLUMN_HELP)
    g.add_argument("--lowres_factor", type=int, default=8, help="Downsampling factor of lowres conditions.")


def dataset_kwargs(args: argparse.Namespace) -> dict:
    """The `hf_vqgan.training.data.load_image_dataset` arguments that the data flags (`add_data_arguments`) give;
    the caller adds `label_column` and `streaming`, which differ by stage."""
    return dict(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        data_files=args.data_files,
        image_column=args.image_column,
        validation_split=args.validation_split,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        cache_dir=args.cache_dir,
        condition_column=args.condition_column,
    )


# A table, one flag per line: long only because it is one.
def add_shared_arguments(parser: argparse.ArgumentParser, *, learning_rate: float, betas: tuple[float, float]) -> None:
    """Add the flags both stages share to `parser`; `learning_rate` and `betas` are the stage's defaults."""
    add_data_arguments(parser)

    g = parser.add_argument_group("optimisation")
    g.add_argument("--output_dir", default="outputs")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train_batch_size", type=positive_int, default=32, help=TRAIN_BATCH_SIZE_HELP)
    g.add_argument("--eval_batch_size", type=positive_int, default=64)
    g.add_argument("--max_train_steps", type=positive_int, default=None, help="Overrides --num_train_epochs.")
    g.add_argument("--num_train_epochs", type=positive_int, default=10)
    g.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    g.add_argument("--learning_rate", type=float, default=learning_rate)
    g.add_argument("--scale_lr", action="store_true", help="Multiply the learning rate by the global batch size.")
    g.add_argument("--lr_scheduler", default="constant_with_warmup", help="Any diffusers.optimization scheduler.")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--adam_beta1", type=float, default=betas[0])
    g.add_argument("--adam_beta2", type=float, default=betas[1])
    g.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="0 disables clipping.")
    g.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    g.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights; it is what gets saved.")
    g.add_argument("--ema_decay", type=float, default=0.999)
    g.add_argument("--max_nonfinite_steps", type=positive_int, default=20, help="Stop after N NaN/Inf steps in a row.")

    g = parser.add_argument_group("checkpoints, validation, logging, sharing")
    g.add_argument("--checkpointing_steps", type=positive_int, default=500)
    g.add_argument("--checkpoints_total_limit", type=positive_int, default=None)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    g.add_argument("--validation_steps", type=positive_int, default=500)
    g.add_argument("--logging_steps", type=positive_int, default=10)
    g.add_argument(
        "--report_to",
        default="tensorboard",
        help="Trackers for losses, metrics, validation images and the training curves: tensorboard, wandb, any "
        "other accelerate tracker (scalars only), several comma-separated ('tensorboard,wandb'), all, or none.",
    )
    g.add_argument("--log_jsonl", default=None, help="Also append each step's losses (process mean) to this file.")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", default=None)
    g.add_argument("--hub_private_repo", action="store_true")


def check_shared_arguments(args: argparse.Namespace) -> None:
    """Contradictions among the shared flags that argparse cannot see, reported before anything is loaded."""
    sources = {"--dataset_name": args.dataset_name, "--train_data_dir": args.train_data_dir}
    sources["--data_files"] = args.data_files
    given = [f"{flag} ({value!r})" for flag, value in sources.items() if value]
    if len(given) > 1:
        raise ValueError(f"Pass either {' or '.join(given)}, not both.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. 'user/vqgan-digits').")
    if not 0.0 < args.ema_decay < 1.0:
        raise ValueError(f"--ema_decay must be in (0, 1), got {args.ema_decay}.")
    if args.learning_rate <= 0 or not math.isfinite(args.learning_rate):
        raise ValueError(f"--learning_rate must be a positive number, got {args.learning_rate}.")
    if args.class_names is not None and args.class_column is None:
        raise ValueError(f"--class_names {args.class_names!r} names the classes of a --class_column: pass one.")
    # The transformer stage tokenises a stream before training: its token dataset has a length.
    if args.streaming and args.max_train_steps is None and getattr(args, "stage", None) != "transformer":
        raise ValueError("--streaming datasets have no length: pass --max_train_steps.")
    if args.condition_type in ("segmentation", "depth") and args.condition_column is None:
        raise ValueError(f"--condition_type {args.condition_type} reads paired maps: pass --condition_column.")
    if args.condition_type is not None and args.lowres_factor < 1:
        raise ValueError(f"--lowres_factor must be a positive integer, got {args.lowres_factor}.")
