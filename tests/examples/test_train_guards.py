"""The guards of a training run of examples/train.py (issue 15): a skipped non-finite step changes nothing, and images
over the pixel budget are skipped from their header, counted once per run and named at the end.

Non-finite steps are injected from here (monkeypatching, in-process): a loss multiplied by NaN, or a finite loss whose
backward pass makes every gradient NaN (`NaNGradient`). Each training attempt is bracketed by the forward pass of the
model being trained; everything the run holds (weights and buffers of every prepared model, optimizer and scheduler
states, EMA weights, the quantizer's codebook, EMA statistics, usage history and dead-code counters) is copied at the
start of every attempt, and the copies before and after the poisoned attempt must be equal.
"""

from __future__ import annotations

import json
import logging
import math
from itertools import chain
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANModel, VQGANPriorForCausalLM, image_utils
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.training.loop import TrainingRun
from testing_utils import header_only_png, prior_size, restarting_vqgan_config, tiny_vqgan

# An EMA codebook of 32 codes with dead-code restarts every 2 steps; GAN from step 0 with a BatchNorm discriminator.
SHARED_ARGS = (
    "--max_train_steps 5 --train_batch_size 8 --max_train_samples 48 --validation_steps 5 --checkpointing_steps 5 "
    "--max_eval_samples 16 --report_to none --use_ema --lr_warmup_steps 2"
).split()
VQGAN_ARGS = [
    *SHARED_ARGS,
    *"--perceptual_weight 0 --disc_start 0 --disc_base_channels 8 --disc_num_layers 2 --disc_norm batch".split(),
]
PRIOR_ARGS = [*SHARED_ARGS, *"--class_column label --num_validation_samples 1".split()]
POISONED_ATTEMPT = 3  # the third training attempt (steps 1 and 2 went through, so there is state to protect)


# --------------------------------------------------------------------------------------------- non-finite steps
class NaNGradient(torch.autograd.Function):
    """The identity forward (a finite loss), NaN gradients backward."""

    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def everything(run: TrainingRun) -> dict[str, torch.Tensor]:
    """A copy of every tensor a run holds, by name: parameters and all buffers (persistent or not) of every prepared
    model, every optimizer's state, every scheduler's step count, the EMA weights and step."""
    accelerator, held = run.accelerator, {}
    for i, model in enumerate(accelerator._models):
        for name, tensor in chain(model.named_parameters(), model.named_buffers()):
            held[f"model{i}/{name}"] = tensor.detach().clone()
    for i, optimizer in enumerate(accelerator._optimizers):
        for key, state in optimizer.state_dict()["state"].items():
            held.update({f"optimizer{i}/{key}/{name}": torch.as_tensor(v).clone() for name, v in state.items()})
    for i, scheduler in enumerate(accelerator._schedulers):
        held[f"scheduler{i}"] = torch.tensor(scheduler.scheduler.last_epoch)
    if run.ema is not None:
        held.update({f"ema/{i}": p.detach().clone() for i, p in enumerate(run.ema.shadow_params)})
        held["ema/step"] = torch.tensor(run.ema.optimization_step)
    return held


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    assert before.keys() == after.keys()
    return [name for name in before if not torch.equal(before[name], after[name])]


class Attempts:
    """Copies of `everything` a run holds: `starts[k]` at the start of training attempt k + 1 (a forward of the
    trained model with gradients on), `at_poison` when the poisoned loss function was called (after the forward)."""

    def __init__(self):
        self.starts: list[dict[str, torch.Tensor]] = []
        self.at_poison: dict[str, torch.Tensor] = {}
        self.poisoned = False
        self.runs: list[TrainingRun] = []


@pytest.fixture
def attempts(monkeypatch):
    """`attempts(model_class, loss_owner, loss_method, loss_field, kind)` records an `Attempts` from then on and
    poisons the loss of attempt `POISONED_ATTEMPT` (`kind` "loss": times NaN; "gradient": `NaNGradient`)."""

    def arm(model_class: type, loss_owner: type, loss_method: str, loss_field: str, kind: str) -> Attempts:
        record = Attempts()
        resume, forward = TrainingRun.resume, model_class.forward

        def recording_resume(self):
            record.runs.append(self)
            return resume(self)

        def recording_forward(self, *args, **kwargs):
            if torch.is_grad_enabled() and record.runs:
                record.starts.append(everything(record.runs[-1]))
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(TrainingRun, "resume", recording_resume)
        monkeypatch.setattr(model_class, "forward", recording_forward)
        loss_function = getattr(loss_owner, loss_method)  # the recording forward, when the loss is the forward's

        def poisoned(self, *args, **kwargs):
            training = torch.is_grad_enabled()
            if training and len(record.starts) == POISONED_ATTEMPT and not record.at_poison:
                record.at_poison = everything(record.runs[-1])
            output = loss_function(self, *args, **kwargs)
            if training and len(record.starts) == POISONED_ATTEMPT and not record.poisoned:
                record.poisoned = True
                loss = getattr(output, loss_field)
                setattr(output, loss_field, loss * math.nan if kind == "loss" else NaNGradient.apply(loss))
            return output

        monkeypatch.setattr(loss_owner, loss_method, poisoned)
        return record

    return arm


