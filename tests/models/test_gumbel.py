"""Invariants of `GumbelQuantizer` and of `VQGANModel(quantizer_type="gumbel")`, on tiny tensors.

Shapes: B batch, D code dimension, h/w latent grid, K codebook size.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_vqgan.models.gumbel import GumbelQuantizer
from hf_vqgan.models.quantizer import IndexRemap
from hf_vqgan.models.vqgan import VQGANModel
from testing_utils import small_vqgan_config

K, D = 16, 4


def make_quantizer(**kwargs) -> GumbelQuantizer:
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(**{"codebook_size": K, "code_dim": D, **kwargs})
    with torch.no_grad():  # logits of a useful spread
        quantizer.proj.weight.normal_(std=2.0)
    return quantizer


def test_eval_mode_is_the_deterministic_argmax_of_the_logits():
    quantizer = make_quantizer().eval()
    latents = torch.randn(2, D, 3, 5)
    first, second = quantizer(latents), quantizer(latents)
    logits = F.conv2d(latents, quantizer.proj.weight, quantizer.proj.bias)  # (B, K, h, w)
    assert torch.equal(first.indices, logits.argmax(1)) and torch.equal(first.indices, second.indices)
    assert torch.equal(first.quantized, quantizer.embed.weight[first.indices].permute(0, 3, 1, 2))
    assert torch.equal(quantizer.lookup(first.indices), first.quantized)


def test_kl_term_is_the_kl_to_the_uniform_prior_and_weighted_in_the_loss():
    quantizer = make_quantizer(kl_weight=0.3).eval()
    latents = torch.randn(2, D, 3, 5)
    out = quantizer(latents)
    probs = quantizer.logits(latents).softmax(1).double()  # (B, K, h, w)
    expected = (probs * (probs * K).log()).sum(1).mean()
    torch.testing.assert_close(out.kl_loss.double(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.loss, 0.3 * out.kl_loss)
    assert float(out.codebook_loss) == float(out.commitment_loss) == 0.0
    with torch.no_grad():  # uniform logits: q is the prior, the KL vanishes
        quantizer.proj.weight.zero_()
        quantizer.proj.bias.zero_()
        assert abs(float(quantizer(latents).kl_loss)) < 1e-6


def test_straight_through_training_emits_codes_with_soft_gradients():
    quantizer = make_quantizer(straight_through=True).train()
    latents = torch.randn(2, D, 3, 5, requires_grad=True)
    out = quantizer(latents)
    assert torch.allclose(out.quantized, quantizer.lookup(out.indices), atol=1e-6)  # hard: exactly one code
    (out.quantized.square().sum() + out.loss).backward()
    assert latents.grad.abs().sum() > 0 and quantizer.proj.weight.grad.abs().sum() > 0
    assert quantizer.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_soft_training_mixes_codes_at_the_set_temperature(temperature):
    quantizer = make_quantizer(straight_through=False).train()
    quantizer.temperature = temperature
    latents = torch.randn(2, D, 3, 5)
    torch.manual_seed(3)
    out = quantizer(latents)
    torch.manual_seed(3)
    gumbels = -torch.empty(2, K, 3, 5).exponential_().log()  # the noise F.gumbel_softmax draws
    weights = ((quantizer.logits(latents) + gumbels) / temperature).softmax(1)  # (B, K, h, w)
    expected = torch.einsum("bkhw,kd->bdhw", weights, quantizer.embed.weight)
    torch.testing.assert_close(out.quantized, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.quantized, quantizer.lookup(out.indices), atol=1e-3)  # a mixture, not one code


def test_usage_statistics_count_training_steps_only_and_round_trip():
    quantizer = make_quantizer(usage_window=3)
    quantizer.eval()(torch.randn(2, D, 3, 5))
    assert quantizer.usage_statistics() == {"perplexity": 0.0, "usage": 0.0}
    quantizer.train()(torch.randn(2, D, 3, 5))
    stats = quantizer.usage_statistics()
    assert 0 < stats["usage"] <= 30 / K and stats["perplexity"] > 1
    other = make_quantizer(usage_window=3)
    other.load_statistics_state_dict(quantizer.statistics_state_dict())
    assert other.usage_statistics() == stats


def test_remap_chooses_only_used_rows_and_emits_their_positions():
    remap = IndexRemap(K, 5, "extra")
    remap.used.copy_(torch.tensor([3, 7, 8, 12, 15]))
    quantizer = make_quantizer(remap=remap).eval()
    latents = torch.randn(2, D, 3, 5)
    out = quantizer(latents)
    assert quantizer.codebook_size == 6 and int(out.indices.max()) < 5
    full_logits = F.conv2d(latents, quantizer.proj.weight, quantizer.proj.bias)  # (B, K, h, w)
    assert torch.equal(out.indices, full_logits[:, remap.used].argmax(1))  # the best used row, as its position
    assert torch.equal(out.quantized, quantizer.embed.weight[remap.used[out.indices]].permute(0, 3, 1, 2))
    assert torch.equal(quantizer.lookup(torch.full((1, 1, 1), 5)), quantizer.lookup(torch.zeros(1, 1, 1).long()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(codebook_size=1), "codebook_size"),
        (dict(temperature=0.0), "temperature"),
        (dict(kl_weight=-1.0), "kl_weight"),
        (dict(usage_window=0), "usage_window"),
        (dict(remap=IndexRemap(8, 4)), "remap over 8 rows"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GumbelQuantizer(**{"codebook_size": K, "code_dim": D, **kwargs})


def test_bad_indices_and_latents_are_named():
    quantizer = make_quantizer()
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\), got values in \[0, 16\]"):
        quantizer.lookup(torch.tensor([[[0, 16]]]))
    with pytest.raises(ValueError, match=r"Expected latents of shape \(batch_size, 4, h, w\)"):
        quantizer(torch.randn(1, 3, 2, 2))


# ------------------------------------------------------------------------------------------------------ the model
def test_gumbel_vqgan_reports_the_kl_term_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = VQGANModel(**small_vqgan_config(quantizer_type="gumbel", gumbel_kl_weight=0.1)).train()
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    out = model(images)
    assert out.kl_loss is not None and torch.allclose(out.quantizer_loss, 0.1 * out.kl_loss)
    assert out.kl_loss.requires_grad and out.indices.shape == (2, 8, 8)
    model.eval().save_pretrained(tmp_path)
    loaded = VQGANModel.from_pretrained(tmp_path)
    assert isinstance(loaded.quantizer, GumbelQuantizer) and loaded.quantizer.kl_weight == 0.1
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(images), model.tokenize(images))
        torch.testing.assert_close(loaded.decode_indices(model.tokenize(images)).sample, model(images).sample)


def test_plain_vq_output_has_no_kl_term_and_unknown_quantizer_types_are_named():
    torch.manual_seed(0)
    out = VQGANModel(**small_vqgan_config())(torch.rand(1, 1, 16, 16))
    assert out.kl_loss is None and len(out.to_tuple()) == 7
    with pytest.raises(ValueError, match=r"Unknown `quantizer_type` 'gumble'; expected one of \[.*'gumbel'.*\]"):
        VQGANModel(**small_vqgan_config(quantizer_type="gumble"))


def test_kl_is_a_divergence():
    """KL(q || uniform) >= 0, and it reaches log K for a one-hot q."""
    quantizer = make_quantizer().eval()
    with torch.no_grad():
        quantizer.proj.weight.mul_(1000)
        out = quantizer(torch.randn(2, D, 3, 5))
    assert 0 <= float(out.kl_loss) <= math.log(K) + 1e-4
    assert float(out.kl_loss) > 0.9 * math.log(K)


def test_annealed_temperature_matches_tamings_scheduler_on_the_fixture():
    """The fixture records taming's `LambdaWarmUpCosineScheduler` (warm-up 10 steps 0.2 -> 0.9, cosine to 1e-6 at
    step 100) at a few steps, before, across and after both phases."""
    from safetensors.torch import load_file

    from fixtures import taming_fixtures
    from hf_vqgan.models.gumbel import annealed_temperature

    io = load_file(str(taming_fixtures() / "gumbel_tiny_io.safetensors"))
    ours = [
        annealed_temperature(int(s), 0.2, 0.9, 1e-6, warmup_steps=10, decay_steps=100) for s in io["schedule_steps"]
    ]
    torch.testing.assert_close(
        torch.tensor(ours, dtype=torch.float64), io["schedule_temperatures"], rtol=1e-12, atol=0
    )
