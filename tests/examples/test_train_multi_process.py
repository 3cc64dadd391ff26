"""Scale-out correctness (issue 9): two CPU processes train as one process with the same global batch.

Two real gloo processes come from `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`. (Beware:
`accelerate launch --cpu --num_processes 2` starts a single process; accelerate only spreads CPU runs over several
processes through MPI or the multi-GPU launcher.) Both runs append every step's losses, averaged over processes, to
`--log_jsonl`; the trajectories must agree within a relative tolerance of 1e-4 (observed: about 1e-7, the
float32 noise of summing gradients and statistics in another order).

What makes them agree, and is therefore under test: disjoint shards whose union is the global batch; flips and crops
drawn per example (`SeededDataset`), not per process; quantizer EMA statistics, usage counters and dead-code restarts
computed on the global batch; the adaptive GAN weight from the gradients of the global batch; discriminator gradients
synchronised (its forward follows the generator's backward). Outside the test: `--disc_norm batch` (the default, as
in taming) normalises with per-process statistics, and class dropout and `pkeep` draw per process.

Kill and resume on two processes (issue 15, 8): each stage, killed from outside with SIGKILL (the launcher and both
workers) at a step drawn from a seeded RNG and printed, resumes with `--resume_from_checkpoint latest` to weights,
optimizer and training state bit-identical to an uninterrupted two-process run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vqgan import VQGANModel
from testing_utils import restarting_vqgan_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
CHECKS_SCRIPT = Path(__file__).resolve().parent / "scripts" / "distributed_checks.py"
FAULTS = Path(__file__).resolve().parent / "faults"  # its sitecustomize.py arms FAULT_* in a subprocess
RTOL, ATOL = 1e-4, 1e-6

# An EMA codebook with dead-code restarts every 2 steps: quantizer state that must agree across processes.
SCALE_VQGAN = restarting_vqgan_config()
GLOBAL_BATCH = 16


def _env() -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(script: Path, argv: list, log: Path, num_processes: int, **env: str) -> tuple[subprocess.Popen, Path]:
    """`script` on one plain process, or through `accelerate launch` on several CPU processes; `env` added."""
    if num_processes == 1:
        command = [sys.executable, str(script)]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(_free_port()), str(script)]  # fmt: skip
    with open(log, "w") as f:
        process = subprocess.Popen(
            [*command, *map(str, argv)], cwd=REPO_ROOT, env={**_env(), **env}, stdout=f, stderr=f
        )
    return process, log


def _wait(started: tuple[subprocess.Popen, Path], timeout: float = 300) -> str:
    process, log = started
    returncode = process.wait(timeout=timeout)
    text = log.read_text()
    assert returncode == 0, f"exit code {returncode}:\n{text[-5000:]}"
    return text


def _trajectories(one: Path, two: Path, steps: int) -> tuple[list[dict], list[dict]]:
    a = [json.loads(line) for line in one.read_text().splitlines()]
    b = [json.loads(line) for line in two.read_text().splitlines()]
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    assert {r["num_processes"] for r in a} == {1} and {r["num_processes"] for r in b} == {2}  # really two processes
    return a, b


def _assert_same_trajectory(a: list[dict], b: list[dict], keys: set[str]) -> None:
    for x, y in zip(a, b):
        assert keys <= x.keys() and x.keys() == y.keys()
        for key in x.keys() - {"num_processes"}:
            assert abs(x[key] - y[key]) <= ATOL + RTOL * abs(x[key]), (x["step"], key, x[key], y[key])


@pytest.mark.slow
def test_vqgan_on_two_processes_follows_the_one_process_trajectory(tmp_path):
    config = tmp_path / "vqgan.json"
    config.write_text(json.dumps(SCALE_VQGAN))
    common = ["vqgan", "--model_config", config, "--max_train_steps", "6", "--max_train_samples", "64",
              "--perceptual_weight", "0", "--disc_start", "3", "--disc_norm", "none", "--disc_base_channels", "8",
              "--disc_num_layers", "2", "--validation_steps", "6", "--checkpointing_steps", "6",
              "--eval_batch_size", "180", "--report_to", "none", "--use_ema", "--random_flip", "--random_crop",
              "--lr_scheduler", "cosine", "--lr_warmup_steps", "2"]  # fmt: skip
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        argv = [*common, "--train_batch_size", GLOBAL_BATCH // n, "--output_dir", out, "--log_jsonl", f"{out}.jsonl"]
        runs[n] = _start(TRAIN_SCRIPT, argv, tmp_path / f"p{n}.log", n)
    for n in (1, 2):
        _wait(runs[n])
    a, b = _trajectories(tmp_path / "p1.jsonl", tmp_path / "p2.jsonl", steps=6)
    # The GAN terms are on from step 4, and restarts changed the codebook (perplexity jumps) along the way.
    assert a[3]["adaptive_weight"] > 0 and "disc_loss" in a[3]
    _assert_same_trajectory(a, b, {"total", "reconstruction", "quantizer", "gan", "adaptive_weight", "perplexity"})

    one = VQGANModel.from_pretrained(tmp_path / "p1")
    two = VQGANModel.from_pretrained(tmp_path / "p2")
    for (name, x), y in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-5), name
    stats = [load_file(tmp_path / f"p{n}" / "checkpoints" / "checkpoint-000006" / "training_state.safetensors")
             for n in (1, 2)]  # fmt: skip
    for name in stats[0]:  # usage counters and restart bookkeeping of the global batch
        assert torch.allclose(stats[0][name].float(), stats[1][name].float(), atol=1e-5), name


@pytest.mark.slow
def test_transformer_on_two_processes_follows_the_one_process_trajectory(tmp_path):
    tokenizer = tmp_path / "tokenizer"
    torch.manual_seed(0)
    VQGANModel(**restarting_vqgan_config(use_ema=False, dead_code_steps=0)).save_pretrained(tokenizer)
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2}))
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        argv = ["transformer", "--vqgan_model_name_or_path", tokenizer, "--prior_config", prior, "--class_column",
                "label", "--max_train_steps", "6", "--max_train_samples", "64", "--train_batch_size", GLOBAL_BATCH // n,
                "--validation_steps", "6", "--checkpointing_steps", "6", "--num_validation_samples", "1",
                "--report_to", "none", "--pkeep", "1.0", "--class_dropout_prob", "0", "--lr_scheduler", "cosine",
                "--lr_warmup_steps", "2", "--use_ema", "--tokenized_cache_dir", tmp_path / f"tokens{n}",
                "--output_dir", out, "--log_jsonl", f"{out}.jsonl"]  # fmt: skip
        runs[n] = _start(TRAIN_SCRIPT, argv, tmp_path / f"p{n}.log", n)
    for n in (1, 2):
        _wait(runs[n])
    a, b = _trajectories(tmp_path / "p1.jsonl", tmp_path / "p2.jsonl", steps=6)
    assert a[-1]["loss"] < a[0]["loss"]  # it trains
    _assert_same_trajectory(a, b, {"loss", "lr"})
    x = load_file(tmp_path / "p1" / "transformer" / "model.safetensors")
    y = load_file(tmp_path / "p2" / "transformer" / "model.safetensors")
    assert all(torch.allclose(x[k], y[k], rtol=1e-3, atol=1e-5) for k in x)


@pytest.mark.slow
def test_sharding_quantizer_statistics_and_replicas_on_two_processes(tmp_path):
    log = _wait(_start(CHECKS_SCRIPT, [tmp_path], tmp_path / "checks.log", num_processes=2))
    assert {"OK sharding", "OK quantizer", "OK model replicas"} <= set(log.splitlines())


# ------------------------------------------------------------------------------------ kill and resume (issue 15, 8)
KILL_SEED = 15  # the kill's step and delay are drawn from random.Random(f"{KILL_SEED}-{stage}") and printed
KILL_STEPS = 6


def _kill_resume_argv(stage: str, tmp_path: Path) -> list:
    """A 6-step 2-process run of `stage` checkpointing every 2 steps, everything stateful or random switched on."""
    common = ["--max_train_steps", KILL_STEPS, "--checkpointing_steps", "2", "--validation_steps", KILL_STEPS,
              "--max_train_samples", "48", "--train_batch_size", GLOBAL_BATCH // 2, "--report_to", "none",
              "--use_ema", "--lr_scheduler", "cosine", "--lr_warmup_steps", "2"]  # fmt: skip
    if stage == "vqgan":
        config = tmp_path / "vqgan.json"
        config.write_text(json.dumps(SCALE_VQGAN))
        return ["vqgan", "--model_config", config, *common, "--perceptual_weight", "0", "--disc_start", "3",
                "--disc_norm", "none", "--disc_base_channels", "8", "--disc_num_layers", "2",
                "--eval_batch_size", "180", "--random_flip", "--random_crop"]  # fmt: skip
    tokenizer = tmp_path / "tokenizer"
    torch.manual_seed(0)
    VQGANModel(**restarting_vqgan_config(use_ema=False, dead_code_steps=0)).save_pretrained(tokenizer)
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"n_embd": 32, "n_layer": 1, "n_head": 2}))
    return ["transformer", "--vqgan_model_name_or_path", tokenizer, "--prior_config", prior, "--class_column",
            "label", *common, "--num_validation_samples", "1", "--pkeep", "0.7", "--class_dropout_prob", "0.3",
            "--tokenized_cache_dir", tmp_path / "tokens"]  # fmt: skip


def _sigkill_tree(process: subprocess.Popen) -> None:
    """SIGKILL `accelerate launch` and every process under it, as a lost node would (torchrun's workers run in
    sessions of their own, so killing the launcher's process group would not reach them)."""
    import psutil

    launcher = psutil.Process(process.pid)
    workers = launcher.children(recursive=True)
    for victim in (launcher, *workers):
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL  # reaped by Popen (psutil would leave it a returncode of 0)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, alive


def _kill_at_step(started: tuple[subprocess.Popen, Path], jsonl: Path, step: int, delay: float) -> None:
    """Wait until the run has logged optimizer step `step`, then `delay` seconds more, then SIGKILL all of it."""
    process, log = started
    deadline = time.monotonic() + 300
    while not (jsonl.is_file() and len(jsonl.read_text().splitlines()) >= step):
        assert process.poll() is None, f"the run ended before step {step}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"step {step} not reached in 300 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    time.sleep(delay)
    assert process.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
    _sigkill_tree(process)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["vqgan", "transformer"])
