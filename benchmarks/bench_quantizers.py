#!/usr/bin/env python
"""Four quantizers, one tokenizer and one budget: VQ (plain), VQ (l2 + low-dim codes + restarts), FSQ and LFQ.

Issue 18's measurement. Every tokenizer is the `digits-tiny` architecture (latent grid 8x8 for 32x32 images) with
only its quantizer changed, trained by `examples/train.py vqgan` (a subprocess, as a user runs it) for the same
number of steps with the same losses (L1 + PatchGAN from half-way + the quantizer's own terms; LPIPS where its
weights exist). The quantizers (`--quantizers`, default all four):

- `vq-plain`: a learned codebook of full-width codes (`code_dim` = `latent_channels` = 32), no l2, no restarts;
- `vq-l2`: the library's recommended VQ: l2-normalised 8-dimensional codes, dead codes restarted after 50 steps;
- `fsq`: finite scalar quantization (Mentzer et al. 2023), `quantizer_type="fsq"` with fixed per-channel levels;
- `lfq`: lookup-free quantization (MAGVIT-v2, Yu et al. 2023), `quantizer_type="lfq"`, one bit per code dimension.

Two data sets (`--data`):

- `photos`: the 32x32 RGB patches of scikit-image's sample photos that `bench_vqgan_vs_vqvae.py` builds (its
  `write_photo_patches`: four whole photos held out), at about 1,024 codes: VQ 1,024, FSQ levels [8, 5, 5, 5] =
  1,000, LFQ 2^10. Held-out PSNR, SSIM, sharpness relative to the originals', codebook usage and perplexity of the
  held-out codes, the training window's usage (`quantizer.usage_statistics()`), training time; `--grid` writes the
  held-out originals and each tokenizer's reconstructions, a row each.
- `digits`: the digits demo through the prior with each quantizer, at the digits preset's size (128 codes: FSQ and
  LFQ from the `digits-tiny-fsq` / `digits-tiny-lfq` presets): the tokenizer, then a class-conditional prior
  (`examples/train.py transformer --preset digits-tiny`, as `examples/demo.py` trains it), then 10 samples per
  class scored by the digits classifier (`examples/digits_scoring.py`): sample accuracy, with the tokenizer's
  held-out PSNR, usage and perplexity. `--grid` writes held-out reconstructions; each prior's samples are in
  `OUTPUT_DIR/<quantizer>/samples.png`.

    python benchmarks/bench_quantizers.py --data photos --steps 800 --batch_size 32 \
        --output benchmarks/results/quantizers-photos-$(date +%F).txt --grid docs/quantizers.png
    python benchmarks/bench_quantizers.py --data digits --steps 300 --prior_steps 400 \
        --output benchmarks/results/quantizers-digits-$(date +%F).txt

Prints a markdown table and appends everything it prints to `--output`, with the load average of the machine
before and after each run: training times are wall clock, with the CPU seconds of the training process (the work
itself, which other processes' load changes less). `--reuse` keeps a quantizer's finished runs in `--output_dir`
instead of training them again (their recorded times are reported), so quantizers can be trained by separate
invocations (`--quantizers fsq`, ...) at once and tabulated together afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_vqgan_vs_vqvae.py: the photo patches, training and evaluation
sys.path.insert(0, str(HERE.parent / "examples"))  # demo.py and digits_scoring.py: the prior stage and its score
from bench_vqgan_vs_vqvae import digits_held_out, evaluate, train, write_grid, write_photo_patches  # noqa: E402

QUANTIZERS = ("vq-plain", "vq-l2", "fsq", "lfq")
# The VQGANModel keys that choose and size a quantizer; the rest of `digits-tiny` is the shared architecture.
QUANTIZER_KEYS = ("quantizer_type", "code_dim", "codebook_size", "l2_normalize_codes", "dead_code_steps", "fsq_levels")


def quantizer_config(name: str, data: str, channels: int = 3) -> dict:
    """`VQGANModel` kwargs of one quantizer: `digits-tiny` with its quantizer keys replaced (and `channels` in and
    out for photos)."""
    from hf_vqgan.training.presets import vqgan_preset

    base = {k: v for k, v in vqgan_preset("digits-tiny").items() if k not in QUANTIZER_KEYS}
    codes = 1024 if data == "photos" else vqgan_preset("digits-tiny")["codebook_size"]
    if data == "photos":
        base.update(in_channels=channels, out_channels=channels)
    if name == "vq-plain":
        options = {"code_dim": base["latent_channels"], "codebook_size": codes, "l2_normalize_codes": False,
                   "dead_code_steps": 0}  # fmt: skip
    elif name == "vq-l2":
        options = {"code_dim": 8, "codebook_size": codes, "l2_normalize_codes": True, "dead_code_steps": 50}
    elif data == "photos":
        options = {"fsq": {"quantizer_type": "fsq", "fsq_levels": [8, 5, 5, 5]},
                   "lfq": {"quantizer_type": "lfq", "codebook_size": codes}}[name]  # fmt: skip
    else:  # the digits presets engineer fsq defines, so the figures describe what users get
        options = {k: v for k, v in vqgan_preset(f"digits-tiny-{name}").items() if k in QUANTIZER_KEYS}
    return {**base, **options}


class Report:
    """Prints lines and appends them to `path` as they come, so a run cut short keeps what it measured."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str = "", echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        if self.path:
            with self.path.open("a") as f:
                f.write(line + "\n")


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def timed_once(folder: Path, report: Report, reuse: bool, run) -> dict[str, float]:
    """Run `run()`, which trains into `folder` in a subprocess, unless `reuse` finds it done; its wall-clock seconds
    and the subprocess's CPU seconds (user + system: the work itself, less sensitive to other processes' load)."""
    record = folder / "bench_seconds.json"
    if reuse and record.is_file():
        seconds = json.loads(record.read_text())
        report(f"reusing {folder} (trained in {seconds['wall']:.0f} s)")
        return seconds
    report(f"training {folder} ({load_average()})")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    seconds = {"wall": wall, "cpu": cpu}
    record.write_text(json.dumps(seconds))
    report(f"trained {folder} in {wall:.0f} s, {cpu:.0f} CPU s ({load_average()})")
    return seconds


