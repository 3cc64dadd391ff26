"""Images (validation grids, the training-curves figure) to every tracker of `--report_to`, through accelerate.

accelerate's trackers take scalars alike (`accelerator.log`) but images each in their own form, so each kind this
module knows gets its own call; any other tracker is named once in an info line and skipped.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_TRACKERS = ("tensorboard", "wandb")


def log_images(accelerator, images: dict[str, Image.Image], step: int) -> None:
    """
    Send each `tag: image` of `images` to every tracker the accelerator opened, at `step`.

    Call it on the main process (where accelerate keeps the trackers). TensorBoard gets `add_images` of an array of
    shape `(1, height, width, 3)`; Weights & Biases one `wandb.Image` per tag (accelerate's `log_images`).
    """
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for tag, image in images.items():
                array = np.asarray(image.convert("RGB"))[None]  # (1, H, W, 3)
                tracker.log_images({tag: array}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({tag: [image] for tag, image in images.items()}, step=step)
        else:
            _note_no_images(tracker.name)


@functools.cache
def _note_no_images(name: str) -> None:
    """Say once per tracker kind that it gets no images (its scalars are still logged)."""
    logger.info(
        "The %r tracker gets the run's scalars but no images (images go to %s); the image files are in output_dir.",
        name,
        " and ".join(IMAGE_TRACKERS),
    )
