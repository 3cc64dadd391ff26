#!/usr/bin/env python
"""Train a VQGAN tokenizer (stage 1) or its autoregressive prior (stage 2) with accelerate and datasets.

    accelerate launch examples/train.py vqgan --preset digits-tiny --output_dir outputs/vqgan
    accelerate launch examples/train.py transformer --vqgan_model_name_or_path outputs/vqgan \
        --class_column label --output_dir outputs/pipeline

With no dataset option both stages use the built-in scikit-learn digits. `--help` on each stage lists everything.
The script orchestrates; losses, data, metrics, checkpointing and tokenisation live in `hf_vqgan`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from hf_vqgan import VQGANModel
from hf_vqgan.losses import LPIPSWeightsUnavailableError
from hf_vqgan.training import conditions as cond_lib
from hf_vqgan.training import data as data_lib
from hf_vqgan.training.checkpointing import CheckpointManager
from hf_vqgan.training.loop import (
    NonFiniteLossError,
    TrainingState,
    adam,
    add_data_arguments,
    add_run_arguments,
    all_finite,
    any_process,
    check_run_arguments,
    inject_nonfinite_for_tests,
    kill_for_tests_at_step,
    log_step_jsonl,
    make_accelerator,
    num_update_steps,
    position_seed,
    record_nonfinite,
)
from hf_vqgan.training.presets import prior_preset, vqgan_preset

logger = logging.getLogger("train")

PAIRED_COLUMN_HELP = (
    "The column of paired maps, needed by segmentation (integer label maps, palette PNGs read as labels) and depth "
    "(one-channel float maps). For a local folder, pass --train_data_dir with a metadata.jsonl whose rows name the "
    'image and its map, e.g. {"file_name": "images/0.png", "segmentation_file_name": "maps/0.png"}: the imagefolder '
    "loader turns `<column>_file_name` into an image column `<column>`. Maps must have their image's size."
)


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", required=True)

    v = stages.add_parser("vqgan", help="Stage 1: the tokenizer (LPIPS + PatchGAN + codebook losses).")
    add_data_arguments(v)
    add_run_arguments(v, learning_rate=1e-4, betas=(0.5, 0.9))
    g = v.add_argument_group("model")
    g.add_argument("--preset", default=None, help="digits-tiny, taming-imagenet-f16-1024, ...")
    g.add_argument("--model_config", default=None, help="A JSON file of VQGANModel kwargs.")
    g.add_argument("--pretrained_model_name_or_path", default=None, help="Fine-tune this VQGANModel.")
    g = v.add_argument_group("losses")
    g.add_argument("--pixel_loss", choices=["l1", "l2"], default="l1")
    g.add_argument("--pixel_weight", type=float, default=1.0)
    g.add_argument("--perceptual_weight", type=float, default=1.0, help="0 disables LPIPS.")
    g.add_argument("--lpips_vgg_weights", default=None, help="A local torchvision VGG16 weights file for LPIPS.")
    g.add_argument(
        "--lpips_random_backbone_for_tests",
        action="store_true",
        help="FOR TESTS ONLY: LPIPS with a randomly initialised VGG16 backbone (not a perceptual loss).",
    )
    g.add_argument("--disc_weight", type=float, default=0.8, help="0 disables the GAN (a VQVAE baseline).")
    g.add_argument("--disc_start", type=int, default=0, help="Step at which the GAN terms switch on.")
    g.add_argument("--disc_loss", choices=["hinge", "vanilla", "non_saturating"], default="hinge")
    g.add_argument("--disc_learning_rate", type=float, default=None, help="Defaults to --learning_rate.")
    g.add_argument("--disc_num_layers", type=int, default=3)
    g.add_argument("--disc_base_channels", type=int, default=64)
    g.add_argument("--disc_norm", choices=["batch", "group", "instance", "none"], default="batch")
    g.add_argument("--codebook_weight", type=float, default=1.0)
    g = v.add_argument_group("speed (results unchanged up to float rounding; see benchmarks/README.md)")
    g.add_argument("--channels_last", action="store_true", help="NHWC weights and activations (faster bf16 convs).")
    g.add_argument("--gradient_checkpointing", action="store_true", help="Recompute blocks in backward: less memory.")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder, decoder and discriminator.")
    g.add_argument("--generator_backward", choices=["single", "plain"], default="single",
                   help="single: one backward pass through LPIPS and the discriminator per step (same gradients); "
                        "plain: taming's two. fp16, FSDP and DeepSpeed runs use plain.")  # fmt: skip
    g = v.add_argument_group("condition tokenizers (for image-conditional priors)")
    g.add_argument("--condition_type", choices=cond_lib.CONDITION_TYPES, default=None)
    g.add_argument("--condition_column", default=None, help=PAIRED_COLUMN_HELP)
    g.add_argument("--num_labels", type=int, default=None, help="Segmentation classes (labels 0 .. N-1).")
    g.add_argument("--lowres_factor", type=int, default=8, help="Downsampling factor of lowres conditions.")
    g.add_argument("--image_channels", type=int, default=None, help="Channels the images are read with (condition "
                   "tokenizers derive their input from them); defaults to the model's in_channels.")  # fmt: skip

    t = stages.add_parser("transformer", help="Stage 2: the GPT prior over a frozen tokenizer's codes.")
    add_data_arguments(t)
    add_run_arguments(t, learning_rate=4.5e-4, betas=(0.9, 0.95))
    g = t.add_argument_group("prior")
    g.add_argument("--vqgan_model_name_or_path", required=True, help="A VQGANModel (or pipeline) folder or Hub id.")
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
    g.add_argument("--condition_type", choices=cond_lib.CONDITION_TYPES, default=None)
    g.add_argument("--condition_column", default=None, help=PAIRED_COLUMN_HELP)
    g.add_argument("--lowres_factor", type=int, default=8, help="As given to the condition tokenizer's run.")

    args = parser.parse_args(argv)
    check_run_arguments(args)
    if (
        args.stage == "vqgan"
        and sum(x is not None for x in (args.preset, args.model_config, args.pretrained_model_name_or_path)) > 1
    ):
        raise ValueError(
            "Pass at most one of --preset, --model_config and --pretrained_model_name_or_path; got "
            f"{args.preset!r}, {args.model_config!r} and {args.pretrained_model_name_or_path!r}."
        )
    if args.preset is not None:  # an unknown name fails here, not after the data and models are loaded
        (vqgan_preset if args.stage == "vqgan" else prior_preset)(args.preset)
    if args.stage == "transformer":
        if not 0.0 <= args.pkeep <= 1.0 or not 0.0 <= args.class_dropout_prob < 1.0:
            raise ValueError(
                f"--pkeep must be in [0, 1] and --class_dropout_prob in [0, 1); got {args.pkeep}, {args.class_dropout_prob}."
            )
        if (args.condition_type is None) != (args.cond_vqgan_model_name_or_path is None):
            raise ValueError("--condition_type and --cond_vqgan_model_name_or_path go together.")
    if args.condition_type in ("segmentation", "depth") and args.condition_column is None:
        raise ValueError(f"--condition_type {args.condition_type} reads paired maps: pass --condition_column.")
    if args.stage == "vqgan" and args.condition_type == "segmentation" and (args.num_labels or 0) < 2:
        raise ValueError(f"--condition_type segmentation needs --num_labels >= 2, got {args.num_labels}.")
    if args.condition_type is not None and args.lowres_factor < 1:
        raise ValueError(f"--lowres_factor must be a positive integer, got {args.lowres_factor}.")
    return args


# ------------------------------------------------------------------------------------------------ shared loop
def iterate_batches(accelerator, loader, state: TrainingState, max_steps: int):
    """Yield batches until `max_steps` optimizer steps, resuming mid-epoch where a checkpoint left off."""
    while state.step < max_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(state.epoch)
        if hasattr(loader.dataset, "set_epoch"):  # a SeededDataset (accelerate skips it when the sampler is seedable)
            loader.dataset.set_epoch(state.epoch)
        epoch_loader = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        for batch in epoch_loader:
            state.batch_in_epoch += 1
            yield batch
            if state.step >= max_steps:
                return
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def setup_run(args, accelerator, models_and_optimizers, loaders, schedulers, ema, extras_owner):
    """`prepare`, checkpoint registration and resume: the same for both stages."""
    prepared = accelerator.prepare(*models_and_optimizers, *loaders, *schedulers)
    state = TrainingState()  # saved by save_checkpoint as JSON + safetensors, not pickled by accelerate
    checkpoints = CheckpointManager(Path(args.output_dir) / "checkpoints", args.checkpoints_total_limit)
    if accelerator.is_main_process:
        checkpoints.clean_incomplete()
    resume = checkpoints.resolve(args.resume_from_checkpoint)
    if resume is not None:
        accelerator.load_state(str(resume))
        state.load(resume, ema)
        if extras_owner is not None and "quantizer" in state.extras:
            extras_owner.load_statistics_state_dict(state.extras["quantizer"])
        logger.info(
            "Resumed from %s at step %d (epoch %d, batch %d)", resume, state.step, state.epoch, state.batch_in_epoch
        )
    return prepared, state, checkpoints


def save_checkpoint(accelerator, checkpoints, state, quantizer=None, ema=None):
    if quantizer is not None:
        state.extras["quantizer"] = quantizer.statistics_state_dict()
    path = checkpoints.save(accelerator, state.step, write_extra=lambda folder: state.save(folder, ema))
    logger.info("Saved %s", path)


def sharded_training(accelerator) -> bool:
    """FSDP and DeepSpeed shard parameters: their modules only run, and backpropagate, through the wrapper."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


