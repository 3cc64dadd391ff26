#!/usr/bin/env python
"""VQGAN vs its VQVAE baseline, same model and budget: held-out PSNR, SSIM and sharpness.

The seed claim of the VQGAN paper is that the adversarial (and perceptual) terms give sharper reconstructions than
an L2-only VQVAE. This trains both with `examples/train.py` for the same number of steps (or reuses a finished
VQGAN run via `--vqgan`), then measures on held-out images:

- PSNR and SSIM of the reconstructions;
- sharpness: the mean gradient magnitude of the reconstructions relative to the originals' (1.0 = as sharp).

Two data sets (`--data`):

- `digits`: the built-in digits with the `digits-tiny` preset (the demo's tokenizer), evaluated on the fixed
  held-out split. The 8x8 digits are shown at 32x32, so they have little fine detail to lose.
- `photos`: 32x32 RGB (`--channels 1`: grayscale) patches of scikit-image's sample photos (textures: grass, gravel,
  brick, text, ...), cut with stride 16 from each photo resized to 128x128; the patches of four whole photos are
  held out. The model is `digits-tiny` with as many channels in and out: 48 (or 16) pixel values per 8-dimensional
  code from a codebook of 128, so the bottleneck is lossy and the choice of loss decides what is lost.

    python benchmarks/bench_vqgan_vs_vqvae.py --data photos --steps 1000 --batch_size 32 --with_l1_baseline \
        --output_dir /tmp/vq_vs_vae_photos --grid docs/vqgan_vs_vqvae.png
    python benchmarks/bench_vqgan_vs_vqvae.py --vqgan outputs/vqgan --steps 700   # reuse the demo's tokenizer

`--with_l1_baseline` also trains L1 + codebook without the GAN, to tell what the GAN adds from what the L1 pixel
loss adds. `--grid` writes held-out originals and each model's reconstructions, a row each, as one PNG.
LPIPS is used for the VQGAN run only where its VGG16 weights are available; the script prints which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--learning_rate", "4e-4", "--lr_scheduler", "cosine", "--lr_warmup_steps", "100", "--report_to", "none",
          "--checkpointing_steps", "100000", "--seed", "0"]  # fmt: skip
PHOTOS = ["astronaut", "brick", "camera", "cat", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
          "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text", "clock"]  # fmt: skip
HELD_OUT_PHOTOS = ["coffee", "gravel", "rocket", "text"]  # one object, one texture, one scene, one document
PATCH, PHOTO_SIZE = 32, 128


def write_photo_patches(folder: Path, channels: int = 3) -> tuple[Path, torch.Tensor]:
    """Cut the photos into 32x32 patches: the training ones into `folder/train` as PNG, the held-out ones returned."""
    import skimage.data

    from hf_vqgan import VQGANImageProcessor
    from hf_vqgan.image_utils import convert_image_mode

    train_dir = folder / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    to_tensor = VQGANImageProcessor(PATCH, channels=channels)
    held_out = []
    for name in PHOTOS:
        photo = convert_image_mode(Image.fromarray(np.asarray(getattr(skimage.data, name)())), channels)
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        photo = photo.crop((left, top, left + side, top + side)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.LANCZOS)
        stride = PATCH if name in HELD_OUT_PHOTOS else PATCH // 2  # held-out patches do not overlap
        for top in range(0, PHOTO_SIZE - PATCH + 1, stride):
            for left in range(0, PHOTO_SIZE - PATCH + 1, stride):
                patch = photo.crop((left, top, left + PATCH, top + PATCH))
                if name in HELD_OUT_PHOTOS:
                    held_out.append(to_tensor(patch))
                else:
                    patch.save(train_dir / f"{name}_{top:03d}_{left:03d}.png")
    return train_dir, torch.stack(held_out)


def digits_held_out() -> torch.Tensor:
    from hf_vqgan import VQGANImageProcessor
    from hf_vqgan.training.data import load_digits_dataset

    transform = VQGANImageProcessor(32, channels=1)
    return torch.stack([transform(image) for image in load_digits_dataset()["validation"]["image"]])


def train(output_dir: Path, steps: int, batch_size: int, extra: list[str]) -> float:
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "examples" / "train.py"), "vqgan", "--output_dir", str(output_dir),
               "--max_train_steps", str(steps), "--validation_steps", str(steps), "--train_batch_size",
               str(batch_size), *COMMON, *extra]  # fmt: skip
    subprocess.run(command, check=True)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model_dir: Path, images: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    from hf_vqgan import VQGANModel
    from hf_vqgan.metrics import CodebookUsage, psnr, relative_sharpness, ssim

    model = VQGANModel.from_pretrained(model_dir).eval()
    out = model(images)
    recon = out.sample.clamp(-1, 1)
    usage = CodebookUsage(model.config.codebook_size)
    usage.update(out.indices)
    figures = {
        "psnr": float(psnr(recon, images)),
        "ssim": float(ssim(recon, images)),
        "relative_sharpness": float(relative_sharpness(recon, images)),
        "codebook_usage": float(usage.usage()),
        "codebook_perplexity": float(usage.perplexity()),
    }
    return figures, recon


def write_grid(path: Path, images: torch.Tensor, reconstructions: dict[str, torch.Tensor], count: int = 8) -> None:
    """Rows: held-out originals, then each model's reconstructions of them (spread over the held-out set)."""
    from hf_vqgan.image_utils import make_image_grid

    pick = torch.linspace(0, len(images) - 1, count).round().long()
    rows = [images[pick], *(recon[pick] for recon in reconstructions.values())]
    make_image_grid(torch.cat(rows), nrow=count, scale=4, padding=4).save(path)
    print(f"grid: {path} (rows: originals, {', '.join(reconstructions)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["digits", "photos"], default="digits")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="Photos: RGB or grayscale.")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--disc_weight", type=float, default=None, help="Defaults to 0.1 (digits), 0.8 (photos).")
    parser.add_argument("--disc_start", type=int, default=None, help="Defaults to half the steps.")
    parser.add_argument("--output_dir", default="/tmp/hf_vqgan_vq_vs_vae")
    parser.add_argument("--vqgan", default=None, help="A finished VQGAN folder to reuse instead of training one.")
    parser.add_argument("--with_l1_baseline", action="store_true", help="Also train L1 + codebook, without the GAN.")
    parser.add_argument("--grid", default=None, help="Write originals and reconstructions to this PNG.")
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    from hf_vqgan.losses.perceptual import lpips_weights_available
    from hf_vqgan.training.presets import vqgan_preset

    if args.data == "digits":
        model, images = ["--preset", "digits-tiny"], digits_held_out()
        described = "digits-tiny on the built-in digits (held-out split)"
    else:
        config = {**vqgan_preset("digits-tiny"), "in_channels": args.channels, "out_channels": args.channels}
        (out / "model_config.json").write_text(json.dumps(config))
        train_dir, images = write_photo_patches(out / "photos", args.channels)
        model = ["--model_config", str(out / "model_config.json"), "--train_data_dir", str(train_dir)]
        described = (f"digits-tiny with {'RGB' if args.channels == 3 else 'grayscale'} in/out on 32x32 patches of "
                     f"scikit-image photos ("
                     f"{len(list(train_dir.glob('*.png')))} training patches from {len(PHOTOS) - len(HELD_OUT_PHOTOS)}"
                     f" photos; {len(images)} held-out patches of {', '.join(HELD_OUT_PHOTOS)})")  # fmt: skip
    disc_weight = args.disc_weight if args.disc_weight is not None else (0.1 if args.data == "digits" else 0.8)
    disc_start = args.disc_start if args.disc_start is not None else args.steps // 2

    lpips = lpips_weights_available()
    seconds = {}
    vqgan_dir = Path(args.vqgan) if args.vqgan else out / "vqgan"
    if not args.vqgan:
        seconds["vqgan"] = train(vqgan_dir, args.steps, args.batch_size, [*model,
            "--disc_start", str(disc_start), "--disc_weight", str(disc_weight), "--disc_num_layers", "2",
            "--disc_base_channels", "32", *([] if lpips else ["--perceptual_weight", "0"]),
        ])  # fmt: skip
    seconds["vqvae"] = train(out / "vqvae", args.steps, args.batch_size, [*model, "--perceptual_weight", "0",
                                                                          "--disc_weight", "0", "--pixel_loss", "l2"])  # fmt: skip
    runs = {"vqgan": vqgan_dir, "vqvae": out / "vqvae"}
    if args.with_l1_baseline:
        seconds["vq-l1"] = train(out / "vq-l1", args.steps, args.batch_size, [*model, "--perceptual_weight", "0",
                                                                             "--disc_weight", "0", "--pixel_loss", "l1"])  # fmt: skip
        runs["vq-l1"] = out / "vq-l1"
    evaluated = {name: evaluate(folder, images) for name, folder in runs.items()}
    results = {name: figures for name, (figures, _) in evaluated.items()}
    print(f"\n{described}; {args.steps} steps each, batch {args.batch_size}, CPU, float32. VQGAN losses: L1 + "
          f"PatchGAN (hinge, adaptive weight x {disc_weight} from step {disc_start}) + codebook"
          f"{' + LPIPS' if lpips else ' (LPIPS weights unavailable)'}; VQVAE: L2 + codebook"
          f"{'; vq-l1: L1 + codebook' if args.with_l1_baseline else ''}.")  # fmt: skip
    print(f"{'model':>8} {'PSNR dB':>8} {'SSIM':>7} {'rel. sharpness':>15} {'usage':>7} {'train s':>8}")
    for name, figures in results.items():
        print(f"{name:>8} {figures['psnr']:8.2f} {figures['ssim']:7.4f} {figures['relative_sharpness']:15.3f} "
              f"{figures['codebook_usage']:7.3f} {seconds.get(name, float('nan')):8.0f}")  # fmt: skip
    summary = {"data": args.data, "steps": args.steps, "batch_size": args.batch_size, "disc_weight": disc_weight,
               "disc_start": disc_start, "lpips": lpips, "results": results, "seconds": seconds}  # fmt: skip
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if args.grid:
        write_grid(Path(args.grid), images, {name: recon for name, (_, recon) in evaluated.items()})


if __name__ == "__main__":
    main()
