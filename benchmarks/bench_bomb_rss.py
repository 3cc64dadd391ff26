#!/usr/bin/env python
"""Peak resident memory of a short training run with a decompression bomb in its image folder (issue 15, finding 5).

The folder holds 24 small photos-like PNGs and, in the "bomb" run, one more: a 10,000 x 10,000 RGB PNG of
about 300 KB (a flat image compresses ~1000:1). Each run is `examples/train.py vqgan --preset digits-tiny` for
`--steps` optimizer steps on that folder (no LPIPS: its VGG16 cannot be downloaded offline), in a process of its own,
because peak RSS (`ru_maxrss`) is a per-process high-water mark. What the bomb adds is the difference of the two.

With a pixel budget (`--max_image_pixels`, 40 Mpx by default) the bomb is refused from its header, before any pixel
is decoded; without one it is decoded in full (PIL only warns below its own 179 Mpx limit).

    python benchmarks/bench_bomb_rss.py
    python benchmarks/bench_bomb_rss.py --steps 3 --extra_args "--max_image_pixels 200000000"
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BOMB_SIDE = 10_000


def make_folder(folder: Path, bomb: bool, num_images: int = 24) -> None:
    """`num_images` random 24x24 RGB PNGs and, with `bomb`, a flat white `BOMB_SIDE`-pixel square RGB bomb.png."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(num_images):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"image_{i:02d}.png")
    if bomb:
        Image.new("RGB", (BOMB_SIDE, BOMB_SIDE), (255, 255, 255)).save(folder / "bomb.png", optimize=True)


def run_training(folder: Path, output: Path, steps: int, extra_args: list[str]) -> tuple[int, float, str]:
    """(exit code, peak RSS of the training process in MiB, the tail of its output)."""
    command = [
        sys.executable, str(REPO / "examples" / "train.py"), "vqgan", "--preset", "digits-tiny",
        "--train_data_dir", str(folder), "--output_dir", str(output), "--max_train_steps", str(steps),
        "--train_batch_size", "8", "--perceptual_weight", "0", "--report_to", "none",
        "--checkpointing_steps", str(steps), "--validation_steps", str(steps), *extra_args,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(output / "datasets-cache")}  # fmt: skip
    # A fresh process per run: RUSAGE_CHILDREN's maxrss is the largest of the children waited for, and this script
    # waits for exactly one child.
    probe = [sys.executable, "-c", "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)",
             *command]  # fmt: skip
    result = subprocess.run(probe, cwd=REPO, env=env, capture_output=True, text=True)
    line = [line for line in result.stdout.splitlines() if line.startswith("MAXRSS_KIB")]
    rss = int(line[-1].split()[1]) / 1024 if line else float("nan")
    return result.returncode, rss, (result.stdout + result.stderr)[-1500:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="Print the tail of each run's output.")
    parser.add_argument("--extra_args", default="", help="More flags for examples/train.py vqgan, one string.")
    args = parser.parse_args()
    extra = shlex.split(args.extra_args)
    print(f"# bench_bomb_rss {datetime.date.today()} {platform.machine()} python {platform.python_version()}")
    print(f"# examples/train.py vqgan --preset digits-tiny, {args.steps} steps, batch 8, 24 PNGs of 24x24 {extra}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, bomb in (("no bomb", False), (f"bomb {BOMB_SIDE}x{BOMB_SIDE}", True)):
            folder = Path(tmp, name.replace(" ", "_"), "images")
            make_folder(folder, bomb)
            size = (folder / "bomb.png").stat().st_size if bomb else 0
            code, rss, tail = run_training(folder, folder.parent / "run", args.steps, extra)
            note = f" (bomb.png: {size / 1024:.0f} KiB)" if bomb else ""
            print(f"{name:>20}: exit {code}, peak RSS {rss:7.0f} MiB{note}")
            if code != 0 or args.verbose:
                print(tail)


if __name__ == "__main__":
    main()
