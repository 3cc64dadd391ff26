#!/usr/bin/env python
"""Code extraction on CPU (`examples/train.py tokenize`), on 1 and 2 processes: images per second.

- digits: all 1,797 scikit-learn digits (1,617 train + 180 validation) at 32x32 with the `digits-tiny` tokenizer,
  batches of 64, chunks of 256;
- photos: scikit-image's 19 sample photos (`skimage.data`) written to a folder as PNG, read by the `imagefolder`
  loader, center cropped and resized to 256x256 RGB, batches of 8, chunks of 4. The tokenizer is taming's f16
  layout at a quarter of its width (`bench_tokenize_cpu.PHOTO_TOKENIZER`: 1,024 codes, a 16x16 grid).

Tokenizers are randomly initialised (speed does not depend on the weights). Each configuration is one
`accelerate launch` of the real command: one process (`--cpu`, torch's default threads), one process on one thread,
and two processes (`--multi_gpu` with `ACCELERATE_USE_CPU=1`: real gloo processes, one thread each, as torchrun
sets). The figure is images / extraction time, where the extraction time runs from the main process's
"Extracting N chunks" log line to its "Saved the token dataset" line: tokenising every chunk, assembling, and
writing the dataset, card and metadata; start-up (imports, loading the tokenizer and dataset) is printed apart as
the wall time of the whole command. The script also checks that every configuration wrote the same dataset.

    python benchmarks/bench_extract_cpu.py                    # both datasets, 1 repeat
    python benchmarks/bench_extract_cpu.py --datasets digits --repeats 3
    python benchmarks/bench_extract_cpu.py --tiny             # seconds, to check the script runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_vqgan import VQGANModel
from hf_vqgan.training.presets import vqgan_preset

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train.py"
# (label, processes, threads per process; None: torch's default)
CONFIGS = [("1 process", 1, None), ("1 process, 1 thread", 1, 1), ("2 processes", 2, 1)]
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_time(stderr: str, marker: str) -> float:
    """The time (seconds since the epoch) of the first log line of `stderr` containing `marker`."""
    for line in stderr.splitlines():
        match = TIMESTAMP.match(line)
        if match and marker in line:
            return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise RuntimeError(f"no log line with {marker!r} in:\n{stderr[-3000:]}")


def extract(argv: list[str], processes: int, threads: int | None) -> tuple[float, float, str]:
    """Run `train.py tokenize argv`; returns (extraction seconds, wall seconds of the command, its stderr)."""
    topology = ["--cpu", "--num_processes", "1"] if processes == 1 else ["--multi_gpu", "--num_processes", "2"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *topology, "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(TRAIN), "tokenize", *argv]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"exit code {result.returncode}:\n{result.stderr[-5000:]}")
    seconds = _log_time(result.stderr, "Saved the token dataset") - _log_time(result.stderr, "Extracting ")
    return seconds, wall, result.stderr


def write_photos(folder: Path, copies: int, limit: int | None) -> int:
    """scikit-image's sample photos as PNG files in `folder` (`copies` of each); returns how many."""
    import skimage.data

    from bench_tokenize_cpu import PHOTOS  # benchmarks/bench_tokenize_cpu.py

    folder.mkdir(parents=True)
    for name in PHOTOS[:limit]:
        image = Image.fromarray(np.asarray(getattr(skimage.data, name)()))
        for copy in range(copies):
            image.save(folder / f"{name}-{copy}.png")
    return len(PHOTOS[:limit]) * copies


def bench(name: str, tokenizer_config: dict, data_argv: list[str], work: Path, args) -> None:
    torch.manual_seed(args.seed)
    tokenizer = work / f"{name}-tokenizer"
    VQGANModel(**tokenizer_config).save_pretrained(tokenizer)
    times: dict[str, list[float]] = {label: [] for label, *_ in CONFIGS}
    walls: dict[str, list[float]] = {label: [] for label, *_ in CONFIGS}
    datasets_written = {}
    for repeat in range(args.repeats):
        order = CONFIGS if repeat % 2 == 0 else list(reversed(CONFIGS))  # load from others falls on all alike
        for label, processes, threads in order:
            output = work / f"{name}-{processes}x{threads}-{repeat}"
            argv = ["--vqgan_model_name_or_path", str(tokenizer), *data_argv, "--output_dir", str(output)]
            seconds, wall, _ = extract(argv, processes, threads)
            times[label].append(seconds)
            walls[label].append(wall)
            datasets_written[label] = output
    metadata = json.loads((datasets_written[CONFIGS[0][0]] / "hf_vqgan_tokens.json").read_text())
    images = sum(metadata["num_rows"].values()) + sum(metadata["skipped_images"].values())
    print(f"\n[{name}] {images} images, tokenizer {tokenizer_config}, flags {' '.join(data_argv)}")
    for label, values in times.items():
        rate = images / statistics.median(values)
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {label:>20}: {rate:7.1f} images/s (median; extraction seconds per repeat: {spread}; whole "
              f"command {statistics.median(walls[label]):.1f} s)")  # fmt: skip
    print(f"  same dataset from every configuration: {_same(list(datasets_written.values()))}")


def _same(folders: list[Path]) -> bool:
    from datasets import load_from_disk

    first = {name: split.to_dict() for name, split in load_from_disk(str(folders[0])).items()}
    return all({n: s.to_dict() for n, s in load_from_disk(str(f)).items()} == first for f in folders[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--photo-copies", type=int, default=1, help="Copies of each of the 19 photos.")
    parser.add_argument("--tiny", action="store_true", help="A few images of each, to check the script runs.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    load = os.getloadavg()
    print(f"# bench_extract_cpu.py, {datetime.datetime.now().isoformat(timespec='seconds')}: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} at the start, float32, torch {torch.__version__}")  # fmt: skip
    chosen = {s.strip() for s in args.datasets.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "digits" in chosen:
            limit = ["--max_train_samples", "24", "--max_eval_samples", "8"] if args.tiny else []
            data = ["--class_column", "label", "--batch_size", "64", "--chunk_size", "8" if args.tiny else "256"]
            bench("digits", vqgan_preset("digits-tiny"), [*data, *limit], work, args)
        if "photos" in chosen:
            from bench_tokenize_cpu import PHOTO_TOKENIZER

            resolution = 64 if args.tiny else 256
            write_photos(work / "photos", args.photo_copies, 4 if args.tiny else None)
            data = ["--train_data_dir", str(work / "photos"), "--validation_split", "2", "--batch_size", "8",
                    "--chunk_size", "4", "--resolution", str(resolution)]  # fmt: skip
            bench("photos", {**PHOTO_TOKENIZER, "sample_size": resolution}, data, work, args)
    load = os.getloadavg()
    print(f"# load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
