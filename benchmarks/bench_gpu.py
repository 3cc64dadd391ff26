#!/usr/bin/env python
"""Every GPU figure of issues 8 and 18 in one run (budgeted to finish in under 8 minutes on one H100 or H200).

1. Sampling the prior (GPT 24 layers x 1024 wide, 16,384 codes, 16x16 = 256 tokens, batch 16, bf16), one loop with
   three decode steps: re-running the whole prefix per token (taming's sampler, `NoCacheDecodeStep`), the dynamic KV
   cache (`sample()`'s default), and the captured static-cache step (`StaticCacheDecodeStep`: `"compile"` =
   torch.compile reduce-overhead, `"cuda_graph"` = plain CUDA-graph capture), compile/capture time reported apart.
2. One VQGAN training step on taming's f16 ImageNet configuration (256 px, batch 16, LPIPS-VGG + PatchGAN + adaptive
   weight, bf16 autocast): a reference step built from the same modules without the optimisations (NCHW, eager, two
   generator forwards per step as taming's Lightning module runs, the adaptive weight's extra LPIPS/discriminator
   backward, unfused Adam) against the optimised step (channels-last, torch.compile of encoder/decoder/discriminator,
   one generator forward, the single-backward generator loss, fused Adam; gradient checkpointing if the peak is over 24 GiB).
3. Encode + quantize + decode, same configuration, batch 16: plain (float32, NCHW, `no_grad`) against the optimised
   path (`prepare_vqgan_for_inference` + `reconstruct_images`: channels-last, bf16 autocast, `inference_mode`).
4. Quantizers (issue 18): the training step of every 256 px (f16) preset, VQ, FSQ and LFQ alike, at batch 16
   (channels-last, bf16 autocast, eager, so no compile time): images/s and peak memory per quantizer.

Every figure is printed with its configuration, device and dtype, and appended to `--output` as it is measured, so
a run cut short still leaves its raw output. A failing figure prints `ERROR` and the run goes on.

    python benchmarks/bench_gpu.py --output benchmarks/results/gpu_raw.txt      # on the GPU machine
    python benchmarks/bench_gpu.py --tiny --output /tmp/raw.txt                 # tiny sizes, any device (tests)

LPIPS needs torchvision's VGG16 weights; without them (no network) it runs with a random VGG16 backbone, which
costs exactly the same, and the output says so.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import gc
import math
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch

from hf_vqgan import VQGANModel
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.losses.perceptual import lpips_weights_available
from hf_vqgan.models.prior import VQGANPriorConfig, VQGANPriorForCausalLM
from hf_vqgan.models.sampling import NoCacheDecodeStep, StaticCacheDecodeStep
from hf_vqgan.training.presets import VQGAN_PRESETS, vqgan_preset
from hf_vqgan.training.speedups import prepare_vqgan_for_training
from random_lpips import random_vgg16_weights_file  # benchmarks/random_lpips.py
from vqgan_inference import prepare_vqgan_for_inference, reconstruct_images  # benchmarks/vqgan_inference.py

FULL = {
    "prior": dict(codebook_size=16384, latent_height=16, latent_width=16, n_embd=1024, n_layer=24, n_head=16),
    "sampling_batch": 16,
    "vqgan": vqgan_preset("taming-imagenet-f16-1024"),
    "resolution": 256,
    "batch": 16,
    "disc": dict(disc_num_layers=3, disc_base_channels=64),
    "train_steps": 10,
    "codec_steps": 10,
    "quantizer_steps": 10,
}
TINY = {
    "prior": dict(codebook_size=64, latent_height=4, latent_width=4, n_embd=64, n_layer=2, n_head=4),
    "sampling_batch": 2,
    "vqgan": dict(
        base_channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(16,),
        sample_size=32,
        latent_channels=16,
        code_dim=8,
        codebook_size=64,
        norm_num_groups=8,
    ),  # fmt: skip
    "resolution": 32,
    "batch": 2,
    "disc": dict(disc_num_layers=2, disc_base_channels=16),
    "train_steps": 2,
    "codec_steps": 2,
    "quantizer_steps": 1,
}
MEMORY_TARGET_GIB = 24.0
# HBM bandwidth in bytes/s, for the weight-read bound of one decode step (SXM parts).
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


class Report:
    """Prints lines and appends them to the raw-output file at once (a run cut short keeps what it measured)."""

    def __init__(self, path: str | None):
        self.path = path
        self.errors = 0
        if path:
            open(path, "w").close()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def guarded(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a failing figure must not take the others with it
            self.errors += 1
            self(f"ERROR in {name}:")
            for line in traceback.format_exc().rstrip().splitlines():
                self(f"    {line}")
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def gib(num_bytes: float) -> float:
    return num_bytes / 2**30


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{gib(torch.cuda.max_memory_allocated(device)):.1f} GiB allocated / {gib(torch.cuda.max_memory_reserved(device)):.1f} GiB reserved"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ------------------------------------------------------------------------------------------------- sampling
def bench_sampling(report: Report, args, sizes: dict, device: torch.device, dtype: torch.dtype) -> None:
    config = VQGANPriorConfig(**sizes["prior"])
    batch = sizes["sampling_batch"]
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = VQGANPriorForCausalLM(config)
    model = model.to(dtype).eval()
    parameters = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    report(
        f"== sampling: GPT {config.n_layer} layers x {config.n_embd} wide, {config.n_head} heads, "
        f"{config.codebook_size} codes ({parameters / 1e6:.0f}M parameters, untied head), "
        f"{config.num_image_tokens} tokens, batch {batch}, {dtype}, attention {config._attn_implementation}"
    )
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    bandwidth = next((bw for name, bw in BANDWIDTH.items() if name in card), None)
    if bandwidth:
        bound = weight_bytes * config.num_image_tokens / bandwidth
        report(f"weight-read bound: {gib(weight_bytes):.2f} GiB per token x {config.num_image_tokens} tokens / "
               f"{bandwidth / 1e12:.2f} TB/s = {bound:.3f} s")  # fmt: skip

    def generator():
        return torch.Generator(device).manual_seed(args.seed)  # on the model's device: no host copies per token

    # Warm-up: a completion of the last 4 tokens touches every kernel of both eager paths.
    warm = torch.zeros(batch, config.num_image_tokens - 4, dtype=torch.long, device=device)
    model.sample(prefix_indices=warm, decode_step=NoCacheDecodeStep())
    model.sample(prefix_indices=warm)

    results = {}

    def rerun_prefix():
        no_cache = NoCacheDecodeStep()
        seconds, tokens = timed(lambda: model.sample(batch_size=batch, generator=generator(), decode_step=no_cache),
                                device)  # fmt: skip
        results["rerun"] = (seconds, tokens)
        report(f"{'re-run the prefix every step (taming, NoCacheDecodeStep):':65}{seconds:8.3f} s")

    def dynamic_cache():
        runs = [
            timed(lambda: model.sample(batch_size=batch, generator=generator()), device) for _ in range(args.repeats)
        ]
        seconds = statistics.median(s for s, _ in runs)
        results["dynamic"] = (seconds, runs[0][1])
        spread = ", ".join(f"{s:.3f}" for s, _ in runs)
        report(f"{'dynamic KV cache (sample(), KVCacheDecodeStep):':65}{seconds:8.3f} s  (runs {spread})")

    def captured(mode: str):
        compile_kwargs = None
        if mode == "compile" and device.type != "cuda":
            compile_kwargs = {"backend": "eager", "fullgraph": True}  # on CPU: trace only, no code generation
        step = StaticCacheDecodeStep(mode=mode, compile_kwargs=compile_kwargs)
        first, tokens = timed(lambda: model.sample(batch_size=batch, generator=generator(), decode_step=step), device)
        setup = sum(step.setup_seconds.values())
        runs = [timed(lambda: model.sample(batch_size=batch, generator=generator(), decode_step=step), device)[0]
                for _ in range(args.repeats)]  # fmt: skip
        seconds = statistics.median(runs)
        results[mode] = (seconds, tokens)
        backend = "" if compile_kwargs is None else " [CPU: dynamo trace only, backend='eager']"
        what = {"compile": "compile + warm-up", "cuda_graph": "capture + warm-up", "eager": "setup"}[mode]
        label = f"captured decode step, StaticCacheDecodeStep(mode={mode!r}):"
        report(f"{label:65}{seconds:8.3f} s  "
               f"(runs {', '.join(f'{r:.3f}' for r in runs)}; {what} {setup:.1f} s, first call {first:.1f} s)"
               f"{backend}")  # fmt: skip

    report.guarded("sampling: re-run the prefix", rerun_prefix)
    report.guarded("sampling: dynamic KV cache", dynamic_cache)
    report.guarded("sampling: captured decode (compile)", lambda: captured("compile"))
    if device.type == "cuda":
        report.guarded("sampling: captured decode (cuda_graph)", lambda: captured("cuda_graph"))
    else:
        report("captured decode step, StaticCacheDecodeStep(mode='cuda_graph'): skipped (needs CUDA)")
        report.guarded("sampling: static-cache decode loop (eager)", lambda: captured("eager"))

    if "dynamic" in results:
        compare_sampling_steps(report, results, batch, target=device.type == "cuda" and not args.tiny)


def compare_sampling_steps(report: Report, results: dict, batch: int, target: bool) -> None:
    """Speed of each decode step against the KV cache's, and how many samples are token-identical to it."""
    base_seconds, base_tokens = results["dynamic"]
    for name in ("rerun", "compile", "cuda_graph", "eager"):
        if name in results:
            seconds, tokens = results[name]
            same = (tokens == base_tokens).flatten(1).all(1).sum().item()
            report(f"  {name:>10}: speed {base_seconds / seconds:6.2f}x the dynamic cache's; "
                   f"{same}/{batch} samples token-identical to sample() from the same seed")  # fmt: skip
    best = min((results[n][0] for n in ("compile", "cuda_graph") if n in results), default=None)
    if best is not None and "rerun" in results and target:
        report(f"  captured vs re-run the prefix: {results['rerun'][0] / best:.1f}x; "
               f"target <= 0.15 s: {'MET' if best <= 0.15 else 'NOT MET'} ({best:.3f} s)")  # fmt: skip


