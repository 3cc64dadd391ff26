"""Validation and final outputs of both training stages: held-out figures, image grids, saved folders, cards.

It takes the pipeline it validates as an argument and imports nothing from `hf_vqgan.pipelines`."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..image_utils import make_image_grid
from ..metrics import CodebookUsage, psnr, ssim
from .curves import CURVES_FILE
from .state import save_json
from .trackers import log_images

logger = logging.getLogger(__name__)

GRID_FILE = "reconstructions.png"
SAMPLES_FILE = "samples.png"


class _EMAWeights:
    """Evaluate with the EMA weights when there are any, then put the training weights back."""

    def __init__(self, ema, model):
        self.ema, self.model = ema, model

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.model.parameters())


def _to_grid_pixels(x: torch.Tensor, condition_type: str | None) -> torch.Tensor:
    if condition_type is None:
        return x
    from ..conditions import condition_to_pixels

    return condition_to_pixels(x, condition_type)


# --------------------------------------------------------------------------------------------------- stage 1
@torch.no_grad()
def evaluate_tokenizer(
    model,
    loader,
    input_key,
    accelerator,
    *,
    ema=None,
    step=0,
    output_dir=".",
    perceptual=None,
    condition_type=None,
    max_grid=8,
) -> dict:
    """Held-out PSNR, SSIM, LPIPS (when the perceptual net exists) and codebook usage; saves a reconstruction grid.

    Segmentation tokenizers report label accuracy instead of image metrics.
    """
    usage = CodebookUsage(model.config.codebook_size)
    totals: dict[str, float] = {}
    count, grid_rows = 0, None
    with _EMAWeights(ema, model):
        model.eval()
        for batch in loader:
            x = batch[input_key].to(accelerator.device)
            if x.shape[0] == 0:
                continue
            out = model(x)
            usage.update(out.indices)
            recon = out.sample.float()
            values = {}
            if condition_type == "segmentation":
                values["label_accuracy"] = (recon.argmax(1) == x.argmax(1)).float().mean(dim=(1, 2))
            else:
                recon = recon.clamp(-1, 1)
                values["psnr"] = psnr(recon, x, reduction="none")
                if min(x.shape[-2:]) >= 11:
                    values["ssim"] = ssim(recon, x, reduction="none")
                if perceptual is not None:
                    values["lpips"] = perceptual(x, recon)
            for name, per_image in values.items():
                totals[name] = totals.get(name, 0.0) + float(per_image.sum())
            count += x.shape[0]
            if grid_rows is None:
                grid_rows = (x[:max_grid].cpu(), recon[:max_grid].cpu())
    metrics = {name: total / max(count, 1) for name, total in totals.items()}
    stats = usage.compute()
    metrics.update(codebook_usage=float(stats["usage"]), perplexity=float(stats["perplexity"]), step=step)
    if grid_rows is not None:
        originals, recons = grid_rows
        if condition_type == "segmentation":
            recons = F.one_hot(recons.argmax(1), recons.shape[1]).permute(0, 3, 1, 2).float() * 2 - 1
        pixels = torch.cat([_to_grid_pixels(originals, condition_type), _to_grid_pixels(recons, condition_type)])
        scale = max(1, 128 // pixels.shape[-1])
        grid = make_image_grid(pixels, nrow=originals.shape[0], scale=scale)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        grid.save(Path(output_dir) / GRID_FILE)
        log_images(accelerator, {"validation/reconstructions": grid}, step)
    accelerator.log({f"val/{k}": v for k, v in metrics.items() if k != "step"}, step=step)
    logger.info("Validation at step %d: %s", step, json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return metrics


def _is_local_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("~", ".")) or os.path.exists(value)


def _dataset_description(args) -> tuple[str, list[str]]:
    """The card's words on the training data, and the Hub datasets it names: a Hub id only, linked; a local dataset
    is named by its folder or file names, never linked nor listed as a Hub dataset."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = args.dataset_name
    if name and not _is_local_path(name):
        try:
            validate_repo_id(name)
        except HFValidationError:
            pass
        else:
            return f"[{name}](https://huggingface.co/datasets/{name})", [name]
    if name:
        return f"A local dataset (`{Path(name).expanduser().name}`).", []
    data_files = getattr(args, "data_files", None)
    if data_files:
        files = shareable_value(data_files)
        return f"Local data files: {', '.join(f'`{f}`' for f in _flat(files))}.", []
    if args.train_data_dir:
        return f"A local image folder (`{Path(args.train_data_dir).expanduser().name}`).", []
    return "scikit-learn's handwritten digits (1,797 8x8 images, 10 classes), with a fixed held-out split.", []