def test_two_processes_killed_at_a_random_step_resume_to_the_uninterrupted_weights(tmp_path, stage):
    start = time.perf_counter()
    rng = random.Random(f"{KILL_SEED}-{stage}")
    kill_step, delay = rng.randint(1, KILL_STEPS - 1), rng.uniform(0.0, 0.5)
    print(f"\n[kill/resume] {stage}: SIGKILL {delay:.2f} s after step {kill_step} (seed {KILL_SEED})")
    argv = _kill_resume_argv(stage, tmp_path)
    final = {"vqgan": ["diffusion_pytorch_model.safetensors"],
             "transformer": ["transformer/model.safetensors", "vqgan/diffusion_pytorch_model.safetensors"]}[stage]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # One run at a time: the transformer's first run writes the token cache the others read.
    reference = [*argv, "--output_dir", straight, "--log_jsonl", tmp_path / "straight.jsonl"]
    _wait(_start(TRAIN_SCRIPT, reference, tmp_path / "straight.log", 2))
    jsonl = tmp_path / "killed.jsonl"
    # Steps paced at 0.5 s (tests/examples/faults/sitecustomize.py) so that the kill lands inside the run: in a
    # step, in a checkpoint's save or between them.
    python_path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
    victim_argv = [*argv, "--output_dir", killed, "--log_jsonl", jsonl]
    victim = _start(TRAIN_SCRIPT, victim_argv, tmp_path / "killed.log", 2, PYTHONPATH=python_path,
                    FAULT_STEP_SECONDS="0.5")  # fmt: skip
    _kill_at_step(victim, jsonl, kill_step, delay)
    left = sorted(p.name for p in (killed / "checkpoints").iterdir()) if (killed / "checkpoints").is_dir() else []
    print(f"[kill/resume] {stage}: the kill came after {len(jsonl.read_text().splitlines())} steps and left {left}")
    assert f"checkpoint-{KILL_STEPS:06d}" not in left and not (killed / final[0]).exists()  # killed mid-run

    resume = [*argv, "--output_dir", killed, "--resume_from_checkpoint", "latest"]
    log = _wait(_start(TRAIN_SCRIPT, resume, tmp_path / "resume.log", 2))
    resumed = [line for line in log.splitlines() if "Resumed from" in line or "starting from scratch" in line]
    assert len(resumed) == 1, log[-3000:]
    print(f"[kill/resume] {stage}: {resumed[0].split(': ', 1)[-1]}")
    for name in final:
        x, y = load_file(straight / name), load_file(killed / name)
        different = [k for k in x if not torch.equal(x[k], y[k])]
        assert x.keys() == y.keys() and not different, f"{name}: {len(different)} tensors differ: {different[:5]}"
    name = f"checkpoint-{KILL_STEPS:06d}"  # optimizers, schedulers, EMA and counters too
    for state in ("training_state.safetensors", "model.safetensors"):
        x, y = load_file(straight / "checkpoints" / name / state), load_file(killed / "checkpoints" / name / state)
        assert all(torch.equal(x[k], y[k]) for k in x), state
    print(f"[timing] {stage} 2-process kill/resume test: {time.perf_counter() - start:.1f} s")


def test_seeded_dataset_augments_each_example_the_same_whoever_reads_it():
    """Flips and crops depend on (seed, epoch, index) only: not on the order, the process or the batch reading them."""
    from PIL import Image

    from hf_vqgan import VQGANImageProcessor
    from hf_vqgan.training.data import SeededDataset

    images = [
        Image.fromarray((torch.arange(12 * 10).reshape(12, 10) * (i + 1) % 256).byte().numpy()) for i in range(6)
    ]
    transform = VQGANImageProcessor(8, channels=1, center_crop=False, random_flip=True)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, index):
            return transform(images[index])

    dataset = SeededDataset(Images(), transform, seed=3)
    forward = [dataset[i] for i in range(6)]
    torch.manual_seed(123)  # the global RNG plays no part
    backward = [dataset[i] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    dataset.set_epoch(1)
    next_epoch = [dataset[i] for i in range(6)]
    assert not all(torch.equal(a, b) for a, b in zip(forward, next_epoch))  # a new epoch draws new augmentations