# --------------------------------------------------------------------------------------------- training step
def build_tokenizer_and_loss(sizes: dict, args) -> tuple[VQGANModel, VQGANLoss, str]:
    """The initial weights, on the CPU: each variant trains its own copy on the device."""
    torch.manual_seed(args.seed)
    model = VQGANModel(**sizes["vqgan"]).train()
    real_lpips = not args.random_lpips and lpips_weights_available()
    weights = None if real_lpips else random_vgg16_weights_file(args.seed)
    loss_fn = VQGANLoss(
        perceptual_weight=1.0, lpips_vgg_weights_path=weights, disc_weight=0.8, disc_start=0, **sizes["disc"]
    )
    note = "LPIPS with torchvision's pretrained VGG16" if real_lpips else (
        "LPIPS with a RANDOM VGG16 backbone (pretrained weights unavailable here; the cost is identical)")  # fmt: skip
    return model, loss_fn, note


def reference_step(model, loss_fn, opt_g, opt_d, pixels, step, dtype):
    """taming's step with the same modules: generator update, then a second generator forward for the discriminator."""
    device_type = pixels.device.type
    with torch.autocast(device_type, dtype=dtype):
        out = model(pixels)
        g = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, step, last_layer=model.last_layer_weight)
    g.total.backward()  # runs LPIPS and the discriminator backward again, after the adaptive weight's autograd.grad
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        out = model(pixels)  # Lightning calls training_step once per optimizer, and taming's runs the model each time
        d = loss_fn.discriminator_loss(pixels, out.sample, step)
    d.loss.backward()
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)
    return float(g.total.detach()), float(d.loss.detach())


