"""hf_vqgan.training.metrics: the validation image grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vqgan.image_utils import make_image_grid


# ------------------------------------------------------------------------------------------------ grid
def test_make_image_grid_layout():
    images = torch.stack([torch.full((1, 4, 4), value) for value in (-1.0, 0.0, 1.0, -1.0, 0.5)])
    grid = make_image_grid(images, nrow=2, padding=1)
    assert grid.mode == "L" and grid.size == (2 * 5 + 1, 3 * 5 + 1)  # (width, height)
    pixels = np.asarray(grid)
    assert pixels[0, 0] == 255  # white padding
    assert pixels[1, 1] == 0  # image 0 at the top left
    assert pixels[1, 6] == 128  # image 1 to its right
    assert pixels[6, 1] == 255  # image 2 on the second row
    assert pixels[11, 1] == 191  # image 4 on the third row
    assert pixels[11, 6] == 255  # the empty last cell is padding

    scaled = make_image_grid(torch.zeros(3, 3, 8, 8), nrow=8, padding=0, scale=4)
    assert scaled.mode == "RGB" and scaled.size == (3 * 32, 32)
    with pytest.raises(ValueError, match="N, 1 or 3"):
        make_image_grid(torch.zeros(2, 2, 4, 4))
