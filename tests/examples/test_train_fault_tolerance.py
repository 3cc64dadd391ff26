"""Faults a training run of examples/train.py survives (issue 9): kills, interrupted saves, NaN/Inf, bad images.

Kills are real: the script runs in a subprocess that SIGKILLs itself after an optimizer step or once a checkpoint's
files are written, before its rename. The faults are injected from here, never by the shipped code: the
subprocess's `PYTHONPATH` starts with tests/examples/faults, whose `sitecustomize.py` wraps `TrainingRun.end_step`
or `os.replace` when `FAULT_KILL_AFTER_STEP` / `FAULT_KILL_DURING_SAVE` ask for it. Non-finite losses come from
monkeypatching the loss (`poison_losses`). A resumed run must end with bit-identical weights, optimizer and RNG
states to an uninterrupted run with the same seed, on a CPU with one thread. The runs switch on everything that has state or
draws random numbers: Adam, a cosine schedule with warm-up, EMA weights, the GAN, an EMA codebook with dead-code
restarts every 2 steps, random flips and crops, class dropout and `pkeep`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.utils import load as accelerate_load
from PIL import Image
from safetensors.torch import load_file

from hf_vqgan import VQGANModel, VQGANPriorForCausalLM
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.models.quantizer import VectorQuantizer
from hf_vqgan.training.checkpointing import CheckpointManager
from testing_utils import FILE_FAULTS, corrupt_file, prior_size, restarting_vqgan_config

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
FAULTS = Path(__file__).resolve().parent / "faults"  # its sitecustomize.py arms FAULT_* in a subprocess

# f=2 tokenizer of 16x16 digits with an EMA codebook whose unused codes restart after 2 steps (from the global RNG).
FAULT_VQGAN = restarting_vqgan_config()
# 48 training digits in batches of 8: 6 batches per epoch, so step 5 is mid-epoch and steps 7-8 are in epoch 1.
VQGAN_ARGS = ["--max_train_steps", "8", "--train_batch_size", "8", "--max_train_samples", "48",
              "--perceptual_weight", "0", "--disc_start", "2", "--disc_base_channels", "8", "--disc_num_layers", "2",
              "--validation_steps", "4", "--checkpointing_steps", "2", "--eval_batch_size", "180", "--report_to", "none",
              "--use_ema", "--random_flip", "--random_crop", "--lr_scheduler", "cosine", "--lr_warmup_steps", "2"]  # fmt: skip
PRIOR_ARGS = ["--class_column", "label", "--max_train_steps", "8", "--train_batch_size", "8", "--max_train_samples",
              "48", "--validation_steps", "4", "--checkpointing_steps", "2", "--num_validation_samples", "1",
              "--report_to", "none", "--use_ema", "--lr_scheduler", "cosine", "--lr_warmup_steps", "2",
              "--pkeep", "0.7", "--class_dropout_prob", "0.3"]  # fmt: skip


# ------------------------------------------------------------------------------------------------- helpers
class Training:
    """examples/train.py in a subprocess (one CPU thread, offline), its output in a log file; `fault_env` holds the
    `FAULT_*` variables of tests/examples/faults/sitecustomize.py."""

    def __init__(self, argv: list, log: Path, **fault_env: str):
        python_path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TQDM_DISABLE": "1", "PYTHONPATH": python_path, **fault_env}  # fmt: skip
        self.log = log
        with open(log, "w") as f:
            self.process = subprocess.Popen(
                [sys.executable, str(TRAIN_SCRIPT), *map(str, argv)], cwd=REPO_ROOT, env=env, stdout=f, stderr=f
            )

    def wait(self, expected_returncode: int = 0, timeout: float = 300) -> str:
        returncode = self.process.wait(timeout=timeout)
        text = self.log.read_text()
        assert returncode == expected_returncode, (
            f"exit code {returncode}, expected {expected_returncode}:\n{text[-4000:]}"
        )
        return text


def assert_same_safetensors(a: Path, b: Path) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys(), f"{a} and {b} hold different tensors"
    different = [k for k in x if x[k].dtype != y[k].dtype or not torch.equal(x[k], y[k])]
    assert not different, f"{a.name} differs from the uninterrupted run's in {len(different)} tensors: {different[:5]}"


def assert_same_nested(x, y, where: str) -> None:
    """Exact equality of nested optimizer / scheduler / RNG states."""
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for key in x:
            assert_same_nested(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same_nested(u, v, f"{where}[{i}]")
    elif isinstance(x, np.ndarray):
        assert np.array_equal(x, y), where
    else:
        assert x == y, where


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Every file of two checkpoint folders holds the same values: weights, optimizers, schedulers, RNG, counters."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            assert_same_safetensors(a / name, b / name)
        elif name.endswith(".json"):
            assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
        else:  # accelerate's optimizer/scheduler/RNG files, read as the resume reads them (weights_only=True)
            assert_same_nested(accelerate_load(a / name), accelerate_load(b / name), name)


@contextlib.contextmanager
def poison_losses(owner: type, method: str, field: str, after_steps: int, attempts: int, value: float = math.nan):
    """
    Multiply the loss `owner.method(...)` returns (its attribute `field`) by `value` for the first `attempts` attempts
    after `after_steps` optimizer steps, as the training loop sees them (one call with gradients enabled per attempt,
    without gradient accumulation; validation runs without gradients and is not counted). Multiplying keeps the
    autograd graph: a guard that failed to skip the step would write NaN into the weights.
    """
    original = getattr(owner, method)
    calls = 0

    def poisoned(self, *args, **kwargs):
        nonlocal calls
        output = original(self, *args, **kwargs)
        if torch.is_grad_enabled():
            calls += 1
            if after_steps < calls <= after_steps + attempts:
                setattr(output, field, getattr(output, field) * value)
        return output

    setattr(owner, method, poisoned)
    try:
        yield
    finally:
        setattr(owner, method, original)


def checkpoint_names(output_dir: Path) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def fault_vqgan_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "fault_vqgan.json"
    path.write_text(json.dumps(FAULT_VQGAN))
    return path


@pytest.fixture(scope="module")
def frozen_tokenizer(tmp_path_factory) -> Path:
    """An untrained tokenizer folder for the prior's runs (the prior only needs stable codes)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    config = restarting_vqgan_config(use_ema=False, dead_code_steps=0)
    torch.manual_seed(0)
    VQGANModel(**config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_prior_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "prior.json"
    path.write_text(json.dumps(prior_size()))
    return path


# ---------------------------------------------------------------------------------------------- kill and resume
@pytest.mark.slow
def test_vqgan_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path, fault_vqgan_json):
    start = time.perf_counter()
    argv = ["vqgan", "--model_config", fault_vqgan_json, *VQGAN_ARGS]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = Training([*argv, "--output_dir", straight], tmp_path / "straight.log")
    victim = Training([*argv, "--output_dir", killed], tmp_path / "killed.log", FAULT_KILL_AFTER_STEP="5")
    victim.wait(expected_returncode=-signal.SIGKILL)
    # Killed after step 5: the step-4 checkpoint is the latest, nothing of step 5 was saved.
    assert checkpoint_names(killed) == ["checkpoint-000002", "checkpoint-000004", "latest"]
    assert (killed / "checkpoints" / "latest").read_text() == "checkpoint-000004"
    assert not (killed / "diffusion_pytorch_model.safetensors").exists()

    log = Training(
        [*argv, "--output_dir", killed, "--resume_from_checkpoint", "latest"], tmp_path / "resume.log"
    ).wait()
    assert "at step 4 (epoch 0, batch 4)" in log  # mid-epoch: 4 of the 6 batches of epoch 0 are skipped
    reference.wait()

    assert_same_safetensors(
        straight / "diffusion_pytorch_model.safetensors", killed / "diffusion_pytorch_model.safetensors"
    )
    for step in (6, 8):  # everything a checkpoint holds: weights, optimizers, schedulers, RNG, EMA, codebook stats
        name = f"checkpoint-{step:06d}"
        assert_same_checkpoint(straight / "checkpoints" / name, killed / "checkpoints" / name)
    assert json.loads((killed / "metrics.json").read_text()) == json.loads((straight / "metrics.json").read_text())
    print(f"\n[timing] vqgan kill/resume test: {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_transformer_killed_then_killed_mid_save_resumes_to_bit_identical_weights(
    tmp_path, frozen_tokenizer, tiny_prior_json
):
    start = time.perf_counter()
    cache = tmp_path / "tokens"
    argv = ["transformer", "--vqgan_model_name_or_path", frozen_tokenizer, "--prior_config", tiny_prior_json,
            "--tokenized_cache_dir", cache, *PRIOR_ARGS]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = Training([*argv, "--output_dir", straight], tmp_path / "straight.log")
    reference.wait()  # tokenises the data once; the other runs read the cache
    limited = [*argv, "--output_dir", killed, "--checkpoints_total_limit", "1"]
    Training(limited, tmp_path / "killed.log", FAULT_KILL_AFTER_STEP="3").wait(-signal.SIGKILL)
    assert checkpoint_names(killed) == ["checkpoint-000002", "latest"]

    # Resumed, then killed again while writing checkpoint 6 (after its files, before the rename).
    resume = [*limited, "--resume_from_checkpoint", "latest"]
    log = Training(resume, tmp_path / "resume1.log", FAULT_KILL_DURING_SAVE="6").wait(-signal.SIGKILL)
    assert "at step 2 (epoch 0, batch 2)" in log
    checkpoints = killed / "checkpoints"
    assert checkpoint_names(killed) == [".tmp-checkpoint-000006", "checkpoint-000004", "latest"]
    assert (checkpoints / ".tmp-checkpoint-000006" / "model.safetensors").is_file()  # written, never renamed
    # `latest` names the previous checkpoint, which is complete and intact; the total limit of 1 kept it.
    assert (checkpoints / "latest").read_text() == "checkpoint-000004"
    assert_same_checkpoint(straight / "checkpoints" / "checkpoint-000004", checkpoints / "checkpoint-000004")

    log = Training(resume, tmp_path / "resume2.log").wait()
    assert "at step 4 (epoch 0, batch 4)" in log
    assert checkpoint_names(killed) == ["checkpoint-000008", "latest"]  # the partial save is gone; limit 1 kept
    assert_same_checkpoint(straight / "checkpoints" / "checkpoint-000008", checkpoints / "checkpoint-000008")
    for part in ("transformer/model.safetensors", "vqgan/diffusion_pytorch_model.safetensors"):
        assert_same_safetensors(straight / part, killed / part)
    print(f"\n[timing] transformer kill/kill-mid-save/resume test: {time.perf_counter() - start:.1f} s")