def _flat(value) -> list:
    if isinstance(value, dict):
        return [item for inner in value.values() for item in _flat(inner)]
    return [item for inner in value for item in _flat(inner)] if isinstance(value, (list, tuple)) else [value]


def shareable_value(value):
    """`value` with every local path in it (absolute, `~`, or naming a file or folder that exists) reduced to its
    last component: `/home/me/data/train.parquet` -> `train.parquet`. Hub ids and other strings are kept."""
    if isinstance(value, str):
        return Path(value).expanduser().resolve().name or value if value and _is_local_path(value) else value
    if isinstance(value, dict):
        return {key: shareable_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable_value(item) for item in value]
    return value


def shareable_arguments(args) -> dict:
    """The run's arguments as `training_args.json` records them: without `hub_token`, and with local paths reduced
    to their base names (`shareable_value`), so that the file can be uploaded without telling where things are."""
    return {key: shareable_value(value) for key, value in vars(args).items() if key != "hub_token"}


def _push(args, folder: Path, save, files: list[str]) -> None:
    """Upload what `save(folder)` writes and the named `files` of `folder`, nothing else of it."""
    if args.push_to_hub:
        from ..hub import push_saved_to_hub

        extra = {name: folder / name for name in [*files, *RUN_FILES] if (folder / name).is_file()}
        url = push_saved_to_hub(
            args.hub_model_id, save, extra_files=extra, private=args.hub_private_repo,
            commit_message=f"Upload the {args.stage} stage of hf_vqgan",
        )  # fmt: skip
        logger.info("Pushed %s to %s", folder, url)


RUN_FILES = ("README.md", "metrics.json", "training_args.json", CURVES_FILE)
"""What a training run uploads besides the saved model: its card, final figures, curves and (shareable) arguments."""


def _write_run_files(folder: Path, args, metrics: dict) -> None:
    save_json(folder / "metrics.json", metrics)
    save_json(folder / "training_args.json", shareable_arguments(args))


def save_tokenizer_outputs(model, args, metrics: dict, resolution: int) -> None:
    """The final tokenizer folder: weights, metrics, training arguments, model card; pushed if asked."""
    from ..hub import vqgan_model_card

    folder = Path(args.output_dir)
    model.save_pretrained(folder)
    _write_run_files(folder, args, metrics)
    description, datasets = _dataset_description(args)
    losses = [f"{args.pixel_loss} pixel"]
    if args.perceptual_weight > 0:
        losses.append(f"LPIPS (weight {args.perceptual_weight})")
    if args.disc_weight > 0:
        losses.append(
            f"PatchGAN {args.disc_loss} with adaptive weight x {args.disc_weight} from step {args.disc_start}"
        )
    quantizer_type = model.config.quantizer_type
    if quantizer_type == "fsq":  # FSQ/LFQ (issue 18): a fixed grid has no quantizer loss
        losses.append("no quantizer loss (FSQ)")
    elif quantizer_type == "lfq":
        config = model.config
        losses.append(f"LFQ commitment (weight {config.lfq_commitment_weight}) + entropy penalty (weight "
                      f"{config.lfq_entropy_weight}), x {args.codebook_weight}")  # fmt: skip
    else:
        losses.append(f"codebook + commitment (weight {args.codebook_weight})")
    card = vqgan_model_card(
        model,
        model_name=Path(args.hub_model_id or folder.resolve().name).name,
        repo_id=args.hub_model_id or "path/to/this/folder",
        resolution=resolution,
        dataset_description=description,
        datasets=datasets,
        loss_description=", ".join(losses),
        training_description=(
            f"{metrics.get('step', '?')} steps, batch {args.train_batch_size} per process, "
            f"learning rate {args.learning_rate}."
        ),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        grid_file=GRID_FILE if (folder / GRID_FILE).is_file() else None,
        curves_file=CURVES_FILE if (folder / CURVES_FILE).is_file() else None,
    )
    card.save(folder / "README.md")
    _push(args, folder, model.save_pretrained, [GRID_FILE])


MAX_LABEL_CHARS = 24