def tokenizer_arguments(args, config_file: Path, data_arguments: list[str]) -> list[str]:
    """The losses every tokenizer trains with: L1 + PatchGAN from half-way (+ LPIPS where its weights exist)."""
    from demo import perceptual_arguments  # says so when LPIPS's weights are missing

    return ["--model_config", str(config_file), *data_arguments, "--disc_start", str(args.steps // 2),
            "--disc_weight", str(args.disc_weight), "--disc_num_layers", "2", "--disc_base_channels", "32",
            "--dataloader_num_workers", "0", *perceptual_arguments()]  # fmt: skip


def run_quantizer(name: str, config: dict, args, out: Path, report: Report, data_arguments: list[str], images):
    """Train one tokenizer (and, on the digits, its prior); its figures and held-out reconstructions."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "model_config.json"
    config_file.write_text(json.dumps(config, indent=2))
    extra = tokenizer_arguments(args, config_file, data_arguments)

    def train_tokenizer() -> float:
        return train(folder / "vqgan", args.steps, args.batch_size, extra)

    seconds = {"tokenizer": timed_once(folder / "vqgan", report, args.reuse, train_tokenizer)}
    figures, reconstructions = evaluate(folder / "vqgan", images)
    saved = json.loads((folder / "vqgan" / "config.json").read_text())
    metrics = json.loads((folder / "vqgan" / "metrics.json").read_text())
    figures.update(codebook_size=saved["codebook_size"], code_dim=saved["code_dim"],
                   train_usage=metrics["train_quantizer_usage"])  # fmt: skip
    if args.data == "digits":
        from demo import prior_stage, run_stage
        from digits_scoring import evaluate_class_samples

        common = ["--seed", str(args.seed), "--report_to", "none", "--dataloader_num_workers", "0"]
        stage = argparse.Namespace(transformer_steps=args.prior_steps, guidance_scale=args.guidance_scale)
        seconds["prior"] = timed_once(folder / "pipeline", report, args.reuse,
                                      lambda: run_stage(prior_stage(stage, folder, common)))  # fmt: skip
        scores = evaluate_class_samples(
            folder / "pipeline", folder / "samples.png", seed=args.seed, samples_per_class=args.samples_per_class,
            guidance_scale=args.guidance_scale,
        )  # fmt: skip
        figures["sample_accuracy"] = scores["sample_accuracy"]
        figures["real_validation_accuracy"] = scores["real_validation_accuracy"]
    figures["seconds"] = seconds
    return figures, reconstructions


def format_seconds(timing: dict[str, float | None]) -> str:
    cpu = "n/a" if timing.get("cpu") is None else f"{timing['cpu']:.0f}"  # a reused record may lack it
    return f"{timing['wall']:.0f} ({cpu})"


def markdown_table(data: str, results: dict[str, dict]) -> list[str]:
    columns = ["quantizer", "codes", "code dim", "PSNR dB", "SSIM", "rel. sharpness", "usage", "perplexity",
               "train usage", "tokenizer s (CPU s)"]  # fmt: skip
    if data == "digits":
        columns = [
            *columns[:5],
            *columns[6:],
            "prior s (CPU s)",
            "sample accuracy",
        ]  # 8x8 digits: sharpness says little
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, f in results.items():
        cells = [name, str(f["codebook_size"]), str(f["code_dim"]), f"{f['psnr']:.2f}", f"{f['ssim']:.4f}"]
        if data == "photos":
            cells.append(f"{f['relative_sharpness']:.3f}")
        cells += [f"{f['codebook_usage']:.3f}", f"{f['codebook_perplexity']:.1f}", f"{f['train_usage']:.3f}",
                  format_seconds(f["seconds"]["tokenizer"])]  # fmt: skip
        if data == "digits":
            cells += [format_seconds(f["seconds"]["prior"]), f"{f['sample_accuracy']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["photos", "digits"], default="photos")
    parser.add_argument(
        "--quantizers", default=",".join(QUANTIZERS), help=f"A comma-separated subset of {QUANTIZERS}."
    )
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3, help="Photos: RGB or grayscale.")
    parser.add_argument("--steps", type=int, default=800, help="Tokenizer training steps, the same for each.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--disc_weight", type=float, default=None, help="Defaults to 0.8 (photos), 0.1 (digits).")
    parser.add_argument("--prior_steps", type=int, default=400, help="Digits: prior training steps (batch 64).")
    parser.add_argument("--guidance_scale", type=float, default=2.0, help="Digits: classifier-free guidance.")
    parser.add_argument("--samples_per_class", type=int, default=10, help="Digits: samples scored per class.")
    parser.add_argument("--output_dir", default="/tmp/hf_vqgan_bench_quantizers")
    parser.add_argument("--output", default=None, help="Also append everything printed to this file.")
    parser.add_argument("--grid", default=None, help="Write held-out originals and reconstructions to this PNG.")
    parser.add_argument("--reuse", action="store_true", help="Keep finished runs found in --output_dir.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.quantizers = [name.strip() for name in args.quantizers.split(",") if name.strip()]
    unknown = sorted(set(args.quantizers) - set(QUANTIZERS))
    if unknown or not args.quantizers:
        parser.error(f"--quantizers: unknown {unknown}; expected a comma-separated subset of {list(QUANTIZERS)}")
    if args.disc_weight is None:
        args.disc_weight = 0.8 if args.data == "photos" else 0.1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = Report(args.output)
    report(f"# bench_quantizers.py, {datetime.datetime.now().isoformat(timespec='seconds')}, "
           f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
           f"CPU float32, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {load_average()}")  # fmt: skip
    report(f"$ python benchmarks/bench_quantizers.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    if args.data == "photos":
        train_dir, images = write_photo_patches(out / "photos", args.channels)
        data_arguments = ["--train_data_dir", str(train_dir)]
        described = (f"32x32 {'RGB' if args.channels == 3 else 'grayscale'} patches of scikit-image photos "
                     f"({len(list(train_dir.glob('*.png')))} training patches; {len(images)} held-out patches of "
                     f"four held-out photos)")  # fmt: skip
    else:
        images, data_arguments = digits_held_out(), []
        described = (f"the built-in digits at 32x32 ({len(images)} held-out digits); prior digits-tiny, "
                     f"{args.prior_steps} steps at batch 64; {args.samples_per_class} samples per class at guidance "
                     f"{args.guidance_scale}")  # fmt: skip
    results, reconstructions = {}, {}
    for name in args.quantizers:
        results[name], reconstructions[name] = run_quantizer(
            name, quantizer_config(name, args.data, args.channels), args, out, report, data_arguments, images
        )
    report(f"\ndigits-tiny architecture, latent grid 8x8, on {described}. Tokenizers: {args.steps} steps each, batch "
           f"{args.batch_size}, L1 + PatchGAN (adaptive weight x {args.disc_weight} from step {args.steps // 2}) + "
           f"the quantizer's terms; CPU, float32; {load_average()}.")  # fmt: skip
    report("usage / perplexity: of the held-out codes; train usage: the quantizer's window at the end of training.")
    for line in markdown_table(args.data, results):
        report(line)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    if args.grid:
        write_grid(Path(args.grid), images, reconstructions)  # prints where it went
        report(f"grid: {args.grid} (rows: originals, {', '.join(reconstructions)})", echo=False)


if __name__ == "__main__":
    main()
