from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_vqgan.losses.adversarial import (
    adaptive_gan_weight,
    get_discriminator_loss,
    get_generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    non_saturating_generator_loss,
    vanilla_discriminator_loss,
    vanilla_generator_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 2.5]: 0.5 * (2.5 / 3 + 3.5 / 3) = 1
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_generator_loss(fake).item() == pytest.approx(1 / 6)


def test_vanilla_losses_by_hand():
    real = torch.tensor([0.0, LN3])
    fake = torch.tensor([LN3])
    # -log sigmoid(0) = ln 2, -log sigmoid(ln 3) = ln(4/3); -log(1 - sigmoid(ln 3)) = ln 4
    expected = 0.5 * ((LN2 + math.log(4 / 3)) / 2 + math.log(4.0))
    assert vanilla_discriminator_loss(real, fake).item() == pytest.approx(expected)
    # Generator, minimax: mean(log(1 - sigmoid(f))) = (log 1/2 + log 1/4) / 2
    assert vanilla_generator_loss(torch.tensor([0.0, LN3])).item() == pytest.approx(-1.5 * LN2)


def test_non_saturating_generator_by_hand():
    # -log sigmoid(0) = ln 2, -log sigmoid(ln 3) = ln(4/3)
    expected = (LN2 + math.log(4 / 3)) / 2
    assert non_saturating_generator_loss(torch.tensor([0.0, LN3])).item() == pytest.approx(expected)


def test_softplus_forms_match_cross_entropy_and_stay_finite():
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 5, 5) * 3, torch.randn(2, 1, 5, 5) * 3
    bce_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    bce_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    torch.testing.assert_close(vanilla_discriminator_loss(real, fake), 0.5 * (bce_real + bce_fake))
    torch.testing.assert_close(
        non_saturating_generator_loss(fake), F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    )
    huge = torch.tensor([200.0, -200.0])
    for value in (
        vanilla_discriminator_loss(huge, huge),
        vanilla_generator_loss(huge),
        non_saturating_generator_loss(huge),
    ):
        assert torch.isfinite(value)


@pytest.mark.parametrize(
    "name, disc_fn, gen_fn",
    [
        ("hinge", hinge_discriminator_loss, hinge_generator_loss),
        ("vanilla", vanilla_discriminator_loss, vanilla_generator_loss),
        # The non-saturating GAN only changes the generator.
        ("non_saturating", vanilla_discriminator_loss, non_saturating_generator_loss),
    ],
)
def test_getters(name, disc_fn, gen_fn):
    assert get_discriminator_loss(name) is disc_fn
    assert get_generator_loss(name) is gen_fn


@pytest.mark.parametrize("getter", [get_discriminator_loss, get_generator_loss])
def test_unknown_name_raises(getter):
    with pytest.raises(ValueError, match="'wasserstein'.*hinge"):
        getter("wasserstein")


def _linear_losses(rec_coefficients, gan_coefficients):
    weight = torch.ones(3, requires_grad=True)
    rec = (torch.tensor(rec_coefficients) * weight).sum()
    gan = (torch.tensor(gan_coefficients) * weight).sum()
    return rec, gan, weight


def test_adaptive_weight_by_hand_and_graph_kept():
    # grad rec = [3, 4, 0] (norm 5), grad gan = [0, 0, 2] (norm 2)
    rec, gan, weight = _linear_losses([3.0, 4.0, 0.0], [0.0, 0.0, 2.0])
    lam = adaptive_gan_weight(rec, gan, weight)
    assert lam.item() == pytest.approx(5.0 / (2.0 + 1e-4))
    assert not lam.requires_grad
    # retain_graph=True: the caller can still backpropagate both losses.
    (rec + lam * gan).backward()
    torch.testing.assert_close(weight.grad, torch.tensor([3.0, 4.0, 2.0 * lam.item()]))


@pytest.mark.parametrize(
    "rec_coefficients, gan_coefficients, max_weight, expected",
    [
        ([1e9, 0.0, 0.0], [1e-9, 0.0, 0.0], 1e4, 1e4),  # huge ratio: clamped at the default maximum
        ([3.0, 4.0, 0.0], [0.0, 0.0, 0.0], 1e4, 1e4),  # vanishing GAN gradient: 5 / 1e-4 = 5e4, clamped
        ([3.0, 4.0, 0.0], [0.0, 0.0, 0.0], 1e6, 5e4),  # ... and the eps is what keeps it finite
        ([3.0, 4.0, 0.0], [0.0, 0.0, 1.0], 2.0, 2.0),  # custom maximum
        ([0.0, 0.0, 0.0], [0.0, 0.0, 2.0], 1e4, 0.0),  # no reconstruction gradient: lower end
    ],
)
def test_adaptive_weight_clamp(rec_coefficients, gan_coefficients, max_weight, expected):
    rec, gan, weight = _linear_losses(rec_coefficients, gan_coefficients)
    assert adaptive_gan_weight(rec, gan, weight, max_weight=max_weight).item() == pytest.approx(expected)
