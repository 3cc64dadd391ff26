"""Stage 1: train a VQGAN tokenizer (pixel + LPIPS + PatchGAN + codebook losses), or a condition tokenizer.

    accelerate launch examples/train.py vqgan --preset digits-tiny --output_dir outputs/vqgan

Reads top to bottom: arguments, Accelerator, models and losses, data, optimizers, prepare, resume, loop, save.
What both stages share lives in `hf_vqgan.training`: the shared flags (`arguments`), the code around each step
(`loop.TrainingRun`), checkpoints, data, validation.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from hf_vqgan import VQGANImageProcessor, VQGANModel
from hf_vqgan.conditions import condition_channels
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.training import data as data_lib
from hf_vqgan.training.arguments import add_shared_arguments, check_shared_arguments
from hf_vqgan.training.evaluation import evaluate_tokenizer, save_tokenizer_outputs
from hf_vqgan.training.loop import (
    ForwardSnapshot,
    TrainingRun,
    adam,
    check_batch_size,
    frozen,
    make_accelerator,
    make_ema,
    make_loader,
    make_scheduler,
    num_update_steps,
    scaled_learning_rate,
    step_optimizer,
)
from hf_vqgan.training.presets import (
    QUANTIZER_FLAGS,
    check_pretrained_quantizer,
    load_vqgan,
    vqgan_preset,
    with_quantizer,
)
from hf_vqgan.training.speedups import prepare_vqgan_for_training
from hf_vqgan.training.state import any_process

logger = logging.getLogger("train.vqgan")


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This stage's flags (below) and the shared ones (`hf_vqgan.training.arguments`), checked."""
    parser = argparse.ArgumentParser(
        prog="train.py vqgan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(stage="vqgan")  # recorded in training_args.json
    add_shared_arguments(parser, learning_rate=1e-4, betas=(0.5, 0.9))
    g = parser.add_argument_group("model")
    g.add_argument("--preset", default=None, help="digits-tiny, taming-imagenet-f16-1024, ...")
    g.add_argument("--model_config", default=None, help="A JSON file of VQGANModel kwargs.")
    g.add_argument("--pretrained_model_name_or_path", default=None, help="Fine-tune this VQGANModel.")
    # FSQ/LFQ (issue 18): the quantizer of a --preset / --model_config (unset: the one it names).
    g.add_argument(
        "--quantizer_type",
        choices=["vq", "fsq", "lfq"],
        default=None,
        help="vq (learned codebook), fsq (finite scalar) or lfq (lookup-free); keeps the network.",
    )
    g.add_argument("--fsq_levels", type=int, nargs="+", default=None, help="FSQ values per dimension, e.g. 8 5 5 5.")
    g.add_argument("--codebook_size", type=int, default=None, help="VQ codebook entries; LFQ: a power of two.")
    g.add_argument("--lfq_entropy_weight", type=float, default=None, help="LFQ entropy penalty weight (0.1).")
    g.add_argument("--lfq_commitment_weight", type=float, default=None, help="LFQ commitment weight (0.25).")
    g.add_argument("--lfq_entropy_temperature", type=float, default=None, help="LFQ soft-assignment temperature.")
    g = parser.add_argument_group("losses")
    g.add_argument("--pixel_loss", choices=["l1", "l2"], default="l1")
    g.add_argument("--pixel_weight", type=float, default=1.0)
    g.add_argument("--perceptual_weight", type=float, default=1.0, help="0 disables LPIPS.")
    g.add_argument("--lpips_vgg_weights", default=None, help="A local torchvision VGG16 weights file for LPIPS.")
    g.add_argument("--disc_weight", type=float, default=0.8, help="0 disables the GAN (a VQVAE baseline).")
    g.add_argument("--disc_start", type=int, default=0, help="Step at which the GAN terms switch on.")
    g.add_argument("--disc_loss", choices=["hinge", "vanilla", "non_saturating"], default="hinge")
    g.add_argument("--disc_learning_rate", type=float, default=None, help="Defaults to --learning_rate.")
    g.add_argument("--disc_num_layers", type=int, default=3)
    g.add_argument("--disc_base_channels", type=int, default=64)
    g.add_argument("--disc_norm", choices=["batch", "group", "instance", "none"], default="batch")
    g.add_argument("--codebook_weight", type=float, default=1.0)
    g = parser.add_argument_group("speed (results unchanged up to float rounding; see benchmarks/README.md)")
    g.add_argument("--channels_last", action="store_true", help="NHWC weights and activations (faster bf16 convs).")
    g.add_argument("--gradient_checkpointing", action="store_true", help="Recompute blocks in backward: less memory.")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder, decoder and discriminator.")
    g.add_argument(
        "--generator_backward",
        choices=["single", "plain"],
        default="single",
        help="single: one backward pass through LPIPS and the discriminator per step (same gradients); "
        "plain: taming's two. fp16, FSDP and DeepSpeed runs use plain.",
    )
    g = parser.add_argument_group("condition tokenizers (see also the shared --condition_type)")
    g.add_argument("--num_labels", type=int, default=None, help="Segmentation classes (labels 0 .. N-1).")
    g.add_argument(
        "--image_channels",
        type=int,
        default=None,
        help="Channels the images are read with: 1 (grayscale) or 3 (RGB). Sets the channels of a --preset or "
        "--model_config tokenizer; condition tokenizers derive their input from them. Defaults to the model's "
        "in_channels.",
    )
    args = parser.parse_args(argv)
    check_shared_arguments(args)
    sources = (args.preset, args.model_config, args.pretrained_model_name_or_path)
    if sum(source is not None for source in sources) > 1:
        raise ValueError(
            "Pass at most one of --preset, --model_config and --pretrained_model_name_or_path; got "
            f"{args.preset!r}, {args.model_config!r} and {args.pretrained_model_name_or_path!r}."
        )
    if args.preset is not None:  # an unknown name fails here, not after the data and models are loaded
        vqgan_preset(args.preset)
    if args.condition_type == "segmentation" and (args.num_labels or 0) < 2:
        raise ValueError(f"--condition_type segmentation needs --num_labels >= 2, got {args.num_labels}.")
    return args


# --------------------------------------------------------------------------------------------- models, losses
def build_model(args: argparse.Namespace) -> tuple[VQGANModel, int, int]:
    """The tokenizer, the number of channels images are read with, and the training resolution."""
    quantizer_flags = {name: getattr(args, name) for name in QUANTIZER_FLAGS}
    if args.pretrained_model_name_or_path:
        model = load_vqgan(args.pretrained_model_name_or_path)
        try:  # FSQ/LFQ (issue 18): a trained tokenizer keeps its quantizer; LFQ loss weights may change
            overrides = check_pretrained_quantizer(dict(model.config), **quantizer_flags)
        except ValueError as error:
            raise data_lib.DatasetConfigError(str(error)) from None
        if overrides:
            model = load_vqgan(args.pretrained_model_name_or_path, **overrides)
    else:
        if args.model_config:
            config = json.loads(Path(args.model_config).read_text())
        else:
            config = vqgan_preset(args.preset or "digits-tiny")
        try:  # FSQ/LFQ (issue 18)
            config = with_quantizer(config, **quantizer_flags)
        except ValueError as error:
            raise data_lib.DatasetConfigError(str(error)) from None
        args.image_channels = args.image_channels or config.get("in_channels", 3)
        if args.condition_type is not None:  # a condition tokenizer reads and writes condition maps
            channels = condition_channels(args.condition_type, args.num_labels, args.image_channels)
            config.update(in_channels=channels, out_channels=channels)
        else:  # a preset or config is an architecture: --image_channels sets its channels (RGB digits-tiny, ...)
            config.update(in_channels=args.image_channels, out_channels=args.image_channels)
        model = VQGANModel(**config)
    if args.condition_type is None and args.image_channels not in (None, model.config.in_channels):  # pretrained
        raise data_lib.DatasetConfigError(
            f"--image_channels {args.image_channels} does not fit {args.pretrained_model_name_or_path!r}, which reads "
            f"{model.config.in_channels}-channel images: drop the flag, or train a new tokenizer (--preset)."
        )
    image_channels = args.image_channels or model.config.in_channels
    resolution = args.resolution or (model.config.sample_size if args.condition_type != "lowres" else None)
    if resolution is None:
        raise ValueError(
            "A lowres condition tokenizer needs --resolution (the size of the images it is derived from)."
        )
    if args.condition_type == "lowres" and resolution % args.lowres_factor:
        raise ValueError(f"--lowres_factor {args.lowres_factor} must divide the resolution {resolution}.")
    return model, image_channels, resolution


def build_loss(args: argparse.Namespace, model: VQGANModel, resolution: int) -> VQGANLoss:
    """The stage-1 objective; segmentation tokenizers train with cross-entropy alone. Its discriminator must fit
    the training images (checked here, at start-up)."""
    segmentation = args.condition_type == "segmentation"
    loss_fn = VQGANLoss(
        pixel_loss="cross_entropy" if segmentation else args.pixel_loss,
        pixel_weight=args.pixel_weight,
        perceptual_weight=0.0 if segmentation else args.perceptual_weight,
        lpips_vgg_weights_path=args.lpips_vgg_weights,
        disc_weight=0.0 if segmentation else args.disc_weight,
        disc_start=args.disc_start,
        disc_loss=args.disc_loss,
        codebook_weight=args.codebook_weight,
        disc_in_channels=model.config.out_channels,
        disc_num_layers=args.disc_num_layers,
        disc_base_channels=args.disc_base_channels,
        disc_norm_type=args.disc_norm,
    )
    check_discriminator_fits(args, loss_fn, resolution)
    return loss_fn


def check_discriminator_fits(args: argparse.Namespace, loss_fn: VQGANLoss, resolution: int) -> None:
    """Refuse at start-up a PatchGAN too deep for the training images (it would fail at the first step)."""
    side = resolution // args.lowres_factor if args.condition_type == "lowres" else resolution
    discriminator = loss_fn.discriminator
    never_runs = args.max_train_steps is not None and args.disc_start >= args.max_train_steps  # GAN terms stay off
    if discriminator is not None and not never_runs and side < discriminator.min_input_size:
        raise data_lib.DatasetConfigError(
            f"--resolution {resolution} gives {side}x{side} inputs, too small for a {args.disc_num_layers}-layer "
            f"discriminator (at least {discriminator.min_input_size} pixels a side): raise --resolution, lower "
            "--disc_num_layers, or pass --disc_weight 0 to train without the GAN term."
        )


# ------------------------------------------------------------------------------------------------------ data
def build_loaders(args: argparse.Namespace, resolution: int, image_channels: int):
    """(train loader, validation loader, the batch key the model reads, the unreadable-image counter)."""
    splits = data_lib.load_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        data_files=args.data_files,
        image_column=args.image_column,
        validation_split=args.validation_split,
        max_train_samples=args.max_train_samples,
        streaming=args.streaming,
        seed=args.seed,
        cache_dir=args.cache_dir,
        condition_column=args.condition_column,
    )
    if args.max_eval_samples:
        splits["validation"] = splits["validation"].take(args.max_eval_samples)
    # The same processor class the sampling pipeline saves: training and sampling preprocess alike.
    condition = None
    if args.condition_type is not None:
        condition = VQGANImageProcessor(
            condition_type=args.condition_type, num_labels=args.num_labels, lowres_factor=args.lowres_factor
        )
    train_transform = VQGANImageProcessor(
        resolution, image_channels, center_crop=not args.random_crop, random_flip=args.random_flip
    )
    val_transform = VQGANImageProcessor(resolution, image_channels, center_crop=True)
    for transform in (train_transform, val_transform, condition):
        if transform is not None:  # larger images are skipped from their header, before decoding
            transform.max_image_pixels = args.max_image_pixels
    bad_images = data_lib.BadImageCounter()

    def transformed(split: str, transform):
        return data_lib.with_image_transform(
            splits[split], transform, args.image_column, None, condition, args.condition_column, bad_images
        )

    train_set = transformed("train", train_transform)
    if not args.streaming:
        # Flips and crops as a function of (seed, epoch, example): resumes are exact, any process count agrees.
        train_set = data_lib.SeededDataset(train_set, train_transform, args.seed)
    shuffle = not args.streaming
    train_loader = make_loader(train_set, args.train_batch_size, shuffle, args, data_lib.collate_fn)
    val_loader = make_loader(
        transformed("validation", val_transform), args.eval_batch_size, False, args, data_lib.collate_fn
    )
    input_key = "pixel_values" if condition is None else "condition_values"
    return train_loader, val_loader, input_key, bad_images


