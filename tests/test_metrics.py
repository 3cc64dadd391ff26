"""hf_vqgan.metrics: PSNR, SSIM, sharpness, codebook usage; importable without the training extras."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from hf_vqgan.metrics import CodebookUsage, psnr, relative_sharpness, sharpness, ssim


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


def test_metrics_import_without_training_dependencies():
    blocked = ["datasets", "accelerate", "lpips", "sklearn", "skimage", "hf_vqgan.training"]
    code = (
        "import sys, torch\n"
        f"for name in {blocked!r}: sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "from hf_vqgan.metrics import psnr\n"
        "print(float(psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert math.isclose(float(result.stdout), 10 * math.log10(4 / 0.25), rel_tol=1e-6)