# ------------------------------------------------------------------------------------------------ fault matrix
# Every kind of file a checkpoint holds, by the file of that kind in a vqgan-stage checkpoint.
CHECKPOINT_FILES = {
    "model weights": "model.safetensors",
    "optimizer": "optimizer.bin",
    "scheduler": "scheduler.bin",
    "RNG states": "random_states_0.pkl",
    "training state": "training_state.json",
    "training state tensors": "training_state.safetensors",
    "manifest": "manifest.json",
}
MATRIX_ARGS = [*VQGAN_ARGS, "--max_train_steps", "6", "--validation_steps", "6"]


@pytest.fixture(scope="module")
def matrix_reference(tmp_path_factory, train_script, fault_vqgan_json) -> Path:
    """One uninterrupted 6-step run (checkpoints at steps 2, 4 and 6), in-process, shared by the fault matrix."""
    from accelerate.state import AcceleratorState, GradientState

    output = tmp_path_factory.mktemp("matrix") / "straight"
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        argv = ["vqgan", "--model_config", fault_vqgan_json, *MATRIX_ARGS, "--output_dir", output]
        assert train_script.main([str(a) for a in argv]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return output


def killed_after_step_5(reference: Path, output: Path) -> Path:
    """What a kill after step 5 leaves of `reference`: checkpoints 2 and 4, `latest` naming 4; returns checkpoint 4."""
    for name in ("checkpoint-000002", "checkpoint-000004"):
        shutil.copytree(reference / "checkpoints" / name, output / "checkpoints" / name)
    (output / "checkpoints" / "latest").write_text("checkpoint-000004")
    return output / "checkpoints" / "checkpoint-000004"


@pytest.mark.parametrize("fault", FILE_FAULTS)
@pytest.mark.parametrize("kind", list(CHECKPOINT_FILES))
def test_fault_matrix_latest_falls_back_to_the_previous_intact_checkpoint(
    tmp_path, run_train, matrix_reference, fault_vqgan_json, caplog, kind, fault
):
    """Issue 15 (1, 2): a damaged newest checkpoint is named and skipped; the run ends as if never interrupted."""
    output = tmp_path / "run"
    damaged = killed_after_step_5(matrix_reference, output) / CHECKPOINT_FILES[kind]
    corrupt_file(damaged, fault)
    argv = ["vqgan", "--model_config", fault_vqgan_json, *MATRIX_ARGS, "--output_dir", output,
            "--resume_from_checkpoint", "latest"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert run_train(argv).returncode == 0
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if m.startswith("Skipping checkpoint checkpoint-000004: ")]
    assert len(skipped) == 1 and str(damaged) in skipped[0], skipped
    assert any(
        m.startswith(f"Resumed from {output / 'checkpoints' / 'checkpoint-000002'} at step 2") for m in messages
    )
    for step in (4, 6):  # the damaged checkpoint is written again, intact, and the run ends where the reference did
        name = f"checkpoint-{step:06d}"
        assert_same_checkpoint(matrix_reference / "checkpoints" / name, output / "checkpoints" / name)
    assert_same_safetensors(
        matrix_reference / "diffusion_pytorch_model.safetensors", output / "diffusion_pytorch_model.safetensors"
    )


@pytest.mark.parametrize("kind", ["RNG states", "model weights", "training state"])
def test_a_damaged_checkpoint_named_explicitly_is_refused_naming_the_file(
    tmp_path, run_train, matrix_reference, fault_vqgan_json, capsys, kind
):
    """Issue 15 (1, 2): no traceback, no silently different run; missing RNG states included (once an INFO line)."""
    output = tmp_path / "run"
    checkpoint = killed_after_step_5(matrix_reference, output)
    corrupt_file(checkpoint / CHECKPOINT_FILES[kind], "missing" if kind == "RNG states" else "truncated")
    argv = ["vqgan", "--model_config", fault_vqgan_json, *MATRIX_ARGS, "--output_dir", output,
            "--resume_from_checkpoint", checkpoint]  # fmt: skip
    assert run_train(argv).returncode == 1
    error = capsys.readouterr().err
    assert f"error: Cannot resume from {checkpoint}: {checkpoint / CHECKPOINT_FILES[kind]} is " in error
    assert "Traceback" not in error
    assert not (output / "diffusion_pytorch_model.safetensors").exists()


def test_an_intact_checkpoint_of_another_model_is_refused_in_one_line(tmp_path, run_train, matrix_reference, capsys):
    output = tmp_path / "run"
    checkpoint = killed_after_step_5(matrix_reference, output)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(restarting_vqgan_config(codebook_size=16)))
    argv = ["vqgan", "--model_config", other, *MATRIX_ARGS, "--output_dir", output, "--resume_from_checkpoint",
            "latest"]  # fmt: skip
    assert run_train(argv).returncode == 1
    error = capsys.readouterr().err
    assert f"error: Checkpoint {checkpoint} does not fit this run (RuntimeError: " in error
    assert "Resume with the model config and flags it was saved with." in error and "Traceback" not in error