def optimised_step(model, loss_fn, opt_g, opt_d, pixels, step, dtype):
    device_type = pixels.device.type
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type, dtype=dtype):
        out = model(pixels)  # one generator forward serves both updates
        g = loss_fn.generator_loss(pixels, out.sample, out.quantizer_loss, step, last_layer=model.last_layer_weight,
                                   single_backward=True)  # fmt: skip
    g.total.backward()  # through the autoencoder only: LPIPS and the discriminator were differentiated once, above
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=dtype):
        d = loss_fn.discriminator_loss(pixels, out.sample, step)
    d.loss.backward()
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)
    return float(g.total.detach()), float(d.loss.detach())


def bench_training(report: Report, args, sizes: dict, device: torch.device, dtype: torch.dtype, clock) -> None:
    base_model, base_loss, note = build_tokenizer_and_loss(sizes, args)
    batch, resolution = sizes["batch"], sizes["resolution"]
    params = sum(p.numel() for p in base_model.parameters()) / 1e6
    report(f"== VQGAN training step: {params:.1f}M-parameter tokenizer {sizes['vqgan']}, {resolution} px, batch "
           f"{batch}, {dtype} autocast over float32 weights, L1 + {note} + PatchGAN {sizes['disc']} with the "
           f"adaptive weight (disc_start=0)")  # fmt: skip
    pixels = torch.rand(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(args.seed))
    pixels = (pixels * 2 - 1).to(device)
    results = {}

    def run(name: str, step_fn, channels_last: bool, compile: bool, checkpointing: bool, fused: bool):
        model, loss_fn = copy.deepcopy(base_model).to(device), copy.deepcopy(base_loss).to(device)
        prepare_vqgan_for_training(model, loss_fn, channels_last=channels_last, gradient_checkpointing=checkpointing,
                                   compile=compile and device.type == "cuda")  # fmt: skip
        if compile and device.type != "cuda":
            for module in (model.encoder, model.decoder, loss_fn.discriminator):
                module.compile(backend="eager")  # --tiny on CPU: trace only
        fused = fused and device.type == "cuda"
        opt_g = torch.optim.Adam(model.parameters(), lr=4.5e-6, betas=(0.5, 0.9), fused=fused)
        opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=4.5e-6, betas=(0.5, 0.9), fused=fused)
        reset_peak(device)
        first, losses = timed(lambda: step_fn(model, loss_fn, opt_g, opt_d, pixels, 0, dtype), device)
        for i in range(args.warmup):
            step_fn(model, loss_fn, opt_g, opt_d, pixels, i + 1, dtype)
        reset_peak(device)
        steps = sizes["train_steps"]
        seconds, _ = timed(lambda: [step_fn(model, loss_fn, opt_g, opt_d, pixels, i, dtype) for i in range(steps)],
                           device)  # fmt: skip
        images_per_second = batch * steps / seconds
        peak = gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else math.nan
        results[name] = (images_per_second, peak)
        report(f"{name:<34} {images_per_second:8.2f} images/s  peak {peak_memory(device)}  first step {first:.1f} s "
               f"(compile included); first losses g={losses[0]:.4f} d={losses[1]:.4f}")  # fmt: skip

    report.guarded("training: reference step", lambda: run("reference (taming-style, eager)", reference_step,
                                                           False, False, False, False))  # fmt: skip
    report.guarded("training: optimised step", lambda: run("optimised (NHWC, compile, 1 fwd)", optimised_step,
                                                           True, True, False, True))  # fmt: skip
    optimised = results.get("optimised (NHWC, compile, 1 fwd)")
    if optimised is not None and (optimised[1] > MEMORY_TARGET_GIB or args.all_variants):
        if clock.remaining() > 120 or args.all_variants:
            report.guarded("training: optimised step + checkpointing",
                           lambda: run("optimised + gradient checkpointing", optimised_step, True, True, True, True))  # fmt: skip
        else:
            report("optimised + gradient checkpointing: skipped (time budget)")
    reference = results.get("reference (taming-style, eager)")
    for name, (ips, peak) in results.items():
        if reference is not None and name != "reference (taming-style, eager)":
            verdict = ""
            if device.type == "cuda" and not args.tiny:
                ok = ips >= 2 * reference[0] and peak <= MEMORY_TARGET_GIB
                verdict = f"; target >= 2x and <= {MEMORY_TARGET_GIB:.0f} GiB: {'MET' if ok else 'NOT MET'}"
            report(f"  {name}: {ips / reference[0]:.2f}x the reference's images/s{verdict}")