@contextlib.contextmanager
def frozen(module: torch.nn.Module | None):
    """No parameter gradients for `module` from what runs inside (its inputs' gradients still flow)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def step_optimizer(accelerator, args, optimizer, scheduler, parameters) -> None:
    """Clip (on the micro-step that synchronises gradients), step, schedule and clear one optimizer."""
    if accelerator.sync_gradients and args.max_grad_norm > 0:
        accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def log_every(accelerator, args, state, progress, logs: dict):
    progress.update(1)
    if args.log_jsonl:
        log_step_jsonl(accelerator, args.log_jsonl, state.step, logs)
    if state.step % args.logging_steps == 0 or state.step == 1:
        progress.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "total", "nll", "d_loss")})
        accelerator.log(logs, step=state.step)


def make_loader(dataset, batch_size, shuffle, args, collate_fn):
    # Each new iterator draws a worker seed from `generator`; from the global RNG instead, a mid-epoch resume (or a
    # validation pass) would shift the random flips, crops and codebook restarts that follow, and no resume would be
    # exact. (Exact resumes also need --dataloader_num_workers 0: workers' RNG states are not checkpointed.)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, num_workers=args.dataloader_num_workers,
        drop_last=shuffle, generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip


def count_classes(dataset, column: str) -> int:
    """Number of classes of a label column: its ClassLabel size, or max + 1 for plain integers."""
    feature = dataset.features[column]
    if hasattr(feature, "num_classes"):
        return feature.num_classes
    labels = dataset.unique(column)
    if any(not isinstance(label, int) or label < 0 for label in labels):
        raise ValueError(
            f"--class_column {column!r} must hold non-negative integer labels, found {sorted(labels)[:5]}..."
        )
    return max(labels) + 1


def load_vqgan(name_or_path: str, **kwargs) -> VQGANModel:
    """A VQGANModel from a model folder/repo, or from the `vqgan` subfolder of a pipeline folder/repo."""
    local = Path(name_or_path)
    if (local / "model_index.json").is_file() or (not local.exists() and _is_pipeline_repo(name_or_path)):
        return VQGANModel.from_pretrained(name_or_path, subfolder="vqgan", **kwargs)
    return VQGANModel.from_pretrained(name_or_path, **kwargs)


def _is_pipeline_repo(repo_id: str) -> bool:
    from huggingface_hub import file_exists

    try:
        return file_exists(repo_id, "model_index.json")
    except Exception:  # offline or unknown repo: let from_pretrained raise its own message
        return False


# ------------------------------------------------------------------------------------------------ stage 1
def train_vqgan(args) -> dict:
    from hf_vqgan.losses import VQGANLoss
    from hf_vqgan.training.evaluation import evaluate_tokenizer, save_tokenizer_outputs
    from hf_vqgan.training.performance import prepare_vqgan_for_training

    accelerator = make_accelerator(args)
    if args.pretrained_model_name_or_path:
        model = load_vqgan(args.pretrained_model_name_or_path)
    else:
        if args.model_config:
            config = json.loads(Path(args.model_config).read_text())
        else:
            config = vqgan_preset(args.preset or "digits-tiny")
        args.image_channels = args.image_channels or config.get("in_channels", 3)
        if args.condition_type is not None:
            channels = cond_lib.condition_channels(args.condition_type, args.num_labels, args.image_channels)
            config.update(in_channels=channels, out_channels=channels)
        model = VQGANModel(**config)
    image_channels = args.image_channels or model.config.in_channels
    resolution = args.resolution or (model.config.sample_size if args.condition_type != "lowres" else None)
    if resolution is None:
        raise ValueError(
            "A lowres condition tokenizer needs --resolution (the size of the images it is derived from)."
        )
    if args.condition_type == "lowres" and resolution % args.lowres_factor:
        raise ValueError(f"--lowres_factor {args.lowres_factor} must divide the resolution {resolution}.")

    # Losses first: a missing LPIPS backbone must stop the run here, not an hour in.
    segmentation = args.condition_type == "segmentation"
    loss_fn = VQGANLoss(
        pixel_loss="cross_entropy" if segmentation else args.pixel_loss,
        pixel_weight=args.pixel_weight,
        perceptual_weight=0.0 if segmentation else args.perceptual_weight,
        lpips_vgg_weights_path=args.lpips_vgg_weights,
        lpips_random_backbone=args.lpips_random_backbone_for_tests,
        disc_weight=0.0 if segmentation else args.disc_weight,
        disc_start=args.disc_start,
        disc_loss=args.disc_loss,
        codebook_weight=args.codebook_weight,
        disc_in_channels=model.config.out_channels,
        disc_num_layers=args.disc_num_layers,
        disc_base_channels=args.disc_base_channels,
        disc_norm_type=args.disc_norm,
    )

    splits = data_lib.load_image_dataset(
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name, train_data_dir=args.train_data_dir,
        image_column=args.image_column, validation_split=args.validation_split, max_train_samples=args.max_train_samples,
        streaming=args.streaming, seed=args.seed, cache_dir=args.cache_dir, condition_column=args.condition_column,
    )  # fmt: skip
    if args.max_eval_samples:
        splits["validation"] = splits["validation"].take(args.max_eval_samples)
    condition = None
    if args.condition_type is not None:
        condition = cond_lib.ConditionTransform(
            args.condition_type, num_labels=args.num_labels, lowres_factor=args.lowres_factor
        )
    bad_images = data_lib.BadImageCounter()
    transforms = {
        "train": data_lib.ImageTransform(
            resolution, image_channels, center_crop=not args.random_crop, random_flip=args.random_flip
        ),
        "validation": data_lib.ImageTransform(resolution, image_channels, center_crop=True),
    }
    loaders = {
        split: make_loader(
            data_lib.with_image_transform(splits[split], transforms[split], args.image_column, None, condition, args.condition_column, bad_images),
            args.train_batch_size if split == "train" else args.eval_batch_size, split == "train" and not args.streaming, args, data_lib.collate_fn,
        )
        for split in ("train", "validation")
    }  # fmt: skip
    if not args.streaming:
        # Flips and crops as a function of (seed, epoch, example): resumes are exact, any process count agrees.
        seeded = data_lib.SeededDataset(loaders["train"].dataset, transforms["train"], args.seed)
        loaders["train"] = make_loader(seeded, args.train_batch_size, True, args, data_lib.collate_fn)
    train_loader, val_loader = loaders["train"], loaders["validation"]
    input_key = "pixel_values" if condition is None else "condition_values"

    lr = args.learning_rate * (args.train_batch_size * accelerator.num_processes if args.scale_lr else 1)
    prepare_vqgan_for_training(model, loss_fn, channels_last=args.channels_last,
                               gradient_checkpointing=args.gradient_checkpointing, compile=args.compile)  # fmt: skip
    opt_g = adam(model.parameters(), args, lr=lr)
    batches = None if args.streaming else len(train_loader) // accelerator.num_processes
    max_steps, _ = num_update_steps(args, batches)
    sched_kwargs = dict(num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                        num_training_steps=max_steps * accelerator.num_processes)  # fmt: skip
    sched_g = get_scheduler(args.lr_scheduler, opt_g, **sched_kwargs)
    use_gan = loss_fn.discriminator is not None
    parts, optimizers, schedulers = [model], [opt_g], [sched_g]
    if use_gan:
        opt_d = adam(loss_fn.discriminator.parameters(), args, lr=args.disc_learning_rate or lr)
        parts.append(loss_fn.discriminator)
        optimizers.append(opt_d)
        schedulers.append(get_scheduler(args.lr_scheduler, opt_d, **sched_kwargs))
    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=args.ema_decay)
    prepared, state, checkpoints = setup_run(
        args, accelerator, parts + optimizers, [train_loader], schedulers, ema, model.quantizer
    )
    n = len(parts)
    model, disc = prepared[0], (prepared[1] if use_gan else None)
    opt_g, opt_d = prepared[n], (prepared[n + 1] if use_gan else None)
    train_loader = prepared[2 * n]
    sched_g, sched_d = prepared[2 * n + 1], (prepared[2 * n + 2] if use_gan else None)
    sharded = sharded_training(accelerator)
    single_backward = args.generator_backward == "single"
    if single_backward and (accelerator.mixed_precision == "fp16" or sharded):
        logger.info("--generator_backward single needs bf16/fp32 and DDP (or one process); using plain.")
        single_backward = False
    if use_gan and sharded:
        # Sharded networks only run through their wrapper, so the generator's GAN term leaves gradients on the
        # discriminator; they are dropped before its update, which is only right when every micro-step updates.
        if args.gradient_accumulation_steps > 1:
            raise ValueError(
                f"--gradient_accumulation_steps {args.gradient_accumulation_steps} with a discriminator is not supported "
                f"under {accelerator.distributed_type}; use 1 (and a larger --train_batch_size), or DDP."
            )
        loss_fn.discriminator = disc
    # Otherwise the generator's GAN term runs the bare discriminator, whose gradients it does not need (DDP must not
    # wait for them, and accumulated micro-steps must not mix them into the discriminator's), and the discriminator's
    # update runs the prepared one.
    freeze_discriminator = use_gan and not sharded and not single_backward
    loss_fn.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)

    if accelerator.is_main_process:
        accelerator.init_trackers(
            "hf_vqgan-vqgan", config={k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)}
        )
    logger.info(
        "VQGAN: %d parameters, %d steps, %dx%d images",
        sum(p.numel() for p in unwrapped.parameters()),
        max_steps,
        resolution,
        resolution,
    )
    progress = tqdm(total=max_steps, initial=state.step, desc="vqgan", disable=not accelerator.is_local_main_process)
    metrics: dict = {}
    model.train()
    for batch in iterate_batches(accelerator, train_loader, state, max_steps):
        pixel_values = batch[input_key]
        if any_process(accelerator, pixel_values.shape[0] == 0):  # every image of a batch was unreadable
            continue
        with accelerator.accumulate(*parts):
            out = model(pixel_values)  # one generator forward serves both updates
            with accelerator.autocast(), frozen(loss_fn.discriminator if freeze_discriminator else None):
                g = loss_fn.generator_loss(pixel_values, out.sample, out.quantizer_loss, state.step,
                                           last_layer=unwrapped.last_layer_weight, single_backward=single_backward)  # fmt: skip
            g.total = inject_nonfinite_for_tests(g.total, state.step, state.consecutive_nonfinite)
            if not all_finite(accelerator, g.total):
                opt_g.zero_grad(set_to_none=True)
                if use_gan:
                    opt_d.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    record_nonfinite(state, args, checkpoints, {"generator": float(g.total.detach())})
                continue
            accelerator.backward(g.total)
            step_optimizer(accelerator, args, opt_g, sched_g, model.parameters())
            d = None
            if use_gan:
                if sharded:
                    opt_d.zero_grad(set_to_none=True)  # drop what the generator's GAN term left in the discriminator
                # The discriminator's forward comes after the generator's backward: DDP synchronises only the backward
                # that follows a module's latest forward, so computed earlier its gradients would stay per-process.
                if loss_fn.should_update_discriminator(state.step):
                    d = loss_fn.discriminator_loss(pixel_values, out.sample, state.step, discriminator=disc)
                    if not all_finite(accelerator, d.loss):
                        logger.warning("Step %d: non-finite discriminator loss; its update skipped.", state.step)
                        d = None
                if d is not None:
                    accelerator.backward(d.loss)
                    step_optimizer(accelerator, args, opt_d, sched_d, disc.parameters())
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        state.consecutive_nonfinite = 0
        if ema is not None:
            ema.step(model.parameters())
        logs = {**g.to_log_dict(), **(d.to_log_dict(prefix="disc_") if d is not None else {}), "lr": sched_g.get_last_lr()[0],
                "perplexity": float(out.perplexity), "usage": float(out.usage), "skipped_images": bad_images.skipped}  # fmt: skip
        log_every(accelerator, args, state, progress, logs)
        if state.step % args.checkpointing_steps == 0 or state.step == max_steps:
            save_checkpoint(accelerator, checkpoints, state, unwrapped.quantizer, ema)
        if accelerator.is_main_process and (state.step % args.validation_steps == 0 or state.step == max_steps):
            metrics = evaluate_tokenizer(
                unwrapped,
                val_loader,
                input_key,
                accelerator,
                ema=ema,
                step=state.step,
                output_dir=args.output_dir,
                perceptual=loss_fn.perceptual,
                condition_type=args.condition_type,
            )
            model.train()
        kill_for_tests_at_step(state.step)
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not metrics:  # resumed at max_train_steps, so no step ran: validate what is saved, as a full run does
            metrics = evaluate_tokenizer(unwrapped, val_loader, input_key, accelerator, ema=ema, step=state.step,
                                         output_dir=args.output_dir, perceptual=loss_fn.perceptual,
                                         condition_type=args.condition_type)  # fmt: skip
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        metrics["train_quantizer_usage"] = unwrapped.quantizer.usage_statistics()["usage"]
        metrics["skipped_nonfinite_steps"] = state.skipped_nonfinite
        metrics["skipped_images"] = bad_images.skipped
        save_tokenizer_outputs(unwrapped, args, metrics, resolution)
    accelerator.end_training()
    return metrics


# ------------------------------------------------------------------------------------------------ stage 2
def train_transformer(args) -> dict:
    from hf_vqgan import VQGANPriorConfig, VQGANPriorForCausalLM, VQGANTransformerPipeline
    from hf_vqgan.training.evaluation import evaluate_prior, save_pipeline_outputs
    from hf_vqgan.training.tokenize import dataset_fingerprint, load_or_tokenize, model_fingerprint, tokenize_split

    accelerator = make_accelerator(args)
    vqgan = load_vqgan(args.vqgan_model_name_or_path).requires_grad_(False).eval()
    cond_vqgan = None
    if args.cond_vqgan_model_name_or_path:
        cond_vqgan = load_vqgan(args.cond_vqgan_model_name_or_path).requires_grad_(False).eval()
    resolution = args.resolution or vqgan.config.sample_size
    latent_height, latent_width = vqgan.latent_shape(resolution, resolution)

    splits = data_lib.load_image_dataset(
        dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name, train_data_dir=args.train_data_dir,
        image_column=args.image_column, label_column=args.class_column, validation_split=args.validation_split,
        max_train_samples=args.max_train_samples, seed=args.seed, cache_dir=args.cache_dir,
        condition_column=args.condition_column,
    )  # fmt: skip
    if args.max_eval_samples:
        splits["validation"] = splits["validation"].take(args.max_eval_samples)
    if args.streaming:
        raise ValueError("The transformer stage tokenises its dataset once; --streaming is not supported for it.")
    num_classes = count_classes(splits["train"], args.class_column) if args.class_column else 0
    image_transform = data_lib.ImageTransform(resolution, vqgan.config.in_channels, center_crop=not args.random_crop)
    condition = None
    if cond_vqgan is not None:
        num_labels = cond_vqgan.config.in_channels if args.condition_type == "segmentation" else None
        condition = cond_lib.ConditionTransform(
            args.condition_type, num_labels=num_labels, lowres_factor=args.lowres_factor
        )
        if args.condition_type == "lowres" and resolution % args.lowres_factor:
            raise ValueError(f"--lowres_factor {args.lowres_factor} must divide the resolution {resolution}.")
        if cond_vqgan.config.in_channels != condition.channels(vqgan.config.in_channels):
            raise ValueError(
                f"The condition tokenizer reads {cond_vqgan.config.in_channels}-channel maps, but {args.condition_type} "
                f"conditions of this tokenizer's {vqgan.config.in_channels}-channel images have "
                f"{condition.channels(vqgan.config.in_channels)}; was it trained for another condition type?"
            )
    parts = {
        "tokenizer": model_fingerprint(vqgan), "cond_tokenizer": model_fingerprint(cond_vqgan) if cond_vqgan else None,
        "data": {k: dataset_fingerprint(v) for k, v in splits.items()}, "resolution": resolution,
        "random_crop": args.random_crop, "flips": args.tokenize_flips, "class_column": args.class_column,
        "condition": [args.condition_type, args.condition_column, args.lowres_factor],
    }  # fmt: skip

    def build():
        from datasets import DatasetDict

        device = accelerator.device
        kwargs = dict(
            label_column=args.class_column,
            condition_transform=condition,
            condition_column=args.condition_column,
            cond_vqgan=cond_vqgan,
            device=device,
        )
        return DatasetDict(
            train=tokenize_split(splits["train"], vqgan, image_transform, args.image_column, flips=args.tokenize_flips, desc="Tokenising train", **kwargs),
            validation=tokenize_split(splits["validation"], vqgan, image_transform, args.image_column, desc="Tokenising validation", **kwargs),
        )  # fmt: skip

    cache_root = args.tokenized_cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_vqgan", "tokenized")
    tokens, _ = load_or_tokenize(cache_root, parts, build, accelerator)
    tokens = tokens.with_format("torch")

    size = json.loads(Path(args.prior_config).read_text()) if args.prior_config else prior_preset(args.preset)
    config = VQGANPriorConfig(
        codebook_size=vqgan.config.codebook_size, latent_height=latent_height, latent_width=latent_width,
        num_classes=num_classes, cond_codebook_size=cond_vqgan.config.codebook_size if cond_vqgan else 0,
        cond_length=math.prod(cond_vqgan.latent_shape(*condition.output_shape(vqgan.config.in_channels, resolution)[1:])) if cond_vqgan else 0,
        condition_type=args.condition_type, lowres_factor=args.lowres_factor, cond_num_labels=num_labels if cond_vqgan else None, **size,
    )  # fmt: skip
    model = VQGANPriorForCausalLM(config)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wte" not in n and "wpe" not in n)]
    lr = args.learning_rate * (args.train_batch_size * accelerator.num_processes if args.scale_lr else 1)
    optimizer = adam(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], args, lr=lr
    )
    train_loader = make_loader(tokens["train"], args.train_batch_size, True, args, None)
    val_loader = make_loader(tokens["validation"], args.eval_batch_size, False, args, None)
    max_steps, _ = num_update_steps(args, len(train_loader) // accelerator.num_processes)
    scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                              num_training_steps=max_steps * accelerator.num_processes)  # fmt: skip
    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=args.ema_decay)
    (model, optimizer, train_loader, scheduler), state, checkpoints = setup_run(
        args, accelerator, [model, optimizer], [train_loader], [scheduler], ema, None
    )
    if ema is not None:
        ema.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)
    vqgan.to(accelerator.device)
    if accelerator.is_main_process:
        accelerator.init_trackers(
            "hf_vqgan-transformer",
            config={k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)},
        )
    logger.info(
        "Prior: %d parameters, %d tokens per image, %d classes, %d steps",
        unwrapped.num_parameters(),
        latent_height * latent_width,
        num_classes,
        max_steps,
    )
    generator = torch.Generator(device=accelerator.device).manual_seed(args.seed + accelerator.process_index)
    progress = tqdm(
        total=max_steps, initial=state.step, desc="transformer", disable=not accelerator.is_local_main_process
    )
    pipeline = VQGANTransformerPipeline(vqgan=vqgan, transformer=unwrapped, cond_vqgan=cond_vqgan)
    metrics: dict = {}
    model.train()
    for batch in iterate_batches(accelerator, train_loader, state, max_steps):
        # Class dropout and pkeep draw from a generator reseeded from the batch's position: resumes replay them.
        generator.manual_seed(position_seed(args.seed, accelerator.process_index, state.epoch, state.batch_in_epoch))
        labels = batch.get("label")
        if labels is not None and args.class_dropout_prob > 0:
            labels = unwrapped.drop_class_labels(labels, args.class_dropout_prob, generator=generator)
        input_ids = unwrapped.build_input_ids(
            indices=batch["indices"], class_labels=labels, cond_indices=batch.get("cond_indices")
        )
        targets = input_ids.clone()
        targets[:, : config.prefix_length] = -100  # loss on image tokens only
        if args.pkeep < 1.0:
            input_ids = unwrapped.corrupt_image_tokens(input_ids, args.pkeep, generator=generator)
        with accelerator.accumulate(model):
            loss = model(input_ids=input_ids, labels=targets).loss
            loss = inject_nonfinite_for_tests(loss, state.step, state.consecutive_nonfinite)
            if not all_finite(accelerator, loss):
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    record_nonfinite(state, args, checkpoints, {"loss": float(loss.detach())})
                continue
            accelerator.backward(loss)
            step_optimizer(accelerator, args, optimizer, scheduler, model.parameters())
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        state.consecutive_nonfinite = 0
        if ema is not None:
            ema.step(model.parameters())
        log_every(accelerator, args, state, progress, {"loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0]})
        if state.step % args.checkpointing_steps == 0 or state.step == max_steps:
            save_checkpoint(accelerator, checkpoints, state, ema=ema)
        if accelerator.is_main_process and (state.step % args.validation_steps == 0 or state.step == max_steps):
            metrics = evaluate_prior(
                pipeline, val_loader, accelerator, args, ema=ema, step=state.step, num_classes=num_classes
            )
            model.train()
        kill_for_tests_at_step(state.step)
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not metrics:  # resumed at max_train_steps, so no step ran: validate what is saved, as a full run does
            metrics = evaluate_prior(
                pipeline, val_loader, accelerator, args, ema=ema, step=state.step, num_classes=num_classes
            )
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        metrics["skipped_nonfinite_steps"] = state.skipped_nonfinite
        save_pipeline_outputs(pipeline, args, metrics, resolution)
    accelerator.end_training()
    return metrics


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as error:  # contradictory options: one line, no stack trace
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        metrics = train_vqgan(args) if args.stage == "vqgan" else train_transformer(args)
    except LPIPSWeightsUnavailableError as error:  # raised at start-up; its message says what to pass instead
        print(f"error: {error}", file=sys.stderr)
        return 1
    except NonFiniteLossError as error:  # its message names the step and the last good checkpoint to resume from
        logger.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return 1
    if metrics:
        logger.info("Final metrics: %s", json.dumps(metrics, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
