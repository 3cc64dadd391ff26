"""The training-curves figure: every logged loss term and validation metric against the step, drawn with PIL.

`TrainingCurves` keeps the points a run logs (training losses at `--logging_steps`, validation metrics at
`--validation_steps`), saves them as JSON so a resumed run draws the whole run, and plots one panel per value.
PIL only: matplotlib is not a dependency, and a grid of line charts needs no more than lines and labels.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PANEL_WIDTH, PANEL_HEIGHT = 260, 170
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 12, 22, 20
LINE_COLOURS = {"train": (31, 119, 180), "val": (214, 39, 40)}  # validation metrics in red, as they are held out


class TrainingCurves:
    """
    Scalar series of one run, by name: `{name: [(step, value), ...]}` in the order they were logged.

    Validation metrics are recorded under `val/{name}`; everything else is a training log.
    """

    def __init__(self, series: dict[str, list[tuple[int, float]]] | None = None):
        self.series: dict[str, list[tuple[int, float]]] = {}
        for name, points in (series or {}).items():
            self.series[name] = [(int(step), float(value)) for step, value in points]

    def record(self, step: int, values: dict) -> None:
        """Add `values` (name -> number) at `step`, replacing a value already recorded at `step`; other types, NaN
        and Inf are left out."""
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            points = self.series.setdefault(name, [])
            if points and points[-1][0] == step:
                points.pop()
            points.append((int(step), float(value)))

    def truncate(self, step: int) -> None:
        """Drop the points after `step` (what a resumed run logs again)."""
        for name in list(self.series):
            self.series[name] = [(s, v) for s, v in self.series[name] if s <= step]
            if not self.series[name]:
                del self.series[name]

    def save(self, path: str | os.PathLike) -> None:
        """Write the series as JSON, atomically (a temporary file renamed into place)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(self.series), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingCurves:
        """Read what `save` wrote."""
        try:
            series = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read the training curves file {str(path)!r}: {error}") from error
        if not isinstance(series, dict):
            raise ValueError(f"The training curves file {str(path)!r} does not hold a JSON object.")
        return cls(series)

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