# ---------------------------------------------------------------------------------------- checkpoint manager
class FakeAccelerator:
    """What `CheckpointManager.save` uses of an Accelerator: one process whose `save_state` writes one file."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_text(folder)


def test_total_limit_never_deletes_the_newest_complete_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, total_limit=1)
    for step in (2, 4, 6, 8):
        manager.save(FakeAccelerator(), step)
    assert [p.name for p in manager.complete_checkpoints()] == ["checkpoint-000008"]
    # A run resumed from an older checkpoint re-saves step 6 while step 8 of the abandoned branch exists:
    # the checkpoint just written is the newest, and the one that is kept.
    (tmp_path / "checkpoint-000006").mkdir()
    manager.save(FakeAccelerator(), 6)
    assert [p.name for p in manager.complete_checkpoints()] == ["checkpoint-000006"]
    assert manager.latest() == tmp_path / "checkpoint-000006"


def test_an_interrupted_save_leaves_latest_on_a_complete_checkpoint(tmp_path, monkeypatch):
    from hf_vqgan.training import checkpointing

    manager = CheckpointManager(tmp_path)
    manager.save(FakeAccelerator(), 2)
    manager.save(FakeAccelerator(), 4)
    # Re-saving step 4 (a resume from step 2) dies between moving the old folder aside and renaming the new one.
    real_replace = os.replace

    def dies_on_the_final_rename(src, dst):
        if Path(src).name == ".tmp-checkpoint-000004":
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "replace", dies_on_the_final_rename)
    with pytest.raises(KeyboardInterrupt):
        manager.save(FakeAccelerator(), 4)
    monkeypatch.undo()
    assert manager.latest() == tmp_path / "checkpoint-000002"  # `latest` names a missing folder: fall back
    assert (manager.latest() / "model.safetensors").is_file()
    manager.clean_incomplete()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000002", "latest"]


# ------------------------------------------------------------------------------------------ non-finite losses
def test_nonfinite_losses_skip_the_update_and_are_logged(tmp_path, run_train, fault_vqgan_json, caplog):
    output = tmp_path / "run"
    argv = ["vqgan", "--model_config", fault_vqgan_json, *VQGAN_ARGS, "--max_train_steps", "6",
            "--checkpointing_steps", "6", "--validation_steps", "6", "--max_nonfinite_steps", "3",
            "--output_dir", output]  # fmt: skip
    # The first two attempts after step 3 are NaN.
    with caplog.at_level(logging.WARNING), poison_losses(VQGANLoss, "generator_loss", "total", 3, 2):
        assert run_train(argv).returncode == 0
    skipped = [r.getMessage() for r in caplog.records if "non-finite loss" in r.getMessage()]
    assert len(skipped) == 2 and all(m.startswith("Step 3: non-finite loss {'generator': nan}") for m in skipped)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == 2 and metrics["step"] == 6

    # Had a NaN gradient reached an optimizer, every weight it touched would be NaN now.
    for name in ("model.safetensors", "model_1.safetensors", "training_state.safetensors"):
        tensors = load_file(output / "checkpoints" / "checkpoint-000006" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), name
    optimizer = torch.load(output / "checkpoints" / "checkpoint-000006" / "optimizer.bin", weights_only=True)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {6}  # six updates, none for the skipped attempts


def test_consecutive_nonfinite_losses_stop_the_run_naming_step_and_checkpoint(
    tmp_path, run_train, frozen_tokenizer, tiny_prior_json, capsys
):
    output = tmp_path / "run"
    argv = ["transformer", "--vqgan_model_name_or_path", frozen_tokenizer, "--prior_config", tiny_prior_json,
            "--tokenized_cache_dir", tmp_path / "tokens", *PRIOR_ARGS, "--max_nonfinite_steps", "2",
            "--output_dir", output]  # fmt: skip
    with poison_losses(VQGANPriorForCausalLM, "forward", "loss", 3, 3, math.inf):
        assert run_train(argv).returncode == 1
    error = capsys.readouterr().err
    checkpoint = output / "checkpoints" / "checkpoint-000002"
    assert (
        f"error: 2 consecutive non-finite losses, the last at step 3 ({{'loss': inf}}). Last good checkpoint: {checkpoint}."
        in error
    )
    assert "Traceback" not in error
    assert not (output / "transformer").exists()  # nothing half-trained was saved as the model

    # The cause is gone: resume from the named checkpoint.
    assert run_train([*argv, "--resume_from_checkpoint", "latest"]).returncode == 0
    assert json.loads((output / "metrics.json").read_text())["step"] == 8


def test_quantizer_statistics_ignore_nonfinite_latents():
    """A step whose latents hold NaN is skipped by the loop; the EMA codebook and its restarts must skip it too."""
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, use_ema=True, dead_code_steps=1, usage_window=3).train()
    quantizer(torch.randn(2, 4, 3, 3))  # one good step, so that there are statistics to protect
    before = {k: v.clone() for k, v in quantizer.state_dict().items()} | quantizer.statistics_state_dict()
    latents = torch.randn(2, 4, 3, 3)
    latents[1, :, 0, 0] = float("nan")
    quantizer(latents)
    after = quantizer.state_dict() | quantizer.statistics_state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert not changed, changed
    quantizer(torch.randn(2, 4, 3, 3))  # and the next good step updates them again
    assert not torch.equal(before["embedding.weight"], quantizer.embedding.weight)


# ------------------------------------------------------------------------------------------------- bad data
@pytest.fixture
def folder_with_bad_images(tmp_path) -> tuple[Path, set[str], set[str]]:
    """28 readable PNGs, then a corrupt, a truncated and an empty file (unreadable), a 16-bit and a CMYK image."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(28):
        Image.fromarray(rng.integers(0, 256, (20, 18 + i % 5, 3), dtype=np.uint8)).save(folder / f"good_{i:02d}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png " * 20)
    png = (folder / "good_00.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(folder / "sixteen_bit.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8), mode="CMYK").save(folder / "cmyk.jpg")
    assert Image.open(folder / "sixteen_bit.png").mode == "I;16" and Image.open(folder / "cmyk.jpg").mode == "CMYK"
    return folder, {"corrupt.png", "truncated.png", "empty.png"}, {"sixteen_bit.png", "cmyk.jpg"}


