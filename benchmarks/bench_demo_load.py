"""Load on the web demo: concurrent generation requests through `gradio_client`, with bad uploads sent meanwhile.

    python benchmarks/bench_demo_load.py --model outputs/pipeline                       # starts `hf-vqgan demo`
    python benchmarks/bench_demo_load.py --url http://127.0.0.1:7860/ --pid 1234 --requests 50 --clients 8

Every request asks for `--num-images` images of one of `--distinct` (class, seed) settings. The expected codes of each
setting are first fetched one request at a time; under load every answer must carry exactly those codes (sampling
is seeded, so a mixed-up or corrupted answer shows), and none may be lost. Meanwhile a non-image file and an image
over the upload limit must come back as messages, images in other modes (CMYK, 16-bit, 1-bit, RGBA) as
reconstructions, and the app must still answer afterwards. Prints requests, answers, p50/p95 latency and the server's
peak resident memory (VmHWM, when its pid is known), and exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="A running demo; else --model starts one on a free port.")
    parser.add_argument("--pid", type=int, default=None, help="The server's process id, for its peak memory.")
    parser.add_argument("--model", default=None, help="A pipeline folder to serve with `hf-vqgan demo`.")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--distinct", type=int, default=6, help="How many different (class, seed) settings.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds for the whole run.")
    parser.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = parser.parse_args(argv)
    if (args.url is None) == (args.model is None):
        parser.error("give exactly one of --url and --model")
    return args


# ------------------------------------------------------------------------------------------------- requests
def generate(client, setting: tuple[int | None, int], num_images: int) -> tuple[list, list]:
    """One /generate request; returns the gallery's files and the codes from the tokens file."""
    class_label, seed = setting
    gallery, tokens_path = client.predict(class_label, num_images, 1.0, 1.0, 0, 1.0, seed, api_name="/generate")
    with open(tokens_path, encoding="utf-8") as f:
        return gallery, json.load(f)["tokens"]


def settings(client, distinct: int) -> list[tuple[int | None, int]]:
    """(class, seed) pairs: classes cycle through the dropdown's choices (none for an unconditional demo)."""
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    classes = [int(c) for c in info["parameters"][0]["type"].get("enum") or []]
    return [(classes[i % len(classes)] if classes else None, 100 + i) for i in range(distinct)]


def bad_uploads(folder: Path) -> dict[str, tuple[Path, bool]]:
    """Files to upload to /reconstruct: name -> (path, whether it must be refused with a message)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    (folder / "notes.png").write_bytes(b"this is not an image\n" * 10)
    Image.new("L", (5000, 4000), 128).save(folder / "huge.png")  # 20 M pixels, over the 16.8 M limit; a tiny file
    Image.fromarray(photo).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(folder / "gray16.png")
    Image.fromarray(photo).convert("1").save(folder / "bilevel.png")
    Image.fromarray(np.dstack([photo, photo[..., :1]])).save(folder / "rgba.png")
    refused = {"notes.png", "huge.png"}
    return {p.name: (p, p.name in refused) for p in sorted(folder.iterdir())}


def check_bad_uploads(client, files: dict[str, tuple[Path, bool]]) -> dict[str, str]:
    """Upload each file; returns name -> "refused: message" or "reconstructed" or "FAILED: why"."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    outcomes = {}
    for name, (path, must_refuse) in files.items():
        try:
            strip, codes, summary = client.predict(handle_file(str(path)), api_name="/reconstruct")
            ok = not must_refuse and "PSNR" in summary and Image.open(strip).size[0] > 0
            outcomes[name] = "reconstructed" if ok else f"FAILED: answered {summary!r}"
        except AppError as error:
            message = str(error)
            ok = must_refuse and name in message and "Traceback" not in message
            outcomes[name] = f"refused: {message}" if ok else f"FAILED: {message}"
    return outcomes


# --------------------------------------------------------------------------------------------------- the run
def run_load(url: str, pid: int | None, requests: int, clients: int, num_images: int, distinct: int,
             timeout: float) -> dict:  # fmt: skip
    """Reference answers one at a time, then the load with bad uploads alongside; returns the figures."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    first = Client(url, verbose=False)
    chosen = settings(first, distinct)
    expected = {s: generate(first, s, num_images)[1] for s in chosen}
    local = threading.local()

    def one(i: int) -> tuple[float, bool, str]:
        if time.monotonic() > deadline:
            return float("nan"), False, "not sent: out of time"
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)
        setting = chosen[i % len(chosen)]
        start = time.perf_counter()
        try:
            gallery, tokens = generate(local.client, setting, num_images)
        except Exception as error:  # a lost or failed request is a result here, not a crash
            return time.perf_counter() - start, False, f"{type(error).__name__}: {error}"
        latency = time.perf_counter() - start
        correct = tokens == expected[setting] and len(gallery) == num_images
        return latency, correct, "" if correct else f"wrong answer for {setting}"

    with tempfile.TemporaryDirectory() as tmp:
        files = bad_uploads(Path(tmp))
        with ThreadPoolExecutor(clients) as pool:
            started = time.perf_counter()
            answers = pool.map(one, range(requests), timeout=max(1.0, deadline - time.monotonic()))
            bad = check_bad_uploads(first, files)  # sent while the load is queued: `map` has submitted it all
            results = list(answers)
            wall = time.perf_counter() - started
    still_serving = generate(first, chosen[0], num_images)[1] == expected[chosen[0]]
    latencies = sorted(r[0] for r in results if r[1])
    return {
        "requests": requests, "clients": clients, "images_per_request": num_images,
        "answered_correctly": sum(r[1] for r in results), "errors": sorted({r[2] for r in results if r[2]}),
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
        "wall_s": wall, "requests_per_s": requests / wall, "peak_rss_mib": peak_rss_mib(pid),
        "bad_uploads": bad, "still_serving": still_serving,
    }  # fmt: skip


def peak_rss_mib(pid: int | None) -> float | None:
    """The process's peak resident set (Linux `VmHWM`), in MiB; `None` without a pid or /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration, TypeError):
        return None


def start_server(model: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "hf_vqgan.cli", "demo", "--model", model, "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}/", time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"`hf-vqgan demo --model {model}` did not come up on {url}.")


def passed(figures: dict) -> bool:
    return (
        figures["answered_correctly"] == figures["requests"]
        and figures["still_serving"]
        and not any(outcome.startswith("FAILED") for outcome in figures["bad_uploads"].values())
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    process, url, pid = None, args.url, args.pid
    if args.model:
        process, url = start_server(args.model)
        pid = process.pid
    try:
        figures = run_load(url, pid, args.requests, args.clients, args.num_images, args.distinct, args.timeout)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
