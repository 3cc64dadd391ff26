from __future__ import annotations

import socket

import pytest
import torch

from hf_vqgan.losses.adversarial import get_discriminator_loss, get_generator_loss
from hf_vqgan.losses.perceptual import LPIPSWeightsUnavailableError
from hf_vqgan.losses.vqgan_loss import VQGANDiscriminatorLossOutput, VQGANGeneratorLossOutput, VQGANLoss
from hf_vqgan.models.vqgan import VQGANModel
from testing_utils import vqgan_config

TINY_DISC = dict(disc_base_channels=8, disc_num_layers=2, disc_norm_num_groups=4)
NO_PERCEPTUAL = dict(perceptual_weight=0.0)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    return VQGANModel(**vqgan_config()), torch.rand(2, 3, 32, 32) * 2 - 1


@pytest.fixture(scope="module")
def perceptual_gan_loss(random_vgg16_file):
    """The full objective (random LPIPS backbone, which takes a second or two to build), shared by the module."""
    torch.manual_seed(0)
    return VQGANLoss(perceptual_weight=0.5, lpips_vgg_weights_path=random_vgg16_file, disc_start=0, **TINY_DISC)


@pytest.fixture()
def toy_decoder():
    """A one-conv stand-in for the decoder, for tests where only "some last layer" matters: (layer, x, decode)."""
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(4, 3, 3, padding=1)
    latents, x = torch.randn(2, 4, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    return layer, x, lambda: torch.tanh(layer(latents))


def _call_counter(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


# --------------------------------------------------------------------------------------------- pixel terms


@pytest.mark.parametrize("pixel_loss, expected_pixel", [("l1", 1.5), ("l2", 3.5)])
def test_pixel_loss_and_vqvae_baseline_by_hand(pixel_loss, expected_pixel):
    loss_fn = VQGANLoss(pixel_loss=pixel_loss, pixel_weight=3.0, codebook_weight=2.0, disc_weight=0, **NO_PERCEPTUAL)
    assert loss_fn.perceptual is None and loss_fn.discriminator is None
    inputs = torch.zeros(1, 1, 1, 4)
    reconstructions = torch.tensor([[[[1.0, -2.0, 0.0, 3.0]]]])  # |e| sums to 6, e^2 to 14, over 4 pixels
    out = loss_fn.generator_loss(inputs, reconstructions, torch.tensor(0.25), global_step=10**6)
    assert out.pixel.item() == pytest.approx(expected_pixel)
    assert out.reconstruction.item() == pytest.approx(3.0 * expected_pixel)
    assert out.total.item() == pytest.approx(3.0 * expected_pixel + 2.0 * 0.25)
    assert out.perceptual.item() == out.gan.item() == out.adaptive_weight.item() == out.disc_factor == 0.0
    assert not loss_fn.should_update_discriminator(10**6)
    with pytest.raises(ValueError, match="no discriminator"):
        loss_fn.discriminator_loss(inputs, reconstructions, global_step=10**6)


def test_to_log_dict_gives_floats():
    loss_fn = VQGANLoss(disc_weight=0, **NO_PERCEPTUAL)
    out = loss_fn.generator_loss(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), torch.tensor(0.5), global_step=0)
    log = out.to_log_dict(prefix="train/")
    assert set(log) == {
        f"train/{k}"
        for k in (
            "total",
            "pixel",
            "perceptual",
            "reconstruction",
            "gan",
            "adaptive_weight",
            "disc_factor",
            "quantizer",
        )
    }
    assert all(type(v) is float for v in log.values())
    assert log["train/total"] == pytest.approx(1.5)
    d_out = VQGANDiscriminatorLossOutput(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(-3.0))
    assert d_out.to_log_dict() == {"loss": 1.0, "logits_real": 2.0, "logits_fake": -3.0}


# ----------------------------------------------------------------------------------------- adaptive weight


def _direct_reference(loss_fn: VQGANLoss, x, out, last_layer):
    """The adaptive weight and total loss computed here from scratch, with plain autograd."""
    rec = (x - out.sample).abs().mean()
    if loss_fn.perceptual is not None:
        rec = rec + loss_fn.perceptual_weight * loss_fn.perceptual(x, out.sample).mean()
    gan = get_generator_loss(loss_fn.gen_loss_name)(loss_fn.discriminator(out.sample))
    (rec_grad,) = torch.autograd.grad(rec, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan, last_layer, retain_graph=True)
    weight = loss_fn.disc_weight * torch.clamp(rec_grad.norm() / (gan_grad.norm() + 1e-4), 0, 1e4)
    total = rec + weight * gan + loss_fn.codebook_weight * out.quantizer_loss
    return weight, total, rec_grad + weight * gan_grad


@pytest.mark.parametrize("gen_loss", ["hinge", "non_saturating"])
def test_adaptive_weight_matches_direct_autograd(model_and_batch, gen_loss):
    model, x = model_and_batch
    torch.manual_seed(0)
    loss_fn = VQGANLoss(disc_weight=0.8, disc_start=0, gen_loss=gen_loss, **NO_PERCEPTUAL, **TINY_DISC)
    out = model(x)
    W = model.last_layer_weight
    result = loss_fn.generator_loss(x, out.sample, out.quantizer_loss, global_step=0, last_layer=W)
    expected_weight, expected_total, expected_grad = _direct_reference(loss_fn, x, out, W)
    assert result.adaptive_weight.item() > 0 and not result.adaptive_weight.requires_grad
    torch.testing.assert_close(result.adaptive_weight, expected_weight, rtol=1e-5, atol=0)
    torch.testing.assert_close(result.total, expected_total, rtol=1e-5, atol=0)
    # The weight is a constant for backprop: the last layer's gradient is grad rec + lambda * grad gan.
    (total_grad,) = torch.autograd.grad(result.total, W)
    torch.testing.assert_close(total_grad, expected_grad, rtol=1e-4, atol=1e-5 * expected_grad.abs().max().item())


def test_perceptual_term_one_lpips_call_and_adaptive_weight(model_and_batch, perceptual_gan_loss):
    model, x = model_and_batch
    loss_fn = perceptual_gan_loss
    out = model(x)
    calls = _call_counter(loss_fn.perceptual)
    result = loss_fn.generator_loss(
        x, out.sample, out.quantizer_loss, global_step=0, last_layer=model.last_layer_weight
    )
    assert len(calls) == 1  # the adaptive weight's gradients reuse the graph; no second VGG forward
    expected_perceptual = loss_fn.perceptual(x, out.sample).mean()
    torch.testing.assert_close(result.perceptual, expected_perceptual.detach())
    torch.testing.assert_close(result.reconstruction, result.pixel + 0.5 * result.perceptual)
    expected_weight, expected_total, _ = _direct_reference(loss_fn, x, out, model.last_layer_weight)
    torch.testing.assert_close(result.adaptive_weight, expected_weight, rtol=1e-5, atol=0)
    torch.testing.assert_close(result.total, expected_total, rtol=1e-5, atol=0)


def test_gan_term_needs_last_layer_but_not_without_grad(toy_decoder):
    layer, x, decode = toy_decoder
    loss_fn = VQGANLoss(disc_start=0, **NO_PERCEPTUAL, **TINY_DISC)
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn.generator_loss(x, decode(), torch.tensor(0.0), global_step=0)
    with torch.no_grad():  # evaluation: no adaptive weight (it needs gradients), as in the reference
        result = loss_fn.generator_loss(x, decode(), torch.tensor(0.0), global_step=0)
    assert result.adaptive_weight.item() == 0.0 and result.disc_factor == 1.0 and result.gan.item() != 0.0


# ------------------------------------------------------------------------------------------------ warm-up


def test_warm_up_switches_on_exactly_at_disc_start(toy_decoder):
    layer, x, decode = toy_decoder
    loss_fn = VQGANLoss(disc_start=3, **NO_PERCEPTUAL, **TINY_DISC)
    disc_calls = _call_counter(loss_fn.discriminator)
    quantizer_loss = torch.tensor(0.125)

    before = loss_fn.generator_loss(x, decode(), quantizer_loss, global_step=2, last_layer=layer.weight)
    assert not loss_fn.should_update_discriminator(2)
    assert before.disc_factor == 0.0 and before.gan.item() == 0.0 and before.adaptive_weight.item() == 0.0
    assert len(disc_calls) == 0  # neither the GAN term nor the adaptive weight's extra backward was computed
    torch.testing.assert_close(before.total, before.reconstruction + quantizer_loss)
    assert loss_fn.discriminator_loss(x, decode(), global_step=2).loss.item() == 0.0

    after = loss_fn.generator_loss(x, decode(), quantizer_loss, global_step=3, last_layer=layer.weight)
    assert loss_fn.should_update_discriminator(3)
    assert after.disc_factor == 1.0 and after.gan.item() != 0.0 and after.adaptive_weight.item() > 0.0
    torch.testing.assert_close(
        after.total, after.reconstruction + after.adaptive_weight * after.gan + quantizer_loss, rtol=1e-6, atol=0
    )
    assert loss_fn.discriminator_loss(x, decode(), global_step=3).loss.item() > 0.0


# ----------------------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("disc_loss", ["hinge", "vanilla"])
def test_discriminator_loss_value_and_detached_reconstructions(toy_decoder, disc_loss):
    layer, x, decode = toy_decoder
    loss_fn = VQGANLoss(disc_start=0, disc_loss=disc_loss, **NO_PERCEPTUAL, **TINY_DISC)
    reconstructions = decode()
    result = loss_fn.discriminator_loss(x, reconstructions, global_step=0)
    assert isinstance(result, VQGANDiscriminatorLossOutput)
    # BatchNorm in train mode normalizes each call by its own batch, so recomputing gives the same logits.
    logits_real, logits_fake = loss_fn.discriminator(x), loss_fn.discriminator(reconstructions.detach())
    torch.testing.assert_close(result.loss, get_discriminator_loss(disc_loss)(logits_real, logits_fake))
    torch.testing.assert_close(result.logits_real, logits_real.mean().detach())
    torch.testing.assert_close(result.logits_fake, logits_fake.mean().detach())
    result.loss.backward()
    assert layer.weight.grad is None  # nothing reaches the autoencoder
    assert loss_fn.discriminator.conv_in.weight.grad.abs().sum() > 0


def test_generator_output_type(toy_decoder):
    layer, x, decode = toy_decoder
    loss_fn = VQGANLoss(disc_weight=0, **NO_PERCEPTUAL)
    assert isinstance(loss_fn.generator_loss(x, decode(), torch.tensor(0.0), 0), VQGANGeneratorLossOutput)


# ------------------------------------------------------------------------------------- construction rules


def test_default_construction_fails_at_start_up_without_weights(offline):
    with pytest.raises(LPIPSWeightsUnavailableError, match="--perceptual_weight 0"):
        VQGANLoss()


def test_zero_weights_build_nothing_and_need_no_weights(offline):
    loss_fn = VQGANLoss(perceptual_weight=0, disc_weight=0, pixel_loss="l2")
    assert loss_fn.perceptual is None and loss_fn.discriminator is None
    assert sum(p.numel() for p in loss_fn.parameters()) == 0


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(pixel_loss="l3"), "pixel_loss"),
        (dict(pixel_weight=-1.0), "pixel_weight"),
        (dict(codebook_weight=-0.5), "codebook_weight"),
        (dict(disc_weight=-0.1), "disc_weight"),
        (dict(disc_start=-1), "disc_start"),
        (dict(disc_start=1.5), "disc_start"),
        (dict(disc_loss="wgan"), "wgan"),
        (dict(gen_loss="wgan"), "wgan"),
        (dict(disc_norm_type="layer"), "norm_type"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        VQGANLoss(**{**NO_PERCEPTUAL, **TINY_DISC, **overrides})


def test_shape_mismatch_raises():
    loss_fn = VQGANLoss(disc_weight=0, **NO_PERCEPTUAL)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn.generator_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4), torch.tensor(0.0), 0)