# ------------------------------------------------------------------------------------------------ encode+decode
def bench_codec(report: Report, args, sizes: dict, device: torch.device, dtype: torch.dtype, clock) -> None:
    torch.manual_seed(args.seed)
    plain = VQGANModel(**sizes["vqgan"]).to(device).eval()
    batch, resolution = sizes["batch"], sizes["resolution"]
    report(f"== VQGAN encode+decode: {sizes['vqgan']}, {resolution} px, batch {batch}; plain float32 NCHW no_grad vs "
           f"channels-last {dtype} autocast inference_mode")  # fmt: skip
    pixels = torch.rand(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(args.seed))
    pixels = (pixels * 2 - 1).to(device)
    results = {}

    def measure(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        for _ in range(args.warmup):
            fn()
        steps = sizes["codec_steps"]
        reset_peak(device)
        seconds, _ = timed(lambda: [fn() for _ in range(steps)], device)
        out = fn()
        results[name] = batch * steps / seconds
        report(f"{name:<40} {results[name]:8.2f} images/s  peak {peak_memory(device)}")
        return out

    def plain_path():
        with torch.no_grad():
            return plain(pixels).sample

    outputs = {}
    report.guarded(
        "encode+decode: plain", lambda: outputs.setdefault("plain", measure("plain (float32, NCHW)", plain_path))
    )
    fast = prepare_vqgan_for_inference(copy.deepcopy(plain))
    autocast = dtype if dtype != torch.float32 else None
    report.guarded("encode+decode: optimised", lambda: outputs.setdefault("fast", measure(
        f"optimised (NHWC, {dtype})", lambda: reconstruct_images(fast, pixels, batch, autocast))))  # fmt: skip
    if args.all_variants or (device.type == "cuda" and clock.remaining() > 90):

        def compiled():
            fast.encoder.compile()
            fast.decoder.compile()
            measure(
                f"optimised + torch.compile (NHWC, {dtype})", lambda: reconstruct_images(fast, pixels, batch, autocast)
            )

        if device.type == "cuda":
            report.guarded("encode+decode: optimised + compile", compiled)
    if "plain" in outputs and "fast" in outputs:
        error = (outputs["fast"] - outputs["plain"]).float()
        psnr = 10 * math.log10(4.0 / max(error.pow(2).mean().item(), 1e-20))  # pixels span 2
        report(f"  optimised vs plain reconstructions: max |diff| {error.abs().max().item():.4f}, PSNR {psnr:.1f} dB")
    if "plain (float32, NCHW)" in results:
        for name, ips in results.items():
            if name != "plain (float32, NCHW)":
                report(f"  {name}: {ips / results['plain (float32, NCHW)']:.2f}x the plain path")


# ------------------------------------------------------------------------------------------------ quantizers
def quantizer_configs(tiny: bool) -> dict[str, dict]:
    """Issue 18's tokenizers to time: every 256 px (f16) preset, VQ, FSQ and LFQ alike; with `--tiny`, the tiny
    tokenizer with each quantizer type (about 64 codes)."""
    if tiny:
        base = {k: v for k, v in TINY["vqgan"].items() if k not in ("code_dim", "codebook_size")}
        return {
            "tiny, vq": TINY["vqgan"],
            "tiny, fsq": {**base, "quantizer_type": "fsq", "fsq_levels": [4, 4, 4]},
            "tiny, lfq": {**base, "quantizer_type": "lfq", "codebook_size": 64},
        }
    return {name: vqgan_preset(name) for name, config in VQGAN_PRESETS.items() if config.get("sample_size") == 256}


def bench_quantizers(report: Report, args, sizes: dict, device: torch.device, dtype: torch.dtype) -> None:
    """One training step of each f16 tokenizer (the optimised step, eager: no compile time): images/s, peak memory."""
    batch, resolution, steps = sizes["batch"], sizes["resolution"], sizes["quantizer_steps"]
    report(
        f"== quantizers: training step of each f16 preset, {resolution} px, batch {batch}, {dtype} autocast, "
        f"channels-last, eager, L1 + LPIPS + PatchGAN {sizes['disc']}; {steps} timed steps after one warm-up"
    )
    pixels = torch.rand(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(args.seed))
    pixels = (pixels * 2 - 1).to(device)

    def run(name: str, config: dict) -> None:
        model, loss_fn, _ = build_tokenizer_and_loss({**sizes, "vqgan": config}, args)
        model, loss_fn = model.to(device), loss_fn.to(device)
        prepare_vqgan_for_training(model, loss_fn, channels_last=True)
        fused = device.type == "cuda"
        opt_g = torch.optim.Adam(model.parameters(), lr=4.5e-6, betas=(0.5, 0.9), fused=fused)
        opt_d = torch.optim.Adam(loss_fn.discriminator.parameters(), lr=4.5e-6, betas=(0.5, 0.9), fused=fused)
        reset_peak(device)
        first, _ = timed(lambda: optimised_step(model, loss_fn, opt_g, opt_d, pixels, 0, dtype), device)
        seconds, _ = timed(lambda: [optimised_step(model, loss_fn, opt_g, opt_d, pixels, i + 1, dtype)
                                    for i in range(steps)], device)  # fmt: skip
        kind = model.config.quantizer_type
        shape = f"{kind:>3} {model.config.codebook_size:>6} codes x {model.config.code_dim:>3} dims"
        report(f"{name:<28} {shape} {batch * steps / seconds:8.2f} images/s  peak {peak_memory(device)}  "
               f"first step {first:.1f} s")  # fmt: skip

    for name, config in quantizer_configs(args.tiny).items():
        report.guarded(f"quantizers: {name}", functools.partial(run, name, config))


# ------------------------------------------------------------------------------------------------------ main
class Clock:
    def __init__(self, budget: float):
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        return self.budget - self.elapsed()


def release_compiled_state() -> None:
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=None, help="Write the raw output here as well (appended as it goes).")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes and few steps, to test the script on a CPU.")
    parser.add_argument(
        "--sections", default="sampling,training,codec,quantizers", help="Comma-separated subset to run."
    )
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--sampling-sizes", default=None, metavar="L,D,H,K,S,B", help="Override the prior: layers, "
                        "width, heads, codebook size, latent side, batch (e.g. 8,512,8,1024,16,4 for a CPU run).")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="Timed sampling runs per method (median).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps after the first, per variant.")
    parser.add_argument("--all-variants", action="store_true", help="Run optional variants whatever the budget.")
    parser.add_argument("--time-budget", type=float, default=420.0, help="Seconds; optional variants are skipped "
                        "when they would not fit.")  # fmt: skip
    parser.add_argument("--random-lpips", action="store_true", help="LPIPS with a random VGG16 backbone without "
                        "looking for the pretrained weights (same cost; implied by --tiny).")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.warmup, args.random_lpips = 1, 1, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock(args.time_budget)
    report = Report(args.output)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    sizes = dict(TINY if args.tiny else FULL)
    if args.sampling_sizes:
        layers, width, heads, codes, side, batch = (int(v) for v in args.sampling_sizes.split(","))
        sizes["prior"] = dict(codebook_size=codes, latent_height=side, latent_width=side, n_embd=width,
                              n_layer=layers, n_head=heads)  # fmt: skip
        sizes["sampling_batch"] = batch
    if device.type == "cuda":
        # PyTorch's defaults otherwise (TF32 convolutions, full-float32 matmuls: the code search needs them).
        torch.backends.cudnn.benchmark = True
        card = f"{torch.cuda.get_device_name(device)} ({gib(torch.cuda.get_device_properties(device).total_memory):.0f} GiB)"
    else:
        card = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
        if not args.tiny:
            report("WARNING: no CUDA device; the full sizes will be very slow here (use --tiny to test the script).")
    import transformers

    report(f"# hf_vqgan bench_gpu.py, {datetime.datetime.now().isoformat(timespec='seconds')}")
    report(f"# device: {card}; dtype: {dtype}; torch {torch.__version__}, transformers {transformers.__version__}, "
           f"python {sys.version.split()[0]}; sizes: {'TINY (script test, not figures)' if args.tiny else 'full'}")  # fmt: skip
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if "sampling" in sections:
        report.guarded("sampling", lambda: bench_sampling(report, args, sizes, device, dtype))
        report(f"(elapsed {clock.elapsed():.0f} s)")
    if "training" in sections:
        release_compiled_state()  # compiled samplers keep the prior and CUDA-graph pools alive otherwise
        report.guarded("training", lambda: bench_training(report, args, sizes, device, dtype, clock))
        report(f"(elapsed {clock.elapsed():.0f} s)")
    if "codec" in sections:
        release_compiled_state()
        report.guarded("codec", lambda: bench_codec(report, args, sizes, device, dtype, clock))
    if "quantizers" in sections:
        release_compiled_state()
        report.guarded("quantizers", lambda: bench_quantizers(report, args, sizes, device, dtype))
    report(f"# done in {clock.elapsed():.0f} s, {report.errors} error(s)")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
