"""How recognisable a digits prior's samples are: the figures `examples/demo.py` and the benchmarks print.

`DigitsClassifier` is a support-vector classifier fitted on the real digits' training split; `evaluate_class_samples`
scores a class-conditional pipeline with it, `evaluate_lowres_conditioning` a pipeline conditioned on low-resolution
digits. Demo code, not part of the installable package: scripts elsewhere put this folder on `sys.path` to import it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hf_vqgan import VQGANImageProcessor, VQGANTransformerPipeline
from hf_vqgan.conditions import condition_to_pixels, lowres_condition
from hf_vqgan.image_utils import make_image_grid
from hf_vqgan.training.data import digits_arrays, load_digits_dataset


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
        if images.ndim != 4:
            raise ValueError(f"Expected images of shape (N, C, H, W), got {tuple(images.shape)}.")
        images = images.detach().float().cpu()
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


def _samples(pipe, seed: int, **call) -> torch.Tensor:
    """The pipeline's samples for `call`, seeded, as a tensor `(N, C, H, W)` in [-1, 1] (the classifier's range)."""
    return pipe(**call, generator=torch.Generator().manual_seed(seed), output_type="pt").images * 2 - 1


@torch.no_grad()
def evaluate_class_samples(
    pipeline_dir, grid_path, *, samples_per_class=10, guidance_scale=2.0, seed=0, top_k=None
) -> dict:
    """Sample every digit class, save a grid (one row per class), and score the samples with a classifier trained
    on the real digits' training split: the fraction classified as the class asked for, per class and overall."""
    pipe = VQGANTransformerPipeline.from_pretrained(str(pipeline_dir))
    pipe.set_progress_bar_config(disable=True)
    num_classes = pipe.transformer.config.num_classes
    labels = torch.arange(num_classes).repeat_interleave(samples_per_class)
    images = _samples(pipe, seed, class_labels=labels.tolist(), guidance_scale=guidance_scale, top_k=top_k)
    make_image_grid(images, nrow=samples_per_class, scale=max(1, 64 // images.shape[-1])).save(grid_path)
    classifier = DigitsClassifier()
    predicted = classifier.predict(images)
    correct = (predicted == labels).float()
    figures = {
        "sample_accuracy": float(correct.mean()),
        "real_validation_accuracy": float(classifier.accuracy_on_real_validation()),
        "guidance_scale": guidance_scale,
        "samples_per_class": samples_per_class,
    }
    for c in range(num_classes):
        figures[f"sample_accuracy_class_{c}"] = float(correct[labels == c].mean())
    return figures


@torch.no_grad()
def evaluate_lowres_conditioning(pipeline_dir, grid_path, *, num_samples=100, seed=0) -> dict:
    """How well samples of a `lowres`-conditional pipeline respect their conditions, taken from real held-out digits.

    Each of `num_samples` validation digits gives one condition (its `lowres_factor` box average) and one sample.
    Figures: `lowres_condition_mse`, the MSE between each sample's own box average and its condition;
    `lowres_condition_mse_shuffled`, the same with every sample paired with another digit's condition (what ignoring
    the condition would score); `lowres_condition_mse_tokenizer`, the MSE of the real digits' tokenizer
    reconstructions (the floor a sampler can reach through this tokenizer); and the classifier accuracy of the samples
    against the label of the digit their condition came from (`lowres_sample_accuracy`; 0.1 is chance), next to the
    classifier's accuracy on those real digits (`lowres_real_accuracy`). The grid shows conditions, samples, digits.
    """
    pipe = VQGANTransformerPipeline.from_pretrained(str(pipeline_dir))
    pipe.set_progress_bar_config(disable=True)
    processor = pipe.condition_processor
    if processor is None or processor.config.condition_type != "lowres":
        raise ValueError(f"{pipeline_dir} is not a lowres-conditional pipeline.")
    factor = processor.config.lowres_factor
    resolution = pipe.latent_grid[0] * pipe.vqgan.downsample_factor
    validation = load_digits_dataset()["validation"]
    if not 1 <= num_samples <= len(validation):
        raise ValueError(f"`num_samples` must be in [1, {len(validation)}] (held-out digits), got {num_samples}.")
    validation = validation.shuffle(seed=seed).select(range(num_samples))
    transform = VQGANImageProcessor(resolution, pipe.vqgan.config.in_channels, center_crop=True)
    real = torch.stack([transform(image) for image in validation["image"]])  # (N, C, H, W) in [-1, 1]
    labels = torch.tensor(validation["label"])
    images = _samples(pipe, seed, condition_image=real, batch_size=num_samples)
    conditions = lowres_condition(real, factor)  # (N, C, H/f, W/f)
    sampled = lowres_condition(images, factor)
    reconstructed = lowres_condition(pipe.decode_tokens(pipe.encode_images(real), output_type="pt") * 2 - 1, factor)
    # The digits are already in random order, so rolling by one pairs every sample with another digit's condition.
    shuffled = conditions.roll(1, dims=0)
    classifier = DigitsClassifier()
    figures = {
        "lowres_condition_mse": float(((sampled - conditions) ** 2).mean()),
        "lowres_condition_mse_shuffled": float(((sampled - shuffled) ** 2).mean()),
        "lowres_condition_mse_tokenizer": float(((reconstructed - conditions) ** 2).mean()),
        "lowres_sample_accuracy": classifier.accuracy(images, labels),
        "lowres_real_accuracy": classifier.accuracy(real, labels),
        "lowres_num_samples": num_samples,
        "lowres_factor": factor,
    }
    shown = min(10, num_samples)
    upsampled = condition_to_pixels(conditions[:shown], "lowres", size=resolution)
    rows = torch.cat([upsampled, images[:shown], real[:shown]])
    make_image_grid(rows, nrow=shown, scale=max(1, 64 // images.shape[-1])).save(grid_path)
    return figures
