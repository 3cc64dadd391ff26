"""hf_vqgan.training.curves (the training-curves figure) and hf_vqgan.training.trackers (images to every tracker)."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hf_vqgan.training import trackers
from hf_vqgan.training.curves import LINE_COLOURS, PANEL_HEIGHT, PANEL_WIDTH, TrainingCurves


def _colour_pixels(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of every pixel of exactly `colour`."""
    return np.argwhere((np.asarray(image) == colour).all(axis=-1))


def test_record_keeps_finite_numbers_and_replaces_a_repeated_step():
    curves = TrainingCurves()
    curves.record(1, {"loss": 2.0, "lr": 1e-3, "note": "text", "flag": True, "bad": math.nan})
    curves.record(2, {"loss": math.inf})
    curves.record(3, {"loss": 1.5, "usage": 1})
    curves.record(3, {"usage": 0.5})  # the same step again (a final validation after a resume at max_steps)
    assert curves.series == {"loss": [(1, 2.0), (3, 1.5)], "lr": [(1, 1e-3)], "usage": [(3, 0.5)]}


def test_a_bound_run_appends_and_a_resume_reads_back_up_to_its_step(tmp_path):
    path = tmp_path / "logs" / "curves.jsonl"
    curves = TrainingCurves.open(path)  # a fresh run
    for step in range(1, 7):
        curves.record(step, {"loss": 1.0 / step, **({"val/psnr": 10.0 + step} if step % 3 == 0 else {})})
    assert len(path.read_text().splitlines()) == 6  # one line per record call: appended, not rewritten
    assert TrainingCurves.read(path).series == curves.series

    with open(path, "a") as f:
        f.write('{"step": 7, "loss": 0.1')  # a line cut short by a kill
    resumed = TrainingCurves.open(path, resume_step=4)
    assert resumed.series == {"loss": [(s, 1.0 / s) for s in range(1, 5)], "val/psnr": [(3, 13.0)]}
    resumed.record(5, {"loss": 0.5})
    assert TrainingCurves.read(path).series == {"loss": [*resumed.series["loss"]], "val/psnr": [(3, 13.0)]}
    assert resumed.series["loss"][-1] == (5, 0.5)

    assert TrainingCurves.open(path).series == {} and path.read_text() == ""  # a new run in the same folder
    with pytest.raises(ValueError, match="Cannot read the training curves file .*missing.jsonl"):
        TrainingCurves.read(tmp_path / "missing.jsonl")


def test_plot_draws_one_panel_per_series_training_first():
    curves = TrainingCurves()
    for step in range(1, 11):
        values = {"val/psnr": 20.0 + step} if step % 5 == 0 else {}
        curves.record(step, {**values, "total": 1.0 / step, "pixel": 0.5 / step, "usage": 0.1 * step})
    figure = curves.plot(columns=2)
    assert figure.mode == "RGB" and figure.size == (2 * PANEL_WIDTH, 2 * PANEL_HEIGHT)  # 4 series, 2 by 2
    train, val = _colour_pixels(figure, LINE_COLOURS["train"]), _colour_pixels(figure, LINE_COLOURS["val"])
    assert len(train) > 100 and len(val) > 10
    assert val[:, 0].min() >= PANEL_HEIGHT and val[:, 1].min() >= PANEL_WIDTH  # validation last: bottom right
    # The falling loss of the first panel runs from its top left to its bottom right.
    first = train[(train[:, 0] < PANEL_HEIGHT) & (train[:, 1] < PANEL_WIDTH)]
    left, right = first[first[:, 1] < 80], first[first[:, 1] > PANEL_WIDTH - 30]
    assert left[:, 0].mean() < right[:, 0].mean()

    single = TrainingCurves({"loss": [(5, 3.0)]}).plot()  # one point, a constant: a dot, no division by zero
    assert single.size == (PANEL_WIDTH, PANEL_HEIGHT) and len(_colour_pixels(single, LINE_COLOURS["train"])) > 0
    assert TrainingCurves().plot().size == (PANEL_WIDTH, PANEL_HEIGHT)


# ----------------------------------------------------------------------------------------------- trackers
class _Tracker:
    """Records `log_images` calls as accelerate's trackers receive them."""

    def __init__(self, name: str):
        self.name, self.calls = name, []

    def log_images(self, values, step=None, **kwargs):
        self.calls.append((values, step, kwargs))


def test_log_images_gives_each_tracker_its_own_form_and_names_the_others_once(caplog):
    image = Image.new("L", (6, 4), 200)
    kinds = [_Tracker("tensorboard"), _Tracker("wandb"), _Tracker("mlflow"), _Tracker("mlflow")]
    accelerator = SimpleNamespace(trackers=kinds)
    trackers._note_no_images.cache_clear()
    with caplog.at_level(logging.INFO, logger=trackers.__name__):
        trackers.log_images(accelerator, {"validation/x": image}, step=7)
        trackers.log_images(accelerator, {"validation/x": image}, step=8)
    tensorboard, wandb, mlflow, _ = kinds
    values, step, kwargs = tensorboard.calls[0]
    assert step == 7 and kwargs == {"dataformats": "NHWC"}
    assert values["validation/x"].shape == (1, 4, 6, 3) and (values["validation/x"] == 200).all()
    assert wandb.calls[0] == ({"validation/x": [image]}, 7, {}) and len(wandb.calls) == 2
    assert not mlflow.calls
    notes = [r.getMessage() for r in caplog.records if "mlflow" in r.getMessage()]
    assert len(notes) == 1 and "no images" in notes[0]
