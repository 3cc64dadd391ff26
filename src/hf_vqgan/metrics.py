"""Image and codebook figures: PSNR, SSIM, sharpness, codebook usage. Plain torch: no training dependency.

Image metrics take tensors of shape `(batch_size, channels, height, width)` in [-1, 1] (a single `(C, H, W)` image is
accepted too) and return one figure per image with `reduction="none"`, or their mean (the default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CodebookUsage", "psnr", "relative_sharpness", "sharpness", "ssim"]

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
