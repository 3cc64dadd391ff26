"""The training-curves figure: every logged loss term and validation metric against the step, drawn with PIL.

`TrainingCurves` keeps the points a run logs (training losses at `--logging_steps`, validation metrics at
`--validation_steps`), appends them to a JSON-lines file so a resumed run draws the whole run, and plots one panel
per value.
PIL only: matplotlib is not a dependency, and a grid of line charts needs no more than lines and labels.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

PANEL_WIDTH, PANEL_HEIGHT = 260, 170
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 12, 22, 20
# The figure (in output_dir, next to the validation grid; uploaded with the model) and the points it is drawn from.
CURVES_FILE = "training_curves.png"
CURVES_DATA = os.path.join("logs", "training_curves.jsonl")
LINE_COLOURS = {"train": (31, 119, 180), "val": (214, 39, 40)}  # validation metrics in red, as they are held out


class TrainingCurves:
    """
    Scalar series of one run, by name: `{name: [(step, value), ...]}` in the order they were logged.

    Validation metrics are recorded under `val/{name}`; everything else is a training log. Bound to a file (`open`),
    each `record` also appends one JSON line `{"step": step, name: value, ...}` to it: a cost per logged step that
    does not grow with the run, and a file a resumed run can read back.
    """

    def __init__(self, series: dict[str, list[tuple[int, float]]] | None = None):
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.path: Path | None = None
        for name, points in (series or {}).items():
            self.series[name] = [(int(step), float(value)) for step, value in points]

    def record(self, step: int, values: dict) -> None:
        """Add `values` (name -> number) at `step`, replacing a value already recorded at `step`; other types, NaN
        and Inf are left out."""
        kept = {
            name: float(value)
            for name, value in values.items()
            if not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        }
        for name, value in kept.items():
            points = self.series.setdefault(name, [])
            if points and points[-1][0] == step:
                points.pop()
            points.append((int(step), value))
        if self.path is not None and kept:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": int(step), **kept}) + "\n")

    def truncate(self, step: int) -> None:
        """Drop the points after `step` (what a resumed run logs again)."""
        for name in list(self.series):
            self.series[name] = [(s, v) for s, v in self.series[name] if s <= step]
            if not self.series[name]:
                del self.series[name]

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainingCurves:
        """The curves a bound `TrainingCurves` wrote to `path` (a line cut short by a kill is skipped)."""
        curves = cls()
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ValueError(f"Cannot read the training curves file {str(path)!r}: {error}") from error
        for number, line in enumerate(lines, start=1):
            try:
                values = json.loads(line)
                step = int(values.pop("step"))
            except (ValueError, KeyError, TypeError, AttributeError):
                logger.warning("Skipping line %d of %s: not a training-curves record.", number, path)
                continue
            curves.record(step, values)
        return curves

    @classmethod
    def open(cls, path: str | os.PathLike, resume_step: int = 0) -> TrainingCurves:
        """
        The curves of a run that appends to `path`: at `resume_step` > 0 those already there up to that step (the
        rest is logged again), else none. The file is rewritten to hold exactly them.
        """
        path = Path(path)
        curves = cls.read(path) if resume_step > 0 and path.is_file() else cls()
        curves.truncate(resume_step)
        by_step: dict[int, dict[str, float]] = {}
        for name, points in curves.series.items():
            for step, value in points:
                by_step.setdefault(step, {})[name] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text("".join(json.dumps({"step": s, **by_step[s]}) + "\n" for s in sorted(by_step)), "utf-8")
        os.replace(tmp, path)
        curves.path = path
        return curves

    def plot(self, columns: int = 4) -> Image.Image:
        """
        One panel per series (training logs first, then `val/...`), `columns` panels a row: an RGB image of
        `columns * 260` by `rows * 170` pixels (a single blank panel when nothing was recorded).
        """
        names = sorted(self.series, key=lambda name: name.startswith("val/"))  # stable: logged order within each
        columns = max(1, min(columns, len(names)))
        rows = max(1, math.ceil(len(names) / columns))
        figure = Image.new("RGB", (columns * PANEL_WIDTH, rows * PANEL_HEIGHT), "white")
        draw = ImageDraw.Draw(figure)
        font = ImageFont.load_default()
        for i, name in enumerate(names):
            left, top = (i % columns) * PANEL_WIDTH, (i // columns) * PANEL_HEIGHT
            _draw_panel(draw, font, name, self.series[name], left, top)
        if not names:
            draw.text((MARGIN_LEFT, MARGIN_TOP), "no values logged yet", fill="black", font=font)
        return figure


def _draw_panel(draw: ImageDraw.ImageDraw, font, name: str, points: list[tuple[int, float]], left: int, top: int):
    """A line chart of `points` in the panel whose top-left corner is (`left`, `top`): title, frame, axis ranges."""
    x0, y0 = left + MARGIN_LEFT, top + MARGIN_TOP
    x1, y1 = left + PANEL_WIDTH - MARGIN_RIGHT, top + PANEL_HEIGHT - MARGIN_BOTTOM
    steps, values = [s for s, _ in points], [v for _, v in points]
    low, high = min(values), max(values)
    if high - low <= 1e-9 * max(abs(low), abs(high)):  # a constant series: centre it in a 10% band around it
        pad = 0.05 * abs(low) or 0.05
        low, high = low - pad, high + pad
    first, last = min(steps), max(steps)
    span = max(last - first, 1)

    def xy(step: int, value: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * (step - first) / span, y1 - (y1 - y0) * (value - low) / (high - low)

    colour = LINE_COLOURS["val" if name.startswith("val/") else "train"]
    draw.text((x0, top + 5), f"{name}  (last {values[-1]:.4g})", fill="black", font=font)
    draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
    draw.text((left + 4, y0), f"{high:.3g}", fill="black", font=font)
    draw.text((left + 4, y1 - 10), f"{low:.3g}", fill="black", font=font)
    draw.text((x0, y1 + 4), str(first), fill="black", font=font)
    draw.text((x1 - 6 * len(str(last)), y1 + 4), f"{last}", fill="black", font=font)
    line = [xy(s, v) for s, v in points]
    if len(line) > 1:
        draw.line(line, fill=colour, width=2)
    for x, y in line if len(line) <= 50 else line[-1:]:  # dots where there are few points, else the last one
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
