#!/usr/bin/env python
"""Peak resident memory and speed of one VQGAN training step on CPU, at the demo's configuration.

`examples/demo.py` trains the `digits-tiny` tokenizer on 32x32 digits with batch 64, L1 + PatchGAN (2 layers,
32 channels, `disc_weight` 0.1) + codebook losses, and LPIPS only when its pretrained VGG16 can be had (on this
offline machine it cannot, so the demo trains with `--perceptual_weight 0`; `--perceptual` adds LPIPS with a random
backbone, which costs the same as the real one). The step measured is one with the GAN on (the demo's second half):
generator forward, generator loss with the adaptive weight, backward, Adam step, then the discriminator's step.

variants:
  plain          taming's generator step: `VQGANLoss.generator_loss` then `backward()` of its total
                 (`examples/train.py --generator_backward plain`)
  single_backward  the single-backward generator loss alone (`single_backward=True`, examples/train.py's default)
  optimised      channels-last weights + the single-backward generator loss (one backward through LPIPS and the discriminator)
  checkpointing  optimised + `VQGANModel.enable_gradient_checkpointing()`

Each variant runs in its own process, because peak RSS (`ru_maxrss`) is a per-process high-water mark; the printed
"before" is that mark once the models, data and optimizers exist, so "step" is what training adds on top. With
`--repeats 2` the variants run again in reverse order and the step time is the median over all timed steps.

    python benchmarks/bench_train_step_cpu.py
    python benchmarks/bench_train_step_cpu.py --perceptual --steps 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("plain", "single_backward", "optimised", "checkpointing")


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_variant(variant: str, args) -> dict:
    import torch

    from hf_vqgan import VQGANImageProcessor, VQGANModel
    from hf_vqgan.losses import VQGANLoss
    from hf_vqgan.training.data import load_digits_dataset
    from hf_vqgan.training.presets import vqgan_preset
    from hf_vqgan.training.speedups import prepare_vqgan_for_training
    from random_lpips import random_vgg16_weights_file  # benchmarks/random_lpips.py

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = VQGANModel(**vqgan_preset("digits-tiny")).train()
    weights = random_vgg16_weights_file(args.seed) if args.perceptual else None  # timing only: a random backbone
    loss_fn = VQGANLoss(
        perceptual_weight=1.0 if args.perceptual else 0.0, lpips_vgg_weights_path=weights,
        disc_weight=0.1, disc_start=0, disc_num_layers=2, disc_base_channels=32,
        disc_in_channels=model.config.out_channels,
    )  # fmt: skip
    channels_last = variant in ("optimised", "checkpointing")
    if channels_last:
        prepare_vqgan_for_training(
            model, loss_fn, channels_last=True, gradient_checkpointing=variant == "checkpointing"
        )
    opt_g = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=4e-4, betas=(0.5, 0.9))
    transform = VQGANImageProcessor(32, channels=1)
    images = load_digits_dataset()["train"][: args.batch_size]["image"]
    pixels = torch.stack([transform(image) for image in images])  # (B, 1, 32, 32)
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    before = max_rss_mib()

    def step(global_step: int) -> float:
        out = model(pixels)
        g = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, global_step, model.last_layer_weight,
                                   single_backward=variant != "plain")  # fmt: skip
        g.total.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        d = loss_fn.discriminator_loss(pixels, out.sample, global_step)
        d.loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)
        return float(g.total.detach())

    first_loss = step(0)  # warm-up (oneDNN primitive caches)
    seconds = []
    for i in range(args.steps):
        start = time.perf_counter()
        step(i + 1)
        seconds.append(time.perf_counter() - start)
    return {"variant": variant, "before_mib": before, "peak_mib": max_rss_mib(), "seconds": seconds,
            "first_loss": first_loss}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per process, after one warm-up step.")
    parser.add_argument("--repeats", type=int, default=1, help="Rounds over the variants (order alternates).")
    parser.add_argument("--perceptual", action="store_true", help="Add LPIPS (random VGG16 backbone: same cost).")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_variant(args.child, args)))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    forwarded = ["--batch-size", str(args.batch_size), "--steps", str(args.steps), "--seed", str(args.seed)]
    forwarded += ["--perceptual"] if args.perceptual else []
    forwarded += ["--threads", str(args.threads)] if args.threads is not None else []
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else list(reversed(variants)):
            command = [sys.executable, __file__, "--child", variant, *forwarded]
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode != 0:
                raise RuntimeError(f"variant {variant} failed:\n{finished.stderr[-3000:]}")
            output = finished.stdout
            results[variant].append(json.loads(output.strip().splitlines()[-1]))

    import torch

    print(f"# bench_train_step_cpu.py, {datetime.datetime.now().isoformat(timespec='seconds')}: "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, float32, "
          f"{args.threads or torch.get_num_threads()} threads")  # fmt: skip
    losses = (
        "L1 + " + ("LPIPS (random VGG16) + " if args.perceptual else "") + "PatchGAN (2 layers, 32 ch, weight 0.1)"
    )
    print(f"digits-tiny tokenizer, 32x32 digits, batch {args.batch_size}, {losses} + codebook, GAN on, Adam; "
          f"{args.steps} timed steps per process x {args.repeats} round(s)")  # fmt: skip
    plain_seconds = None
    for variant, runs in results.items():
        seconds = statistics.median(s for run in runs for s in run["seconds"])
        before = max(run["before_mib"] for run in runs)
        peak = max(run["peak_mib"] for run in runs)
        plain_seconds = seconds if variant == "plain" else plain_seconds
        ratio = f", {plain_seconds / seconds:.2f}x plain's speed" if plain_seconds and variant != "plain" else ""
        print(f"  {variant:>15}: peak RSS {peak:7.0f} MiB (before the first step {before:6.0f} MiB, step adds "
              f"{peak - before:5.0f} MiB); {seconds:.3f} s/step = {args.batch_size / seconds:6.1f} images/s{ratio}; "
              f"first loss {runs[0]['first_loss']:.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
