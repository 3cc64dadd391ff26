#!/usr/bin/env python
"""VQGAN vs its VQVAE baseline on the built-in digits, same budget: held-out PSNR, SSIM and sharpness.

The seed claim of the VQGAN paper is that the adversarial (and perceptual) terms give sharper reconstructions than
an L2-only VQVAE. This trains both with `examples/train.py` on the `digits-tiny` preset for the same number of steps
(or reuses a finished VQGAN run via `--vqgan`), then measures on the fixed held-out split:

- PSNR and SSIM of the reconstructions;
- sharpness: the mean gradient magnitude of the reconstructions relative to the originals' (1.0 = as sharp).

    python benchmarks/bench_vqgan_vs_vqvae.py --steps 700 --output_dir /tmp/vq_vs_vae
    python benchmarks/bench_vqgan_vs_vqvae.py --vqgan outputs/vqgan --steps 700   # reuse the demo's tokenizer

LPIPS is used for the VQGAN run only where its VGG16 weights are available; the script prints which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--preset", "digits-tiny", "--train_batch_size", "64", "--learning_rate", "4e-4", "--lr_scheduler", "cosine",
          "--lr_warmup_steps", "100", "--report_to", "none", "--checkpointing_steps", "100000", "--seed", "0"]  # fmt: skip


def train(output_dir: Path, steps: int, extra: list[str]) -> float:
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "examples" / "train.py"), "vqgan", "--output_dir", str(output_dir),
               "--max_train_steps", str(steps), "--validation_steps", str(steps), *COMMON, *extra]  # fmt: skip
    subprocess.run(command, check=True)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model_dir: Path) -> dict[str, float]:
    from hf_vqgan import VQGANModel
    from hf_vqgan.training.data import ImageTransform, load_digits_dataset
    from hf_vqgan.training.metrics import CodebookUsage, psnr, relative_sharpness, ssim

    model = VQGANModel.from_pretrained(model_dir).eval()
    transform = ImageTransform(model.config.sample_size, model.config.in_channels, center_crop=True)
    images = torch.stack([transform(image) for image in load_digits_dataset()["validation"]["image"]])
    out = model(images)
    recon = out.sample.clamp(-1, 1)
    usage = CodebookUsage(model.config.codebook_size)
    usage.update(out.indices)
    return {
        "psnr": float(psnr(recon, images)),
        "ssim": float(ssim(recon, images)),
        "relative_sharpness": float(relative_sharpness(recon, images)),
        "codebook_usage": float(usage.usage()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--output_dir", default="/tmp/hf_vqgan_vq_vs_vae")
    parser.add_argument("--vqgan", default=None, help="A finished VQGAN folder to reuse instead of training one.")
    args = parser.parse_args()
    out = Path(args.output_dir)

    from hf_vqgan.losses.perceptual import lpips_weights_available

    lpips = lpips_weights_available()
    seconds = {}
    vqgan_dir = Path(args.vqgan) if args.vqgan else out / "vqgan"
    if not args.vqgan:
        seconds["vqgan"] = train(vqgan_dir, args.steps, [
            "--disc_start", str(args.steps // 2), "--disc_weight", "0.1", "--disc_num_layers", "2",
            "--disc_base_channels", "32", *([] if lpips else ["--perceptual_weight", "0"]),
        ])  # fmt: skip
    seconds["vqvae"] = train(out / "vqvae", args.steps, ["--perceptual_weight", "0", "--disc_weight", "0",
                                                         "--pixel_loss", "l2"])  # fmt: skip
    results = {"vqgan": evaluate(vqgan_dir), "vqvae": evaluate(out / "vqvae")}
    print(f"\ndigits-tiny, {args.steps} steps each, batch 64, CPU, float32; VQGAN losses: L1 + PatchGAN (hinge, adaptive "
          f"weight x 0.1 from step {args.steps // 2}) + codebook{' + LPIPS' if lpips else ' (LPIPS weights unavailable)'};"
          f" VQVAE: L2 + codebook.")  # fmt: skip
    print(f"{'model':>8} {'PSNR dB':>8} {'SSIM':>7} {'rel. sharpness':>15} {'usage':>7} {'train s':>8}")
    for name, figures in results.items():
        print(f"{name:>8} {figures['psnr']:8.2f} {figures['ssim']:7.4f} {figures['relative_sharpness']:15.3f} "
              f"{figures['codebook_usage']:7.3f} {seconds.get(name, float('nan')):8.0f}")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"results": results, "seconds": seconds, "lpips": lpips}, indent=2))


if __name__ == "__main__":
    main()
