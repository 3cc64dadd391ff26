"""Evaluation figures for tokenizers and priors: reconstruction quality, sharpness, codebook use, digit recognisability.

Image metrics take tensors of shape `(batch_size, channels, height, width)` in [-1, 1] (a single `(C, H, W)` image is
accepted too) and return one figure per image with `reduction="none"`, or their mean (the default).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import digits_arrays

_REDUCTIONS = ("mean", "none")


def _as_batch(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"Expected `{name}` of shape (B, C, H, W) or (C, H, W), got {tuple(images.shape)}.")
    return images.float()


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_batch(x, "x"), _as_batch(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    return x, y


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")
    return values.mean() if reduction == "mean" else values


# ---------------------------------------------------------------------------------------------- fidelity
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """
    Peak signal-to-noise ratio in dB, `10 log10(data_range^2 / MSE)`, computed per image (identical images give
    `inf`). `data_range` is 2 for the [-1, 1] pixel range.
    """
    x, y = _pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)  # (B,)
    return _reduce(10.0 * torch.log10(data_range**2 / mse), reduction)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return torch.outer(kernel, kernel)  # (size, size), sums to 1


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 2.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    """
    Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window of standard deviation 1.5 and the paper's
    constants, computed per channel and averaged over channels and over the positions where the window fits
    entirely inside the image.

    This matches `skimage.metrics.structural_similarity(..., data_range=2, channel_axis=0, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)` per image. Images must be at least `window_size` pixels on each side.
    """
    x, y = _pair(x, y)
    B, C, H, W = x.shape
    if H < window_size or W < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size} pixels, got {H}x{W}.")
    window = _gaussian_window(window_size, sigma, x.device).expand(C, 1, window_size, window_size)
    x, y = x.double(), y.double()

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=C)  # (B, C, H - 10, W - 10): only windows fully inside the image

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _reduce(ssim_map.flatten(1).mean(dim=1).float(), reduction)


# --------------------------------------------------------------------------------------------- sharpness
def sharpness(x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """
    Mean gradient magnitude `sqrt(dx^2 + dy^2)` from forward finite differences, averaged over channels and the
    `(H - 1) x (W - 1)` positions where both differences exist. Blurry reconstructions score lower than their inputs.
    """
    x = _as_batch(x, "x")
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]  # (B, C, H-1, W-1)
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]  # (B, C, H-1, W-1)
    return _reduce((dx.pow(2) + dy.pow(2)).sqrt().flatten(1).mean(dim=1), reduction)


def relative_sharpness(reconstruction: torch.Tensor, original: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """
    `sharpness(reconstruction) / sharpness(original)`: 1 keeps the originals' detail, below 1 is blurrier.

    With `reduction="mean"` the ratio of the batch means (stable when some originals are flat); with `"none"` the
    ratio per image.
    """
    reconstruction, original = _pair(reconstruction, original)
    return sharpness(reconstruction, reduction) / sharpness(original, reduction)


# ----------------------------------------------------------------------------------------- codebook usage
class CodebookUsage:
    """
    Accumulates code counts over everything seen (for example a whole validation set) and reports the fraction of
    the codebook used and the perplexity `exp(entropy)` of the code distribution (`codebook_size` at best).

    `counts` is a plain tensor, so processes can sum theirs (`accelerator.reduce(usage.counts, "sum")`) before
    `compute`.
    """

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"`codebook_size` must be >= 1, got {codebook_size}.")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.float64)

    def reset(self) -> None:
        self.counts.zero_()

    def update(self, indices: torch.Tensor) -> None:
        """Count codes from `indices` of any shape, for example `(batch_size, h, w)`."""
        indices = indices.detach().flatten().long().cpu()
        if indices.numel() == 0:
            return
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(f"Code indices must be in [0, {self.codebook_size}); found min {low} and max {high}.")
        self.counts += torch.bincount(indices, minlength=self.codebook_size).double()

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum())

    def usage(self) -> float:
        """Fraction of codes seen at least once."""
        return float((self.counts > 0).double().mean())

    def perplexity(self) -> float:
        """`exp` of the entropy (nats) of the code frequencies; 0 before any update."""
        total = self.counts.sum()
        if total == 0:
            return 0.0
        probs = self.counts[self.counts > 0] / total
        return float(torch.exp(-(probs * probs.log()).sum()))

    def compute(self) -> dict[str, float]:
        return {"usage": self.usage(), "perplexity": self.perplexity(), "num_tokens": self.num_tokens}


# --------------------------------------------------------------------------------------------------- grids
def make_image_grid(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, scale: int = 1, pad_value: float = 1.0
) -> Image.Image:
    """
    Tile images of shape `(num_images, channels, height, width)` in [-1, 1] into one PIL image.

    Args:
        nrow (`int`, defaults to 8): Images per row.
        padding (`int`, defaults to 2): Pixels between and around images (after scaling).
        scale (`int`, defaults to 1): Enlarge each image by pixel repetition (nearest neighbour), so tiny images such
            as 8x8 digits stay crisp.
        pad_value (`float`, defaults to 1.0): Value of the padding, in [-1, 1] (white).

    Returns:
        A `PIL.Image.Image`, mode `"L"` for one channel and `"RGB"` for three.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}.")
    if nrow < 1 or scale < 1 or padding < 0:
        raise ValueError(f"`nrow` and `scale` must be >= 1 and `padding` >= 0, got {nrow}, {scale}, {padding}.")
    images = images.detach().float().cpu().clamp(-1.0, 1.0)
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    N, C, H, W = images.shape
    ncol = min(nrow, N)
    nrows = -(-N // ncol)
    grid = torch.full((C, nrows * (H + padding) + padding, ncol * (W + padding) + padding), pad_value)
    for i, image in enumerate(images):
        top = padding + (i // ncol) * (H + padding)
        left = padding + (i % ncol) * (W + padding)
        grid[:, top : top + H, left : left + W] = image
    pixels = ((grid + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H', W', C)
    return Image.fromarray(pixels[:, :, 0] if C == 1 else pixels, mode="L" if C == 1 else "RGB")


# --------------------------------------------------------------------------------------- digit recognition
class DigitsClassifier:
    """
    A support-vector classifier trained on the training split of the fixed digits split (`load_digits_dataset`), to
    measure whether generated digits are recognisable and of the class asked for.

    It is fitted on scikit-learn's native 8x8 images with values 0..16; `predict` brings images of any size back to
    that form by area averaging. Training takes a fraction of a second and is deterministic.
    """

    def __init__(self, gamma: float = 0.001, C: float = 10.0):
        from sklearn.svm import SVC

        images, labels = digits_arrays("train")
        self.model = SVC(gamma=gamma, C=C)
        self.model.fit(images.reshape(len(images), -1), labels)

    @staticmethod
    def to_features(images: torch.Tensor) -> np.ndarray:
        """Images `(N, 1 or 3, H, W)` in [-1, 1] -> features `(N, 64)`: 8x8 area averages on the 0..16 scale."""
        images = _as_batch(images, "images").detach().cpu()
        if images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        elif images.shape[1] != 1:
            raise ValueError(f"Expected 1- or 3-channel images, got {images.shape[1]} channels.")
        small = F.adaptive_avg_pool2d(images, (8, 8))  # (N, 1, 8, 8), box averages: area resampling
        return ((small.clamp(-1.0, 1.0) + 1.0) * 8.0).flatten(1).double().numpy()  # [-1, 1] -> 0..16

    def predict(self, images: torch.Tensor) -> torch.LongTensor:
        """Predicted digits, of shape `(N,)`, for images `(N, 1, H, W)` in [-1, 1] of any size."""
        return torch.from_numpy(self.model.predict(self.to_features(images)).astype(np.int64))

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of `images` classified as their `labels` (for example the class a prior was asked for)."""
        labels = torch.as_tensor(labels).long().cpu()
        return float((self.predict(images) == labels).float().mean())

    def accuracy_on_real_validation(self) -> float:
        """Accuracy on the real validation digits (180 images, never seen in training): the ceiling for samples."""
        images, labels = digits_arrays("validation")
        return float(self.model.score(images.reshape(len(images), -1), labels))
