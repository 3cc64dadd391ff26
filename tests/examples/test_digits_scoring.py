"""examples/digits_scoring.py: the classifier that scores the demo's digit samples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.training.data import load_digits_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from digits_scoring import DigitsClassifier  # noqa: E402


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
    native = torch.stack([VQGANImageProcessor(8, channels=1)(image) for image in images])  # (N, 1, 8, 8)
    assert classifier.accuracy(native, labels) > 0.9


def test_classifier_on_digits_upscaled_to_32(classifier, validation_digits):
    images, labels = validation_digits
    upscaled = torch.stack([VQGANImageProcessor(32, channels=1)(image) for image in images])  # (N, 1, 32, 32)
    assert classifier.accuracy(upscaled, labels) > 0.85
    rgb = upscaled.expand(-1, 3, -1, -1)
    assert torch.equal(classifier.predict(rgb), classifier.predict(upscaled))
    noise = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier.accuracy(noise, labels[:32]) < 0.5  # the classifier does not score anything highly
