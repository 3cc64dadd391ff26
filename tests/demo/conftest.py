"""Tiny pipelines for the demo's tests, saved once per session, and a demo server started on a free loopback port."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from hf_vqgan import VQGANImageProcessor, VQGANModel, VQGANPriorConfig, VQGANPriorForCausalLM, VQGANTransformerPipeline

SRC = Path(__file__).resolve().parents[2] / "src"
SIZE = 32  # pixels; the tokenizer is f=4, so the prior samples an 8x8 grid (64 tokens)
GRID = 8
CODEBOOK_SIZE = 32
DIGIT_NAMES = {0: "zero", 1: "one", 2: "two"}
LOWRES_FACTOR = 8  # 32x32 images -> 4x4 condition maps
TINY = dict(base_channels=16, attention_resolutions=(), latent_channels=8, code_dim=8, norm_num_groups=8)


def tiny_pipeline(kind: str, seed: int = 0) -> VQGANTransformerPipeline:
    """`kind` is "class" (3 named classes, RGB), "uncond" (grayscale) or "lowres" (grayscale, 4x4 conditions)."""
    torch.manual_seed(seed)
    channels = 3 if kind == "class" else 1
    vqgan = VQGANModel(in_channels=channels, out_channels=channels, channel_multipliers=(1, 2, 2), sample_size=SIZE,
                       codebook_size=CODEBOOK_SIZE, **TINY)  # fmt: skip
    prior_kwargs, cond_vqgan, condition_processor = {}, None, None
    if kind == "class":
        prior_kwargs = dict(num_classes=3, id2label=DIGIT_NAMES)
    if kind == "lowres":
        side = SIZE // LOWRES_FACTOR
        cond_vqgan = VQGANModel(in_channels=1, out_channels=1, channel_multipliers=(1,), sample_size=side,
                                codebook_size=16, **TINY).eval()  # fmt: skip
        prior_kwargs = dict(cond_codebook_size=16, cond_length=math.prod(cond_vqgan.latent_shape(side, side)))
        condition_processor = VQGANImageProcessor(resolution=SIZE, channels=1, condition_type="lowres",
                                                  lowres_factor=LOWRES_FACTOR)  # fmt: skip
    config = VQGANPriorConfig(codebook_size=CODEBOOK_SIZE, latent_height=GRID, latent_width=GRID, n_layer=1,
                              n_embd=32, n_head=2, **prior_kwargs)  # fmt: skip
    prior = VQGANPriorForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than GPT-2's init: samples that depend on the class and the context
        for weight in prior.parameters():
            if weight.ndim == 2:
                weight.normal_(std=0.3)
    return VQGANTransformerPipeline(vqgan=vqgan.eval(), transformer=prior, cond_vqgan=cond_vqgan,
                                    condition_processor=condition_processor)  # fmt: skip


@pytest.fixture(scope="session")
def saved_pipelines(tmp_path_factory) -> dict[str, Path]:
    """The three tiny pipelines, saved: {"class": folder, "uncond": folder, "lowres": folder}."""
    root = tmp_path_factory.mktemp("demo_pipelines")
    folders = {}
    for kind in ("class", "uncond", "lowres"):
        folders[kind] = root / kind
        tiny_pipeline(kind).save_pretrained(folders[kind])
    return folders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoServer:
    """`hf-vqgan demo` in a subprocess on a free 127.0.0.1 port; `url` once it answers."""

    def __init__(self, model: Path, log: Path, concurrency: int = 2, timeout: float = 90.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PYTHONPATH": str(SRC), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1",
               "no_proxy": "127.0.0.1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
        command = [sys.executable, "-m", "hf_vqgan.cli", "demo", "--model", str(model), "--port", str(self.port),
                   "--concurrency", str(concurrency)]  # fmt: skip
        self.log = log
        self._log_file = open(log, "w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.timeout = timeout

    def wait_until_up(self) -> DemoServer:
        log, deadline = self.log, time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The demo exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"The demo did not answer on {self.url} within {self.timeout} s:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self._log_file.close()


@pytest.fixture(scope="package")
def demo_servers(saved_pipelines, tmp_path_factory):
    """All three pipelines' demos, started together on first use (their start-ups overlap):
    `demo_servers("class")` -> a running `DemoServer`. Stopped after the last test of tests/demo, so the servers do not
    idle through the rest of the suite."""
    servers: dict[str, DemoServer] = {}
    logs = tmp_path_factory.mktemp("demo_logs")

    def get(kind: str) -> DemoServer:
        if not servers:
            servers.update({k: DemoServer(folder, logs / f"{k}.log") for k, folder in saved_pipelines.items()})
            for server in servers.values():
                server.wait_until_up()
        return servers[kind]

    yield get
    for server in servers.values():
        server.stop()
