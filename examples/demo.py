#!/usr/bin/env python
"""The main job on the built-in digits: train a tokenizer, train a class-conditional prior, sample, measure.

    python examples/demo.py --output_dir outputs            # what `make demo` runs
    python examples/demo.py --output_dir outputs_lowres --conditional lowres

Writes `outputs/vqgan/` (the tokenizer, its card, a reconstruction grid), `outputs/pipeline/` (a complete
`VQGANTransformerPipeline` folder), `outputs/samples.png` (one row per digit) and `outputs/metrics.json`, and prints
the figures. Both stages go through `examples/train.py`, exactly as a user would run them.

`--conditional lowres` also trains a condition tokenizer of 4x4 box-averaged digits (`cond_vqgan/`) and a prior
conditioned on them alone (`pipeline_lowres/`), and adds `evaluate_lowres_conditioning`'s figures (how closely
samples follow their condition, against shuffled conditions; classifier accuracy against the source digit's label)
and `samples_lowres.png` (conditions, samples, source digits).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # digits_scoring.py sits beside this file
from digits_scoring import evaluate_class_samples, evaluate_lowres_conditioning  # noqa: E402

logger = logging.getLogger("demo")


def run_stage(args: list[str]) -> float:
    start = time.perf_counter()
    command = [sys.executable, str(HERE / "train.py"), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def perceptual_arguments() -> list[str]:
    """Real LPIPS when its VGG16 weights can be had; otherwise say so and train without the perceptual term."""
    from hf_vqgan.losses.perceptual import lpips_weights_available

    if lpips_weights_available():
        return []
    print(
        "NOTE: LPIPS's pretrained VGG16 weights are not available on this machine (no network, nothing in the torch "
        "hub cache), so the demo trains with --perceptual_weight 0 (pixel + PatchGAN + codebook losses). Put "
        "vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints or pass --lpips_vgg_weights to train.py for the full loss.",
        flush=True,
    )
    return ["--perceptual_weight", "0"]


def schedule(steps: int, batch_size: int, learning_rate: str, *extra: str) -> list[str]:
    """Steps, batch, learning rate, one validation at the end, a checkpoint every 500 steps (only the last kept)."""
    return [
        "--max_train_steps", str(steps), "--train_batch_size", str(batch_size), "--learning_rate", learning_rate,
        *extra, "--validation_steps", str(steps), "--checkpointing_steps", "500", "--checkpoints_total_limit", "1",
    ]  # fmt: skip


def tokenizer_stage(args, out: Path, common: list[str]) -> list[str]:
    """The digits tokenizer: a small GAN (switched on half-way) and LPIPS when its weights are here."""
    gan = ["--disc_start", str(args.vqgan_steps // 2), "--disc_weight", "0.1", "--disc_num_layers", "2",
           "--disc_base_channels", "32"]  # fmt: skip
    warmup = ["--lr_scheduler", "cosine", "--lr_warmup_steps", "100"]
    return ["vqgan", "--preset", "digits-tiny", "--output_dir", str(out / "vqgan"),
            *schedule(args.vqgan_steps, 64, "4e-4", *warmup), *gan, *perceptual_arguments(), *common]  # fmt: skip


def prior_stage(args, out: Path, common: list[str]) -> list[str]:
    """The class-conditional prior over the tokenizer's codes, with class dropout for guidance."""
    warmup = ["--lr_scheduler", "cosine", "--lr_warmup_steps", "100"]
    return ["transformer", "--vqgan_model_name_or_path", str(out / "vqgan"), "--class_column", "label",
            "--preset", "digits-tiny", "--output_dir", str(out / "pipeline"),
            *schedule(args.transformer_steps, 64, "1e-3", *warmup), "--class_dropout_prob", "0.1",
            "--guidance_scale", str(args.guidance_scale), "--tokenized_cache_dir", str(out / "tokenized"),
            *common]  # fmt: skip


# The 4x4 box averages of the 32x32 digits (factor 8), tokenised one code per pixel by an f1 tokenizer; the prior
# sees no class label, so the classifier accuracy of its samples measures what the condition carries.
LOWRES = ["--condition_type", "lowres", "--lowres_factor", "8"]


def lowres_tokenizer_stage(args, out: Path, common: list[str]) -> list[str]:
    return ["vqgan", "--preset", "digits-lowres-cond", *LOWRES, "--resolution", "32", "--image_channels", "1",
            "--output_dir", str(out / "cond_vqgan"), *schedule(args.vqgan_steps // 2, 64, "4e-4"),
            "--disc_weight", "0", "--perceptual_weight", "0", *common]  # fmt: skip


def lowres_prior_stage(args, out: Path, common: list[str]) -> list[str]:
    warmup = ["--lr_scheduler", "cosine", "--lr_warmup_steps", "100"]
    return ["transformer", "--vqgan_model_name_or_path", str(out / "vqgan"),
            "--cond_vqgan_model_name_or_path", str(out / "cond_vqgan"), *LOWRES, "--preset", "digits-tiny",
            "--output_dir", str(out / "pipeline_lowres"), *schedule(args.transformer_steps, 64, "1e-3", *warmup),
            "--tokenized_cache_dir", str(out / "tokenized"), *common]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs")
    parser.add_argument("--vqgan_steps", type=int, default=700)
    parser.add_argument("--transformer_steps", type=int, default=1500)
    parser.add_argument("--guidance_scale", type=float, default=2.0)
    parser.add_argument("--samples_per_class", type=int, default=10)
    parser.add_argument(
        "--conditional",
        choices=["lowres"],
        default=None,
        help="Also train a prior conditioned on 4x4 low-resolution digits (and no class label) and measure it.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    common = ["--seed", str(args.seed), "--report_to", "none", "--dataloader_num_workers", "0"]

    timings = {"vqgan_seconds": run_stage(tokenizer_stage(args, out, common))}
    timings["transformer_seconds"] = run_stage(prior_stage(args, out, common))
    figures = evaluate_class_samples(
        out / "pipeline",
        out / "samples.png",
        samples_per_class=args.samples_per_class,
        guidance_scale=args.guidance_scale,
        seed=args.seed,
    )
    vqgan_metrics = json.loads((out / "vqgan" / "metrics.json").read_text())
    figures.update({f"vqgan_{k}": v for k, v in vqgan_metrics.items()}, **timings)
    if args.conditional:
        timings["cond_vqgan_seconds"] = run_stage(lowres_tokenizer_stage(args, out, common))
        timings["cond_transformer_seconds"] = run_stage(lowres_prior_stage(args, out, common))
        figures.update(
            evaluate_lowres_conditioning(out / "pipeline_lowres", out / "samples_lowres.png", seed=args.seed)
        )
        figures.update(timings)

    (out / "metrics.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print("\n==== hf_vqgan demo figures ====")
    for key in sorted(figures):
        value = figures[key]
        print(f"{key:>40}: {value:.4f}" if isinstance(value, float) else f"{key:>40}: {value}")
    print(f"\nPipeline folder: {out / 'pipeline'}\nSample grid (one row per digit): {out / 'samples.png'}")
    if args.conditional:
        print(f"Lowres pipeline: {out / 'pipeline_lowres'}; conditions, samples, digits: {out / 'samples_lowres.png'}")


if __name__ == "__main__":
    main()