def vqgan_argv(tmp_path: Path, channels: int = 1) -> list:
    """The tokenizer stage on `VQGAN_ARGS` with the EMA codebook of `restarting_vqgan_config`, output in tmp_path/run
    (flags added after these override them)."""
    config = tmp_path / "vqgan.json"
    config.write_text(json.dumps(restarting_vqgan_config(channels)))
    return ["vqgan", "--model_config", config, *VQGAN_ARGS, "--output_dir", tmp_path / "run"]


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_skipped_generator_step_changes_nothing(tmp_path, run_train, attempts, kind, caplog):
    record = attempts(VQGANModel, VQGANLoss, "generator_loss", "total", kind)
    with caplog.at_level(logging.WARNING):
        assert run_train(vqgan_argv(tmp_path)).returncode == 0
    copies = record.starts
    before, after = copies[POISONED_ATTEMPT - 1], copies[POISONED_ATTEMPT]
    assert any(name.startswith("model0/quantizer.") for name in before)  # the codebook and its statistics are held
    assert changed(before, after) == []  # tokenizer, codebook, statistics, discriminator, optimizers, EMA
    assert changed(copies[POISONED_ATTEMPT - 2], before)  # while a step that went through changes them
    skipped = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    expected = "{'generator': nan}" if kind == "loss" else "'gradient_norm': nan}"
    assert len(skipped) == 1 and expected in skipped[0], skipped
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == 1 and metrics["step"] == 5


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_skipped_discriminator_step_changes_nothing_of_the_discriminator(tmp_path, run_train, attempts, kind):
    record = attempts(VQGANModel, VQGANLoss, "discriminator_loss", "loss", kind)
    assert run_train(vqgan_argv(tmp_path)).returncode == 0
    # From the discriminator's loss (its forward) to the next attempt: the generator's update is already done.
    moved = changed(record.at_poison, record.starts[POISONED_ATTEMPT])
    discriminator = [name for name in moved if name.split("/")[0] in ("model1", "optimizer1", "scheduler1")]
    assert discriminator == []  # weights, BatchNorm statistics, optimizer and schedule of the discriminator
    assert "model0/decoder.conv_out.weight" in changed(record.starts[POISONED_ATTEMPT - 1], record.at_poison)
    assert any(name.startswith("model1/") and "running_mean" in name for name in record.at_poison)  # BatchNorm
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == 1
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_a_skipped_prior_step_changes_nothing(tmp_path, run_train, attempts, kind):
    copies = attempts(VQGANPriorForCausalLM, VQGANPriorForCausalLM, "forward", "loss", kind).starts
    tokenizer = tmp_path / "tokenizer"  # untrained: the prior only needs stable codes
    tiny_vqgan(**restarting_vqgan_config(use_ema=False, dead_code_steps=0)).save_pretrained(tokenizer)
    prior_json = tmp_path / "prior.json"
    prior_json.write_text(json.dumps(prior_size()))
    argv = ["transformer", "--vqgan_model_name_or_path", tokenizer, "--prior_config", prior_json,
            "--tokenized_cache_dir", tmp_path / "tokens", *PRIOR_ARGS, "--output_dir", tmp_path / "run"]  # fmt: skip
    assert run_train(argv).returncode == 0
    assert changed(copies[POISONED_ATTEMPT - 1], copies[POISONED_ATTEMPT]) == []  # weights, Adam, schedule, EMA
    assert changed(copies[POISONED_ATTEMPT - 2], copies[POISONED_ATTEMPT - 1])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_nonfinite_steps"] == 1 and metrics["step"] == 5


# ---------------------------------------------------------------------------------------------- pixel budget
def test_oversized_images_are_skipped_from_their_header_counted_once_and_named(
    tmp_path, run_train, monkeypatch, caplog
):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"good_{i:02d}.png")
    (folder / "header_bomb.png").write_bytes(header_only_png(10_000, 10_000))  # 100 Mpx declared, 57 bytes
    Image.new("RGB", (60, 50)).save(folder / "large.png")  # a real image over the budget set below: 3,000 px
    refusals = []
    check = image_utils.check_pixel_budget

    def counting_check(width, height, max_pixels, source=None):
        try:
            check(width, height, max_pixels, source)
        except image_utils.ImageTooLargeError:
            refusals.append(Path(source).name)
            raise

    monkeypatch.setattr(image_utils, "check_pixel_budget", counting_check)
    # 22 files, 3 held out: 4 batches of 4 per epoch, so 12 steps read the training images three times.
    budget = ["--train_data_dir", folder, "--validation_split", "0.1", "--cache_dir", tmp_path / "cache",
              "--max_train_steps", "12", "--train_batch_size", "4", "--validation_steps", "12",
              "--checkpointing_steps", "12", "--max_image_pixels", "2500"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert run_train([*vqgan_argv(tmp_path, channels=3), *budget]).returncode == 0
    assert refusals.count("header_bomb.png") >= 2 and refusals.count("large.png") >= 2  # read in several epochs
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping unreadable image")]
    assert sorted(Path(m.split()[3]).name for m in skips) == ["header_bomb.png", "large.png"]  # named once each
    assert "10000x10000 = 100,000,000 pixels, over the budget of 2,500" in "".join(skips)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped 2 images")]
    assert len(summary) == 1 and "2 over the pixel budget" in summary[0] and "header_bomb.png" in summary[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 2 and metrics["step"] == 12