def test_bad_images_are_converted_or_skipped_and_counted(tmp_path, run_train, folder_with_bad_images, caplog):
    folder, unreadable, convertible = folder_with_bad_images
    config = tmp_path / "rgb.json"
    config.write_text(json.dumps(restarting_vqgan_config(3)))
    output = tmp_path / "run"
    # 33 files, 10% held out: 3 batches of 8 per epoch, so 6 steps read the training images twice.
    argv = ["vqgan", "--model_config", config, "--train_data_dir", folder, "--validation_split", "0.1",
            "--cache_dir", tmp_path / "cache", "--output_dir", output, "--max_train_steps", "6", "--train_batch_size",
            "8", "--perceptual_weight", "0", "--disc_weight", "0", "--validation_steps", "6", "--checkpointing_steps",
            "6", "--report_to", "none"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert run_train(argv).returncode == 0
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping unreadable image")]
    named = {Path(m.split()[3]).name for m in warnings}
    assert named == unreadable, warnings  # the unreadable files (and only they), each named in the log
    assert not named & convertible  # 16-bit and CMYK images are converted, not skipped
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["skipped_images"] == len(warnings) and metrics["step"] == 6
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


@pytest.mark.parametrize(
    "stage, option, value",
    [("vqgan", "--image_column", "picture"), ("transformer", "--image_column", "picture"),
     ("transformer", "--class_column", "digit")],
)  # fmt: skip
def test_a_missing_column_is_refused_at_start_up(
    tmp_path, run_train, capsys, fault_vqgan_json, frozen_tokenizer, stage, option, value
):
    if stage == "vqgan":
        argv = ["vqgan", "--model_config", fault_vqgan_json, "--perceptual_weight", "0", "--disc_num_layers", "2"]
    else:
        argv = ["transformer", "--vqgan_model_name_or_path", frozen_tokenizer]
    argv += [option, value, "--output_dir", tmp_path / "run", "--report_to", "none"]
    expected = rf"column '{value}' not found in split 'train'; available columns: \['image', 'label'\]"
    assert run_train(argv).returncode == 2
    err = capsys.readouterr().err
    assert re.search("error: .*" + expected, err) and "Traceback" not in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before the first step