# --------------------------------------------------------------------------------------------------- training
@dataclass
class Prepared:
    """What `accelerator.prepare` returned, by name; the discriminator's three stay None without a GAN."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    discriminator: torch.nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    disc_scheduler: object | None = None


class BackwardMode(NamedTuple):
    """How the generator step runs its backward pass, chosen once per run by `generator_backward_mode`."""

    single_backward: bool  # VQGANLoss.generator_loss(single_backward=...)
    freeze_discriminator: bool  # run the generator's GAN term through a discriminator without parameter gradients
    sharded: bool  # FSDP / DeepSpeed: the generator's GAN term left gradients in the discriminator; drop them


def train(args: argparse.Namespace) -> dict | None:
    """Train, validate and save the tokenizer; returns the final metrics on the main process."""
    accelerator = make_accelerator(args)
    model, image_channels, resolution = build_model(args)
    # The losses before the data: a missing LPIPS backbone must stop the run here, not an hour in.
    loss_fn = build_loss(args, model, resolution)
    train_loader, val_loader, input_key, bad_images = build_loaders(args, resolution, image_channels)
    if not args.streaming:
        check_batch_size(len(train_loader.dataset), args, accelerator.num_processes)

    speedups = dict(channels_last=args.channels_last, gradient_checkpointing=args.gradient_checkpointing)
    prepare_vqgan_for_training(model, loss_fn, **speedups, compile=args.compile)
    lr = scaled_learning_rate(args, accelerator.num_processes)
    batches = None if args.streaming else len(train_loader) // accelerator.num_processes
    max_steps, _ = num_update_steps(args, batches)
    optimizer = adam(model.parameters(), args, lr=lr)
    scheduler = make_scheduler(args, optimizer, max_steps, accelerator.num_processes)
    ema = make_ema(args, model)
    quantizer = model.quantizer

    model, optimizer, scheduler, train_loader = accelerator.prepare(model, optimizer, scheduler, train_loader)
    nets = Prepared(model, optimizer, scheduler)
    if loss_fn.discriminator is not None:
        disc_optimizer = adam(loss_fn.discriminator.parameters(), args, lr=args.disc_learning_rate or lr)
        disc_scheduler = make_scheduler(args, disc_optimizer, max_steps, accelerator.num_processes)
        nets.discriminator, nets.disc_optimizer, nets.disc_scheduler = accelerator.prepare(
            loss_fn.discriminator, disc_optimizer, disc_scheduler
        )
    mode = generator_backward_mode(args, accelerator, loss_fn, nets)
    loss_fn.to(accelerator.device)

    run = TrainingRun(accelerator, args, max_steps, ema=ema, quantizer=quantizer)
    run.resume()
    unwrapped = accelerator.unwrap_model(model)
    run.start("hf_vqgan-vqgan")
    parameters = sum(p.numel() for p in unwrapped.parameters())
    logger.info("VQGAN: %d parameters, %d steps, %dx%d images", parameters, max_steps, resolution, resolution)

    def validate() -> dict:
        return evaluate_tokenizer(
            unwrapped,
            val_loader,
            input_key,
            accelerator,
            ema=ema,
            step=run.state.step,
            output_dir=args.output_dir,
            perceptual=loss_fn.perceptual,
            condition_type=args.condition_type,
        )

    model.train()
    networks = [net for net in (nets.model, nets.discriminator) if net is not None]
    for batch in run.batches(train_loader):
        pixel_values = batch[input_key]
        if any_process(accelerator, pixel_values.shape[0] == 0):  # every image of a batch was unreadable
            continue
        with accelerator.accumulate(*networks):
            result = train_step(run, nets, loss_fn, pixel_values, unwrapped.last_layer_weight, mode)
        if result is None or not accelerator.sync_gradients:
            continue
        out, g, d = result
        logs = {**g.to_log_dict(), **(d.to_log_dict(prefix="disc_") if d is not None else {})}
        logs.update(lr=nets.scheduler.get_last_lr()[0], **quantizer_logs(out), skipped_images=bad_images.skipped)
        run.end_step(model, logs, validate)

    metrics = run.finish(unwrapped, validate)
    if metrics is not None:
        metrics["train_quantizer_usage"] = unwrapped.quantizer.usage_statistics()["usage"]
        metrics["skipped_images"] = bad_images.skipped
        if bad_images.summary():
            logger.warning("%s", bad_images.summary())
        save_tokenizer_outputs(unwrapped, args, metrics, resolution)
    accelerator.end_training()
    return metrics


def quantizer_logs(out) -> dict[str, float]:
    """The quantizer's figures of a training step: perplexity and usage, and LFQ's entropy term (unweighted)."""
    logs = dict(perplexity=float(out.perplexity), usage=float(out.usage))
    if out.entropy_loss is not None:  # FSQ/LFQ (issue 18)
        logs["entropy_loss"] = float(out.entropy_loss.detach())
    return logs


def generator_backward_mode(args, accelerator, loss_fn: VQGANLoss, nets: Prepared) -> BackwardMode:
    """The generator step's backward pass for this run's precision and sharding."""
    from accelerate.utils import DistributedType

    # FSDP and DeepSpeed shard parameters: their modules only run, and backpropagate, through the wrapper.
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    single_backward = args.generator_backward == "single"
    if single_backward and (accelerator.mixed_precision == "fp16" or sharded):
        logger.info("--generator_backward single needs bf16/fp32 and DDP (or one process); using plain.")
        single_backward = False
    use_gan = nets.discriminator is not None
    if use_gan and sharded:
        # Sharded networks only run through their wrapper, so the generator's GAN term leaves gradients on the
        # discriminator; they are dropped before its update, which is only right when every micro-step updates.
        if args.gradient_accumulation_steps > 1:
            raise ValueError(
                f"--gradient_accumulation_steps {args.gradient_accumulation_steps} with a discriminator is not "
                f"supported under {accelerator.distributed_type}; use 1 (and a larger --train_batch_size), or DDP."
            )
        loss_fn.discriminator = nets.discriminator
    # Otherwise the generator's GAN term runs the bare discriminator, whose gradients it does not need (DDP must not
    # wait for them, and accumulated micro-steps must not mix them into the discriminator's), and the discriminator's
    # update runs the prepared one.
    return BackwardMode(single_backward, use_gan and not sharded and not single_backward, sharded)


def train_step(
    run: TrainingRun,
    nets: Prepared,
    loss_fn: VQGANLoss,
    pixel_values: torch.Tensor,
    last_layer: torch.Tensor,
    mode: BackwardMode,
):
    """One micro-step: generator update, then discriminator update. (output, generator loss, discriminator loss or
    None), or None when the generator's loss or gradients were not finite and the step is skipped. A skipped update
    changes nothing: `ForwardSnapshot` puts back the codebook, quantizer statistics and BatchNorm statistics its
    forward pass wrote."""
    accelerator, args, step = run.accelerator, run.args, run.state.step
    snapshot = ForwardSnapshot(nets.model, nets.discriminator)  # the GAN term runs the discriminator in train mode
    out = nets.model(pixel_values)  # one generator forward serves both updates
    with accelerator.autocast(), frozen(loss_fn.discriminator if mode.freeze_discriminator else None):
        g = loss_fn.generator_loss(
            pixel_values,
            out.sample,
            out.quantizer_loss,
            step,
            last_layer=last_layer,
            single_backward=mode.single_backward,
        )
    accelerator.backward(g.total)
    optimizers = (nets.optimizer, nets.disc_optimizer)
    if run.skip_nonfinite({"generator": g.total}, nets.model.parameters(), *optimizers, forward_snapshot=snapshot):
        return None
    step_optimizer(accelerator, args, nets.optimizer, nets.scheduler, nets.model.parameters())
    if nets.discriminator is None:
        return out, g, None
    if mode.sharded:  # drop what the generator's GAN term left in the discriminator
        nets.disc_optimizer.zero_grad(set_to_none=True)
    if not loss_fn.should_update_discriminator(step):
        return out, g, None
    # The discriminator's forward comes after the generator's backward: DDP synchronises only the backward that
    # follows a module's latest forward, so computed earlier its gradients would stay per-process.
    snapshot = ForwardSnapshot(nets.discriminator)
    d = loss_fn.discriminator_loss(pixel_values, out.sample, step, discriminator=nets.discriminator)
    accelerator.backward(d.loss)
    disc_parameters = nets.discriminator.parameters()
    if run.skip_nonfinite({"discriminator": d.loss}, disc_parameters, nets.disc_optimizer, forward_snapshot=snapshot):
        return out, g, None
    step_optimizer(accelerator, args, nets.disc_optimizer, nets.disc_scheduler, nets.discriminator.parameters())
    return out, g, d
