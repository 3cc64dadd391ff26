"""Stage 2: train the GPT prior over a frozen tokenizer's codes (class- and/or image-conditional).

    accelerate launch examples/train.py transformer --vqgan_model_name_or_path outputs/vqgan \\
        --class_column label --output_dir outputs/pipeline
    accelerate launch examples/train.py transformer --tokenized_dataset user/tokens --output_dir outputs/pipeline

Reads top to bottom: arguments, Accelerator, tokenizers, data (tokenised once and cached, or a saved token dataset),
the prior, optimizer, prepare, resume, loop, save. What both stages share lives in `hf_vqgan.training`: the shared
flags (`arguments`), the code around each step (`loop.TrainingRun`), checkpoints, data, validation, token datasets.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from pathlib import Path

import torch
from datasets import DatasetDict, IterableDataset

from hf_vqgan import (
    VQGANImageProcessor,
    VQGANModel,
    VQGANPriorConfig,
    VQGANPriorForCausalLM,
    VQGANTransformerPipeline,
)
from hf_vqgan.training import data as data_lib
from hf_vqgan.training import from_tokens
from hf_vqgan.training import token_dataset as token_dataset_lib
from hf_vqgan.training import tokenize as tokenize_lib
from hf_vqgan.training.arguments import add_shared_arguments, check_shared_arguments, dataset_kwargs
from hf_vqgan.training.evaluation import evaluate_prior, save_pipeline_outputs
from hf_vqgan.training.extraction import Extraction
from hf_vqgan.training.loop import (
    TrainingRun,
    adam,
    check_batch_size,
    make_accelerator,
    make_ema,
    make_loader,
    make_scheduler,
    num_update_steps,
    scaled_learning_rate,
    step_optimizer,
)
from hf_vqgan.training.presets import load_vqgan, prior_preset
from hf_vqgan.training.state import position_seed

logger = logging.getLogger("train.transformer")


# ------------------------------------------------------------------------------------------------ arguments
VQGAN_HELP = (
    "A VQGANModel (or pipeline) folder or Hub id: the tokenizer whose codes the prior learns. With "
    "--tokenized_dataset it defaults to the tokenizer the dataset's metadata names (another copy of it may be given; "
    "a different one is refused)."
)
TOKENIZED_DATASET_HELP = (
    "Train on a token dataset (`train.py tokenize` output: a folder or a Hub dataset repo id) instead of tokenising "
    "images: its metadata gives the class names, condition settings, resolution and tokenizer. With --streaming its "
    "rows are read on the fly. The data and tokenisation flags do not apply."
)
# What a token dataset's metadata fixes: given with --tokenized_dataset, these flags contradict it.
TOKEN_DATASET_FIXES = (
    "dataset_name", "dataset_config_name", "train_data_dir", "data_files", "image_column", "class_column",
    "class_names", "resolution", "random_crop", "random_flip", "tokenize_flips", "tokenized_cache_dir",
    "condition_type", "condition_column", "lowres_factor", "max_image_pixels",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This stage's flags (below) and the shared ones (`hf_vqgan.training.arguments`), checked."""
    parser = argparse.ArgumentParser(
        prog="train.py transformer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(stage="transformer")  # recorded in training_args.json
    add_shared_arguments(parser, learning_rate=4.5e-4, betas=(0.9, 0.95))
    g = parser.add_argument_group("prior")
    g.add_argument("--vqgan_model_name_or_path", default=None, help=VQGAN_HELP)
    g.add_argument("--tokenized_dataset", default=None, metavar="PATH_OR_HUB_ID", help=TOKENIZED_DATASET_HELP)
    g.add_argument(
        "--tokenized_dataset_revision", default=None, help="A branch, tag or commit of a Hub token dataset."
    )
    g.add_argument("--preset", default="small", help="digits-tiny, small, taming-imagenet.")
    g.add_argument("--prior_config", default=None, help="A JSON file of VQGANPriorConfig size kwargs.")
    g.add_argument("--weight_decay", type=float, default=0.01, help="Applied to weight matrices only.")
    g.add_argument("--pkeep", type=float, default=1.0, help="taming's token corruption: keep probability.")
    g.add_argument("--class_dropout_prob", type=float, default=0.1, help="Null-class rate (for guidance).")
    g.add_argument("--tokenize_flips", action="store_true", help="Also tokenise mirrored images.")
    g.add_argument("--tokenized_cache_dir", default=None, help="Defaults to ~/.cache/hf_vqgan/tokenized.")
    g.add_argument("--guidance_scale", type=float, default=1.0, help="For the validation samples.")
    g.add_argument("--num_validation_samples", type=int, default=4, help="Per class (or in all, unconditional).")
    g.add_argument("--cond_vqgan_model_name_or_path", default=None, help="Tokenizer of image-like conditions.")
    args = parser.parse_args(argv)
    check_shared_arguments(args)
    check_token_dataset_arguments(parser, args)
    prior_preset(args.preset)  # an unknown name fails here, not after the data and models are loaded
    if not 0.0 <= args.pkeep <= 1.0 or not 0.0 <= args.class_dropout_prob < 1.0:
        raise ValueError(
            f"--pkeep must be in [0, 1] and --class_dropout_prob in [0, 1); got {args.pkeep}, "
            f"{args.class_dropout_prob}."
        )
    if args.tokenized_dataset is None and (args.condition_type is None) != (
        args.cond_vqgan_model_name_or_path is None
    ):
        raise ValueError("--condition_type and --cond_vqgan_model_name_or_path go together.")
    return args


def check_token_dataset_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A tokenizer or a token dataset must be named; with a token dataset, no flag may say how to tokenise."""
    if args.tokenized_dataset is None:
        if args.tokenized_dataset_revision is not None:
            raise ValueError("--tokenized_dataset_revision is the revision of a --tokenized_dataset: pass one.")
        if args.vqgan_model_name_or_path is None:
            raise ValueError(
                "Pass --vqgan_model_name_or_path (the tokenizer whose codes the prior learns), or --tokenized_dataset "
                "(codes tokenised before, which name their tokenizer)."
            )
        return
    given = [f"--{name}" for name in TOKEN_DATASET_FIXES if getattr(args, name) != parser.get_default(name)]
    if given:
        raise ValueError(
            f"--tokenized_dataset {args.tokenized_dataset!r} fixes the data and how it was tokenised (its "
            f"{token_dataset_lib.TOKENS_METADATA} records them), so {', '.join(given)} cannot apply: drop them."
        )


# ------------------------------------------------------------------------------------------------ tokenizers
def load_tokenizers(args):
    """`(vqgan, image_processor, cond_vqgan, condition_processor)` from the flags (the last two `None` without
    conditions), frozen; the processors are the pipeline's."""
    vqgan = load_vqgan(args.vqgan_model_name_or_path).requires_grad_(False).eval()
    resolution = args.resolution or vqgan.config.sample_size
    image_processor = VQGANImageProcessor(
        resolution=resolution, channels=vqgan.config.in_channels, center_crop=not args.random_crop
    )
    image_processor.max_image_pixels = args.max_image_pixels
    cond_vqgan, condition_processor = None, None
    if args.cond_vqgan_model_name_or_path:
        cond_vqgan = load_vqgan(args.cond_vqgan_model_name_or_path).requires_grad_(False).eval()
        condition_processor = build_condition_processor(args, vqgan, cond_vqgan, resolution)
        condition_processor.max_image_pixels = args.max_image_pixels  # paired maps are files too
    return vqgan, image_processor, cond_vqgan, condition_processor


def build_condition_processor(args, vqgan: VQGANModel, cond_vqgan: VQGANModel, resolution: int):
    """The condition processor matching the condition tokenizer, checked against it; saved with the pipeline."""
    if args.condition_type == "lowres" and resolution % args.lowres_factor:
        raise ValueError(f"--lowres_factor {args.lowres_factor} must divide the resolution {resolution}.")
    num_labels = cond_vqgan.config.in_channels if args.condition_type == "segmentation" else None
    processor = VQGANImageProcessor(
        resolution=resolution,
        channels=vqgan.config.in_channels,
        center_crop=not args.random_crop,
        condition_type=args.condition_type,
        num_labels=num_labels,
        lowres_factor=args.lowres_factor,
    )
    expected = processor.condition_channels()
    if cond_vqgan.config.in_channels != expected:
        raise ValueError(
            f"The condition tokenizer reads {cond_vqgan.config.in_channels}-channel maps, but {args.condition_type} "
            f"conditions of this tokenizer's {vqgan.config.in_channels}-channel images have {expected}; was it "
            "trained for another condition type?"
        )
    return processor


# ------------------------------------------------------------------------------------------------------ data
def token_settings(args, vqgan: VQGANModel, splits: dict, image_processor, cond_vqgan, condition_processor) -> dict:
    """What changes the codes of `splits` (`tokenize.cache_parts`): the cache key here, and the settings a
    `train.py tokenize` output records (so that a rerun of the same settings has nothing to do)."""
    return tokenize_lib.cache_parts(
        vqgan,
        splits,
        image_processor,
        cond_vqgan=cond_vqgan,
        condition_processor=condition_processor,
        flips=args.tokenize_flips,
        class_column=args.class_column,
        condition=[args.condition_type, args.condition_column, args.lowres_factor],
        max_image_pixels=args.max_image_pixels,
        streaming=args.streaming,
    )


def tokenize_dataset(args, accelerator, vqgan: VQGANModel, image_processor, cond_vqgan, condition_processor):
    """The `train` and `validation` codes (and labels, condition codes), read from the cache or computed once; the
    number of classes and their names (`None` when they have none)."""
    splits = data_lib.load_image_dataset(
        **dataset_kwargs(args), label_column=args.class_column, streaming=args.streaming
    )
    if args.max_eval_samples:
        splits["validation"] = splits["validation"].take(args.max_eval_samples)
    if args.streaming:  # read once as a stream and tokenised: only the codes are kept, in memory
        logger.info("--streaming: the dataset is tokenised as it is read, not cached (a stream has no fingerprint).")
    parts = token_settings(args, vqgan, splits, image_processor, cond_vqgan, condition_processor)
    columns = dict(label_column=args.class_column, cond_vqgan=cond_vqgan, condition_column=args.condition_column)
    if args.streaming:
        tokens = DatasetDict(
            {
                name: tokenize_lib.tokenize_split(
                    split,
                    vqgan,
                    image_processor,
                    args.image_column,
                    condition_transform=condition_processor,
                    flips=args.tokenize_flips and name == "train",
                    device=accelerator.device,
                    desc=f"Tokenising {name}",
                    **columns,
                )
                for name, split in splits.items()
            }
        )
    else:  # every process extracts its shard of the data; the main process assembles and caches the codes
        extraction = Extraction(
            splits,
            vqgan,
            image_processor,
            args.image_column,
            key=parts,
            condition_processor=condition_processor,
            flip_splits=("train",) if args.tokenize_flips else (),
            seed=args.seed,
            **columns,
        )
        cache_root = args.tokenized_cache_dir or os.path.join(
            os.path.expanduser("~"), ".cache", "hf_vqgan", "tokenized"
        )
        tokens, _ = tokenize_lib.load_or_tokenize(cache_root, parts, extraction, accelerator)
    num_classes, class_names = 0, None
    if args.class_column:
        labels = tokens["train"].unique("label") if args.streaming else None  # a stream has no `unique`
        num_classes = data_lib.count_classes(splits["train"], args.class_column, labels)
        num_classes, class_names = data_lib.class_names(
            splits["train"], args.class_column, num_classes, args.class_names
        )
    check_batch_size(len(tokens["train"]), args, accelerator.num_processes)
    tokenize_lib.check_token_ranges(
        tokens, vqgan.config.codebook_size, num_classes, cond_vqgan.config.codebook_size if cond_vqgan else 0
    )
    return tokens.with_format("torch"), num_classes, class_names


STREAM_SHUFFLE_BUFFER = 10_000  # rows of a streamed token dataset shuffled together (a few MB of codes)


def open_token_dataset(args, accelerator):
    """`(tokenizers, splits, num_classes, class_names, num_train_rows)` of `--tokenized_dataset`: its tokenizers
    (as `load_tokenizers` gives them) checked against its metadata, its `train` / `validation` splits (streamed with
    `--streaming`) in torch format, its classes, and its training rows (from the metadata: a stream is not counted)."""
    with accelerator.main_process_first():  # the main process downloads a Hub dataset; the others read the cache
        tokens, metadata = token_dataset_lib.load_token_dataset(
            args.tokenized_dataset,
            streaming=args.streaming,
            revision=args.tokenized_dataset_revision,
            cache_dir=args.cache_dir,
        )
    vqgan, cond_vqgan = from_tokens.load_tokenizers(
        metadata, args.vqgan_model_name_or_path, args.cond_vqgan_model_name_or_path
    )
    image_processor, condition_processor = from_tokens.load_processors(metadata)
    args.resolution = metadata["resolution"]  # the grid build_prior sizes the prior for; recorded in training_args
    splits, num_train_rows = from_tokens.training_splits(
        tokens,
        metadata,
        validation_split=args.validation_split,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
    )
    num_classes, class_names = from_tokens.class_names_and_count(splits["train"], metadata)
    check_batch_size(num_train_rows, args, accelerator.num_processes)
    if args.streaming:  # a stream has no random access: shuffle through a buffer, reshuffled every epoch
        splits["train"] = splits["train"].shuffle(seed=args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    else:
        cond_codebook_size = cond_vqgan.config.codebook_size if cond_vqgan else 0
        tokenize_lib.check_token_ranges(splits, vqgan.config.codebook_size, num_classes, cond_codebook_size)
    logger.info("Training on the token dataset %s: %s", args.tokenized_dataset, metadata["num_rows"])
    tokenizers = (vqgan, image_processor, cond_vqgan, condition_processor)
    splits = {name: split.with_format("torch") for name, split in splits.items()}
    return tokenizers, splits, num_classes, class_names, num_train_rows


# ------------------------------------------------------------------------------------------------- the prior
def build_prior(args, vqgan: VQGANModel, cond_vqgan, condition_processor, num_classes: int, class_names=None):
    """A fresh prior sized by `--prior_config` or `--preset`, shaped by the tokenizers' grids and codebooks, its
    classes named by `class_names` (saved as the config's `id2label`)."""
    size = json.loads(Path(args.prior_config).read_text()) if args.prior_config else prior_preset(args.preset)
    resolution = args.resolution or vqgan.config.sample_size
    latent_height, latent_width = vqgan.latent_shape(resolution, resolution)
    cond = {}
    if cond_vqgan is not None:
        cond_height, cond_width = condition_processor.condition_shape()[1:]
        cond.update(
            cond_codebook_size=cond_vqgan.config.codebook_size,
            cond_length=math.prod(cond_vqgan.latent_shape(cond_height, cond_width)),
        )
    config = VQGANPriorConfig(
        codebook_size=vqgan.config.codebook_size,
        latent_height=latent_height,
        latent_width=latent_width,
        num_classes=num_classes,
        id2label=dict(enumerate(class_names)) if class_names else None,
        **cond,
        **size,
    )
    return VQGANPriorForCausalLM(config)


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices only: not on biases, norms or the token and position embeddings."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        matrix = parameter.ndim >= 2 and "wte" not in name and "wpe" not in name
        (decay if matrix else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> dict | None:
    """Tokenise the data, train, validate and save the pipeline; returns the final metrics on the main process."""
    accelerator = make_accelerator(args)
    if args.tokenized_dataset:
        tokenizers, tokens, num_classes, class_names, num_train_rows = open_token_dataset(args, accelerator)
    else:
        tokenizers = load_tokenizers(args)
        tokens, num_classes, class_names = tokenize_dataset(args, accelerator, *tokenizers)
        num_train_rows = len(tokens["train"])
    vqgan, image_processor, cond_vqgan, condition_processor = tokenizers
    resolution = args.resolution or vqgan.config.sample_size
    model = build_prior(args, vqgan, cond_vqgan, condition_processor, num_classes, class_names)
    prefix_length = model.config.prefix_length
    lr = scaled_learning_rate(args, accelerator.num_processes)
    optimizer = adam(weight_decay_groups(model, args.weight_decay), args, lr=lr)
    streamed = isinstance(tokens["train"], IterableDataset)  # --tokenized_dataset --streaming: shuffled as read
    train_loader = make_loader(tokens["train"], args.train_batch_size, not streamed, args)
    val_loader = make_loader(tokens["validation"], args.eval_batch_size, False, args)
    max_steps, _ = num_update_steps(args, num_train_rows // args.train_batch_size // accelerator.num_processes)
    scheduler = make_scheduler(args, optimizer, max_steps, accelerator.num_processes)
    ema = make_ema(args, model)

    model, optimizer, scheduler, train_loader = accelerator.prepare(model, optimizer, scheduler, train_loader)
    run = TrainingRun(accelerator, args, max_steps, ema=ema)
    run.resume()
    unwrapped = accelerator.unwrap_model(model)
    vqgan.to(accelerator.device)
    run.start("hf_vqgan-transformer")
    tokens_per_image = math.prod(vqgan.latent_shape(resolution, resolution))
    logger.info(
        "Prior: %d parameters, %d tokens per image, %d classes, %d steps",
        unwrapped.num_parameters(),
        tokens_per_image,
        num_classes,
        max_steps,
    )
    pipeline = VQGANTransformerPipeline(
        vqgan=vqgan,
        transformer=unwrapped,
        cond_vqgan=cond_vqgan,
        image_processor=image_processor,
        condition_processor=condition_processor,
    )

    def validate() -> dict:
        return evaluate_prior(
            pipeline, val_loader, accelerator, args, ema=ema, step=run.state.step, num_classes=num_classes
        )

    generator = torch.Generator(device=accelerator.device)
    model.train()
    for batch in run.batches(train_loader):
        # Class dropout and pkeep draw from a generator reseeded from the batch's position: resumes replay them.
        state = run.state
        generator.manual_seed(position_seed(args.seed, accelerator.process_index, state.epoch, state.batch_in_epoch))
        input_ids, targets = training_inputs(args, unwrapped, batch, prefix_length, generator)
        with accelerator.accumulate(model):
            loss = model(input_ids=input_ids, labels=targets).loss
            accelerator.backward(loss)
            if run.skip_nonfinite({"loss": loss}, model.parameters(), optimizer):  # loss or gradients NaN / Inf
                continue
            step_optimizer(accelerator, args, optimizer, scheduler, model.parameters())
        if accelerator.sync_gradients:
            run.end_step(model, {"loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0]}, validate)

    metrics = run.finish(unwrapped, validate)
    if metrics is not None:
        save_pipeline_outputs(pipeline, args, metrics, resolution)
    accelerator.end_training()
    return metrics


def training_inputs(args, prior: VQGANPriorForCausalLM, batch: dict, prefix_length: int, generator: torch.Generator):
    """(input ids, targets) of shape `(batch_size, prefix + h*w)`: class dropout, pkeep corruption, loss on codes."""
    labels = batch.get("label")
    if labels is not None and args.class_dropout_prob > 0:
        labels = prior.drop_class_labels(labels, args.class_dropout_prob, generator=generator, validate=False)
    # The token dataset's ranges were checked once when it was loaded (`check_token_ranges`): no sync per step.
    input_ids = prior.build_input_ids(
        indices=batch["indices"], class_labels=labels, cond_indices=batch.get("cond_indices"), validate=False
    )
    targets = input_ids.clone()
    targets[:, :prefix_length] = -100  # loss on image tokens only
    if args.pkeep < 1.0:
        input_ids = prior.corrupt_image_tokens(input_ids, args.pkeep, generator=generator)
    return input_ids, targets
