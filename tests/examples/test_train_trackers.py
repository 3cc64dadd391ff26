"""examples/train.py and its trackers (issue 14, finding 9): validation images and the training-curves figure reach
every tracker `--report_to` names (TensorBoard, and Weights & Biases through a stand-in `wandb` module: no network),
the figure is written to output_dir, and a resumed run draws the whole run."""

from __future__ import annotations

import json
import sys
import types

import accelerate.tracking
import pytest
import torch
from accelerate.utils import LoggerType
from PIL import Image

from hf_vqgan import VQGANModel
from hf_vqgan.training.curves import TrainingCurves

FAST_ARGS = ["--train_batch_size", "8", "--eval_batch_size", "32", "--max_train_samples", "64", "--disc_base_channels", "8",
             "--disc_num_layers", "2", "--perceptual_weight", "0", "--logging_steps", "1"]  # fmt: skip


class FakeWandbRun:
    """What `wandb.init` returns: records each `log` call."""

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))

    def finish(self):
        pass

    def images(self) -> dict[str, list[tuple[int, Image.Image]]]:
        """Every image logged, by tag: [(step, PIL image), ...]."""
        found: dict[str, list] = {}
        for step, values in self.logged:
            for tag, value in values.items():
                if isinstance(value, list) and value and isinstance(value[0], FakeWandbImage):
                    found.setdefault(tag, []).extend((step, image.image) for image in value)
        return found


class FakeWandbImage:
    def __init__(self, image):
        self.image = image


@pytest.fixture
def fake_wandb(monkeypatch) -> list[FakeWandbRun]:
    """A `wandb` module that accelerate's real WandBTracker drives; the runs it started, in order."""
    runs: list[FakeWandbRun] = []
    module = types.ModuleType("wandb")
    module.Image = FakeWandbImage
    module.config = types.SimpleNamespace(update=lambda values, allow_val_change=False: None)

    def init(project=None, **kwargs):
        runs.append(FakeWandbRun())
        return runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    available = [*accelerate.tracking.get_available_trackers(), LoggerType.WANDB]
    monkeypatch.setattr(accelerate.tracking, "_available_trackers", available)
    return runs


def _tensorboard_images(logging_dir) -> dict[str, list[tuple[int, tuple[int, int]]]]:
    """Every image of the run's TensorBoard event files, by tag: [(step, (width, height)), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list] = {}
    for events in sorted(logging_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["images"]:
            found[tag] = [(e.step, (e.width, e.height)) for e in accumulator.Images(tag)]
    return found


def _vqgan(model_config, output_dir, steps: int, *extra) -> list:
    return ["vqgan", "--model_config", model_config, "--output_dir", output_dir, "--max_train_steps", steps,
            *FAST_ARGS, *extra]  # fmt: skip


def test_validation_images_and_curves_reach_tensorboard_and_wandb(run_train, fake_wandb, tiny_vqgan_json, tmp_path):
    out = tmp_path / "vqgan"
    run = run_train(_vqgan(tiny_vqgan_json, out, 4, "--validation_steps", 2, "--report_to", "tensorboard,wandb"))
    assert run.returncode == 0
    (wandb_run,) = fake_wandb
    images = wandb_run.images()
    grid = Image.open(out / "reconstructions.png")
    assert [step for step, _ in images.get("validation/reconstructions", [])] == [2, 4]
    assert images["validation/reconstructions"][-1][1].tobytes() == grid.tobytes()
    curves = Image.open(out / "training_curves.png")
    assert [step for step, _ in images["training_curves"]] == [2, 4]
    assert images["training_curves"][-1][1].tobytes() == curves.tobytes()
    assert any("val/psnr" in values for _, values in wandb_run.logged)  # the scalars too

    tensorboard = _tensorboard_images(out / "logs")
    assert tensorboard["validation/reconstructions"] == [(2, grid.size), (4, grid.size)]
    assert tensorboard["training_curves"][-1] == (4, curves.size)


def test_the_curves_figure_holds_the_logged_losses_and_validation_metrics(run_train, tiny_vqgan_json, tmp_path):
    out = tmp_path / "vqgan"
    run = run_train(_vqgan(tiny_vqgan_json, out, 4, "--validation_steps", 2, "--report_to", "none"))
    assert run.returncode == 0
    series = TrainingCurves.read(out / "logs" / "training_curves.jsonl").series
    logged = run.train_logs()
    for name in ("total", "pixel", "quantizer", "usage"):
        assert series[name] == [(step, logged[step][name]) for step in (1, 2, 3, 4)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [step for step, _ in series["val/psnr"]] == [2, 4] and series["val/psnr"][-1][1] == metrics["psnr"]
    assert "val/codebook_usage" in series
    Image.open(out / "training_curves.png").verify()
    VQGANModel.from_pretrained(out)  # the figure sits next to a loadable model


def test_a_resumed_run_draws_the_whole_run(run_train, tiny_vqgan_json, tmp_path):
    """Interrupted after step 2 (a checkpoint), resumed to 4: the same curves as the uninterrupted run, not only
    steps 3 and 4."""
    args = ("--validation_steps", 2, "--checkpointing_steps", 2, "--report_to", "none")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_train(_vqgan(tiny_vqgan_json, whole, 4, *args)).returncode == 0
    assert run_train(_vqgan(tiny_vqgan_json, resumed, 2, *args)).returncode == 0
    # The interrupted run logged more than its checkpoint holds: steps after it are dropped on resume.
    with open(resumed / "logs" / "training_curves.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "total": 123.0}) + "\n")
    again = run_train(_vqgan(tiny_vqgan_json, resumed, 4, *args, "--resume_from_checkpoint", "latest"))
    assert again.returncode == 0
    expected = TrainingCurves.read(whole / "logs" / "training_curves.jsonl").series
    got = TrainingCurves.read(resumed / "logs" / "training_curves.jsonl").series
    assert got.keys() == expected.keys()
    for name, points in expected.items():
        assert [s for s, _ in got[name]] == [s for s, _ in points], name
        torch.testing.assert_close([v for _, v in got[name]], [v for _, v in points], rtol=1e-5, atol=1e-6)


def test_the_priors_samples_and_curves_reach_wandb(run_train, fake_wandb, tiny_train_config, tiny_prior_config,
                                                   tmp_path):  # fmt: skip
    torch.manual_seed(0)
    VQGANModel(**tiny_train_config).save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "prior.json").write_text(json.dumps(tiny_prior_config))
    out = tmp_path / "pipeline"
    argv = ["transformer", "--vqgan_model_name_or_path", tmp_path / "tokenizer", "--prior_config",
            tmp_path / "prior.json", "--output_dir", out, "--tokenized_cache_dir", tmp_path / "tokens",
            "--max_train_steps", 2, "--class_column", "label", "--train_batch_size", "8", "--eval_batch_size", "64",
            "--max_train_samples", "64", "--max_eval_samples", "32", "--num_validation_samples", "1",
            "--logging_steps", "1", "--report_to", "wandb"]  # fmt: skip
    assert run_train(argv).returncode == 0
    (wandb_run,) = fake_wandb
    images = wandb_run.images()
    assert [step for step, _ in images.get("validation/samples", [])] == [2]
    assert images["validation/samples"][0][1].tobytes() == Image.open(out / "samples.png").tobytes()
    assert images["training_curves"][0][1].tobytes() == Image.open(out / "training_curves.png").tobytes()
    series = TrainingCurves.read(out / "logs" / "training_curves.jsonl").series
    assert [step for step, _ in series["loss"]] == [1, 2] and [step for step, _ in series["val/loss"]] == [2]