def label_rows(grid: Image.Image, names: list[str], row_height: int, padding: int = 2) -> Image.Image:
    """`grid` (rows of `row_height` pixels between `padding`-pixel gaps, as `make_image_grid` tiles them) with a
    white margin on its left naming row i `names[i]` (long names shortened to `MAX_LABEL_CHARS`)."""
    names = [name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 3] + "..." for name in names]
    font = ImageFont.load_default()
    width = max(int(ImageDraw.Draw(grid).textlength(name, font=font)) for name in names) + 2 * padding
    white = 255 if grid.mode == "L" else (255,) * len(grid.mode)
    labelled = Image.new(grid.mode, (grid.width + width, grid.height), white)
    labelled.paste(grid, (width, 0))
    draw = ImageDraw.Draw(labelled)
    for row, name in enumerate(names):
        middle = padding + row * (row_height + padding) + row_height // 2
        draw.text(
            (padding, middle), name, fill=0 if grid.mode == "L" else (0,) * len(grid.mode), font=font, anchor="lm"
        )
    return labelled


# --------------------------------------------------------------------------------------------------- stage 2
@torch.no_grad()
def evaluate_prior(pipeline, loader, accelerator, args, *, ema=None, step=0, num_classes=0) -> dict:
    """Held-out loss of the prior and a grid of samples (one row per class) decoded with the tokenizer."""
    prior = pipeline.transformer
    config = prior.config
    total, tokens = 0.0, 0
    cond_example = None
    with _EMAWeights(ema, prior):
        prior.eval()
        for batch in loader:
            cond = batch.get("cond_indices")
            cond = None if cond is None else cond.to(accelerator.device)
            input_ids = prior.build_input_ids(
                indices=batch["indices"].to(accelerator.device),
                class_labels=None if batch.get("label") is None else batch["label"].to(accelerator.device),
                cond_indices=cond,
            )
            targets = input_ids.clone()
            targets[:, : config.prefix_length] = -100
            loss = prior(input_ids=input_ids, labels=targets).loss
            n = batch["indices"].numel()
            total, tokens = total + float(loss) * n, tokens + n
            if cond_example is None and cond is not None:
                cond_example = cond
        per_row = args.num_validation_samples
        generator = torch.Generator(device=accelerator.device).manual_seed(args.seed)
        if num_classes:
            labels = torch.arange(num_classes, device=accelerator.device).repeat_interleave(per_row)
            guidance = args.guidance_scale
        else:
            labels, guidance = None, 1.0
        n = labels.shape[0] if labels is not None else per_row
        cond_tokens = None
        if cond_example is not None:
            cond_tokens = cond_example[:per_row].repeat(math.ceil(n / min(per_row, cond_example.shape[0])), 1)[:n]
        indices = prior.sample(
            class_labels=labels, cond_indices=cond_tokens, batch_size=n, guidance_scale=guidance, generator=generator
        )
        images = pipeline.decode_tokens(indices, output_type="pt") * 2 - 1  # (N, C, H, W) in [-1, 1]
    metrics = {"val_loss": total / max(tokens, 1), "step": step}
    scale = max(1, 64 // images.shape[-1])
    grid = make_image_grid(images, nrow=per_row, scale=scale)
    if num_classes:  # one row per class, named (or numbered) on its left
        grid = label_rows(grid, config.class_names or [str(c) for c in range(num_classes)], images.shape[-2] * scale)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    grid.save(Path(args.output_dir) / SAMPLES_FILE)
    log_images(accelerator, {"validation/samples": grid}, step)
    accelerator.log({"val/loss": metrics["val_loss"]}, step=step)
    logger.info("Validation at step %d: held-out loss %.4f", step, metrics["val_loss"])
    return metrics


def save_pipeline_outputs(pipeline, args, metrics: dict, resolution: int) -> None:
    """The final pipeline folder (`vqgan`, `transformer`, optional `cond_vqgan`), metrics, card; pushed if asked."""
    folder = Path(args.output_dir)
    pipeline.save_pretrained(folder)
    _write_run_files(folder, args, metrics)
    description, datasets = _dataset_description(args)
    card = pipeline.model_card(
        repo_id=args.hub_model_id or "path/to/this/folder",
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        dataset_description=description,
        datasets=datasets,
        grid_file=SAMPLES_FILE if (folder / SAMPLES_FILE).is_file() else None,
        curves_file=CURVES_FILE if (folder / CURVES_FILE).is_file() else None,
        model_name=Path(args.hub_model_id or folder.resolve().name).name,
        training_description=f"{metrics.get('step', '?')} steps, batch {args.train_batch_size} per process, "
        f"learning rate {args.learning_rate}, class dropout {args.class_dropout_prob}, pkeep {args.pkeep}.",
    )
    card.save(folder / "README.md")
    _push(args, folder, pipeline.save_pretrained, [SAMPLES_FILE])
