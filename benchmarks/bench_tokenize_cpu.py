#!/usr/bin/env python
"""Tokenising on CPU, plain against optimised: the scikit-learn digits and a folder of photos.

- digits: all 1,797 digits (train + validation), shown at 32x32 as training does, with the `digits-tiny` tokenizer;
- photos: scikit-image's bundled sample photos (`skimage.data`), written to a folder as PNG, read back, center
  cropped and resized to 256x256 RGB. The tokenizer is taming's f16 layout (multipliers 1,1,2,2,4, attention at
  16x16, 1,024 codes) at a quarter of its width (base 64 channels, one ResNet block per level): the full model
  takes several seconds per image on this CPU. Both are randomly initialised: speed does not depend on the weights.

plain:     `model.tokenize(batch)` under `torch.no_grad()`, float32 NCHW, batch by batch (what
           `hf_vqgan.training.tokenize.tokenize_split` runs);
optimised: `prepare_vqgan_for_inference(model)` (eval, no grad, channels-last weights) and
           `tokenize_images(model, pixels, batch_size)` (inference_mode, batched).

Images are decoded and transformed once, up front (timed separately: the same work for both paths); the figures
are tokenizer throughput. The two paths alternate, the order flipping every repeat, so that load from other
processes falls on both alike; each figure is the median over repeats, and the best pass is printed too (on a
shared machine it is the least disturbed). bf16 is not used on CPU (without AMX it is slower than float32).

    python benchmarks/bench_tokenize_cpu.py                       # both datasets
    python benchmarks/bench_tokenize_cpu.py --datasets digits --repeats 3
    python benchmarks/bench_tokenize_cpu.py --tiny                # seconds, to check the script runs
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_vqgan import VQGANImageProcessor, VQGANModel
from hf_vqgan.training.data import load_digits_dataset
from hf_vqgan.training.presets import vqgan_preset
from vqgan_inference import prepare_vqgan_for_inference, tokenize_images  # benchmarks/vqgan_inference.py

PHOTO_TOKENIZER = dict(
    base_channels=64,
    channel_multipliers=(1, 1, 2, 2, 4),
    num_res_blocks=1,
    attention_resolutions=(16,),
    sample_size=256,
    latent_channels=128,
    code_dim=128,
    codebook_size=1024,
)
PHOTOS = ["astronaut", "brick", "camera", "cat", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
          "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text", "clock"]  # fmt: skip


def digits_pixels(limit: int | None) -> torch.Tensor:
    splits = load_digits_dataset()
    images = list(splits["train"]["image"]) + list(splits["validation"]["image"])
    transform = VQGANImageProcessor(32, channels=1)
    return torch.stack([transform(image) for image in images[:limit]])  # (N, 1, 32, 32)


def photo_pixels(folder: Path, resolution: int, limit: int | None) -> torch.Tensor:
    """Write scikit-image's sample photos into `folder` as PNG files, then read them as a dataset would."""
    import skimage.data

    for name in PHOTOS[:limit]:
        array = getattr(skimage.data, name)()
        Image.fromarray(np.asarray(array)).save(folder / f"{name}.png")
    transform = VQGANImageProcessor(resolution, channels=3)  # grayscale and RGBA photos become RGB
    return torch.stack([transform(Image.open(path)) for path in sorted(folder.glob("*.png"))])  # (N, 3, H, W)


def plain_tokenize(model: VQGANModel, pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.tokenize(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])


def compare(name: str, config: dict, pixels: torch.Tensor, args) -> None:
    torch.manual_seed(args.seed)
    plain = VQGANModel(**config).eval()
    fast = prepare_vqgan_for_inference(copy.deepcopy(plain))
    runs = {
        "plain": lambda: plain_tokenize(plain, pixels, args.batch_size),
        "optimised": lambda: tokenize_images(fast, pixels, args.batch_size),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    outputs = {}
    for repeat in range(args.warmup + args.repeats):
        for key in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
            start = time.perf_counter()
            outputs[key] = runs[key]()
            if repeat >= args.warmup:
                times[key].append(time.perf_counter() - start)
    n = pixels.shape[0]
    parameters = sum(p.numel() for p in plain.parameters()) / 1e6
    print(f"\n[{name}] {n} images {tuple(pixels.shape[1:])}, batch {args.batch_size}, {parameters:.1f}M-parameter "
          f"tokenizer {config}")  # fmt: skip
    rates, best = {}, {}
    for key, values in times.items():
        rates[key], best[key] = n / statistics.median(values), n / min(values)
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {key:>9}: {rates[key]:8.1f} images/s median, {best[key]:8.1f} best (seconds per pass: {spread})")
    agree = (outputs["plain"] == outputs["optimised"]).float().mean().item()
    print(f"  ratio optimised / plain: {rates['optimised'] / rates['plain']:.2f}x (medians), "
          f"{best['optimised'] / best['plain']:.2f}x (best passes); codes identical: {agree:.4%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="A few images of each, to check the script runs.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    limit = 8 if args.tiny else None
    print(f"# bench_tokenize_cpu.py, {datetime.datetime.now().isoformat(timespec='seconds')}: "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, float32, "
          f"torch {torch.__version__}")  # fmt: skip
    datasets = {s.strip() for s in args.datasets.split(",")}
    if "digits" in datasets:
        start = time.perf_counter()
        pixels = digits_pixels(limit)
        print(f"digits: decoded and transformed {len(pixels)} images in {time.perf_counter() - start:.1f} s")
        compare("digits, digits-tiny preset, 32 px", vqgan_preset("digits-tiny"), pixels, args)
    if "photos" in datasets:
        resolution = 64 if args.tiny else 256
        config = {**PHOTO_TOKENIZER, "sample_size": resolution}
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            pixels = photo_pixels(Path(folder), resolution, 4 if args.tiny else None)
            print(f"photos: wrote, read and transformed {len(pixels)} images in {time.perf_counter() - start:.1f} s")
        compare(f"skimage sample photos, f16 layout at quarter width, {resolution} px", config, pixels, args)


if __name__ == "__main__":
    main()
