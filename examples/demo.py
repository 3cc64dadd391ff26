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
    timings = {}

    timings["vqgan_seconds"] = run_stage([
        "vqgan", "--preset", "digits-tiny", "--output_dir", str(out / "vqgan"), "--max_train_steps", str(args.vqgan_steps),
        "--train_batch_size", "64", "--learning_rate", "4e-4", "--lr_scheduler", "cosine", "--lr_warmup_steps", "100",
        "--disc_start", str(args.vqgan_steps // 2), "--disc_weight", "0.1", "--disc_num_layers", "2",
        "--disc_base_channels", "32", "--validation_steps", str(args.vqgan_steps), "--checkpointing_steps", "500",
        "--checkpoints_total_limit", "1", *perceptual_arguments(), *common,
    ])  # fmt: skip
    timings["transformer_seconds"] = run_stage([
        "transformer", "--vqgan_model_name_or_path", str(out / "vqgan"), "--class_column", "label",
        "--preset", "digits-tiny", "--output_dir", str(out / "pipeline"), "--max_train_steps", str(args.transformer_steps),
        "--train_batch_size", "64", "--learning_rate", "1e-3", "--lr_scheduler", "cosine", "--lr_warmup_steps", "100",
        "--class_dropout_prob", "0.1", "--guidance_scale", str(args.guidance_scale),
        "--validation_steps", str(args.transformer_steps), "--checkpointing_steps", "500", "--checkpoints_total_limit", "1",
        "--tokenized_cache_dir", str(out / "tokenized"), *common,
    ])  # fmt: skip

    from hf_vqgan.training.evaluation import evaluate_class_samples

    figures = evaluate_class_samples(
        out / "pipeline", out / "samples.png", samples_per_class=args.samples_per_class,
        guidance_scale=args.guidance_scale, seed=args.seed,
    )  # fmt: skip
    vqgan_metrics = json.loads((out / "vqgan" / "metrics.json").read_text())
    figures.update({f"vqgan_{k}": v for k, v in vqgan_metrics.items()}, **timings)

    if args.conditional:
        from hf_vqgan.training.evaluation import evaluate_lowres_conditioning

        # The 4x4 box averages of the 32x32 digits (factor 8), tokenised one code per pixel by an f1 tokenizer; the
        # prior sees no class label, so the classifier accuracy of its samples measures what the condition carries.
        lowres = ["--condition_type", "lowres", "--lowres_factor", "8"]
        timings["cond_vqgan_seconds"] = run_stage([
            "vqgan", "--preset", "digits-lowres-cond", *lowres, "--resolution", "32", "--image_channels", "1",
            "--output_dir", str(out / "cond_vqgan"), "--max_train_steps", str(args.vqgan_steps // 2),
            "--train_batch_size", "64", "--learning_rate", "4e-4", "--disc_weight", "0", "--perceptual_weight", "0",
            "--validation_steps", str(args.vqgan_steps), "--checkpointing_steps", "500", "--checkpoints_total_limit", "1",
            *common,
        ])  # fmt: skip
        timings["cond_transformer_seconds"] = run_stage([
            "transformer", "--vqgan_model_name_or_path", str(out / "vqgan"),
            "--cond_vqgan_model_name_or_path", str(out / "cond_vqgan"), *lowres,
            "--preset", "digits-tiny", "--output_dir", str(out / "pipeline_lowres"),
            "--max_train_steps", str(args.transformer_steps), "--train_batch_size", "64", "--learning_rate", "1e-3",
            "--lr_scheduler", "cosine", "--lr_warmup_steps", "100", "--validation_steps", str(args.transformer_steps),
            "--checkpointing_steps", "500", "--checkpoints_total_limit", "1",
            "--tokenized_cache_dir", str(out / "tokenized"), *common,
        ])  # fmt: skip
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
