from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from hf_vqgan.training.data import ImageTransform, load_digits_dataset
from hf_vqgan.training.metrics import (
    CodebookUsage,
    DigitsClassifier,
    make_image_grid,
    psnr,
    relative_sharpness,
    sharpness,
    ssim,
)


# ------------------------------------------------------------------------------------------------ psnr
def test_psnr_hand_values():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01
    y[1] += 0.2  # MSE 0.04
    per_image = psnr(x, y, reduction="none")
    torch.testing.assert_close(per_image, torch.tensor([10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.04)]))
    torch.testing.assert_close(psnr(x, y), per_image.mean())
    torch.testing.assert_close(psnr(x[0], y[0], data_range=1.0), torch.tensor(20.0))
    assert torch.isinf(psnr(x, x))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:, :1])


# ------------------------------------------------------------------------------------------------ ssim
@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, channels, 24, 20, generator=generator) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
    y[2] = x[2].flip(-1)  # a structurally different pair too
    ours = ssim(x, y, reduction="none")
    reference = [
        structural_similarity(
            a.numpy().astype(np.float64),
            b.numpy().astype(np.float64),
            data_range=2.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x, y)
    ]
    torch.testing.assert_close(ours, torch.tensor(reference, dtype=torch.float32), atol=1e-3, rtol=0)
    assert ours[0] < 0.9  # the noise is visible
    torch.testing.assert_close(ssim(x, x), torch.tensor(1.0))
    with pytest.raises(ValueError, match="11x11"):
        ssim(x[:, :, :8, :8], y[:, :, :8, :8])


# ------------------------------------------------------------------------------------------- sharpness
def test_sharpness_hand_values_and_blur():
    ramp = (torch.arange(8, dtype=torch.float32) * 0.1).expand(1, 1, 8, 8)  # horizontal steps of 0.1
    torch.testing.assert_close(sharpness(ramp), torch.tensor(0.1))
    diagonal = ramp + ramp.transpose(-1, -2)  # steps of 0.1 both ways
    torch.testing.assert_close(sharpness(diagonal), torch.tensor(0.1 * math.sqrt(2)))
    assert sharpness(torch.zeros(2, 3, 8, 8)) == 0

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    assert relative_sharpness(blurred, images) < 0.6
    torch.testing.assert_close(relative_sharpness(images, images), torch.tensor(1.0))
    assert relative_sharpness(blurred, images, reduction="none").shape == (2,)


# -------------------------------------------------------------------------------------- codebook usage
def test_codebook_usage_accumulates():
    usage = CodebookUsage(codebook_size=4)
    assert usage.perplexity() == 0.0 and usage.usage() == 0.0
    usage.update(torch.tensor([[0, 0], [1, 1]]))
    assert usage.usage() == 0.5
    assert usage.perplexity() == pytest.approx(2.0)
    usage.update(torch.tensor([2, 3, 2, 3]))  # everything seen is now uniform over the 4 codes
    assert usage.compute() == {"usage": 1.0, "perplexity": pytest.approx(4.0), "num_tokens": 8}
    usage.update(torch.zeros(8, dtype=torch.long))  # code 0: 10 of 16
    probs = np.array([10, 2, 2, 2]) / 16
    assert usage.perplexity() == pytest.approx(math.exp(-(probs * np.log(probs)).sum()))
    with pytest.raises(ValueError, match="max 4"):
        usage.update(torch.tensor([4]))
    usage.reset()
    assert usage.num_tokens == 0


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


# ------------------------------------------------------------------------------------------ classifier
@pytest.fixture(scope="module")
def classifier():
    return DigitsClassifier()


@pytest.fixture(scope="module")
def validation_digits():
    validation = load_digits_dataset()["validation"]
    return validation["image"], torch.tensor(validation["label"])


def test_classifier_on_real_validation_digits(classifier, validation_digits):
    assert classifier.accuracy_on_real_validation() > 0.9
    images, labels = validation_digits
    native = torch.stack([ImageTransform(8, channels=1)(image) for image in images])  # (N, 1, 8, 8)
    assert classifier.accuracy(native, labels) > 0.9


def test_classifier_on_digits_upscaled_to_32(classifier, validation_digits):
    images, labels = validation_digits
    upscaled = torch.stack([ImageTransform(32, channels=1)(image) for image in images])  # (N, 1, 32, 32)
    assert classifier.accuracy(upscaled, labels) > 0.85
    rgb = upscaled.expand(-1, 3, -1, -1)
    assert torch.equal(classifier.predict(rgb), classifier.predict(upscaled))
    noise = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier.accuracy(noise, labels[:32]) < 0.5  # the classifier does not score anything highly
