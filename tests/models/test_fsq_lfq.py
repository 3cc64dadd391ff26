"""Invariants of the fixed-grid quantizers (FSQ, LFQ) and of a `VQGANModel` built on them.

Shapes: B batch, D code dimension, h/w latent grid, N = B*h*w vectors, K codebook size.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_vqgan.models.fsq import FiniteScalarQuantizer
from hf_vqgan.models.lfq import LookupFreeQuantizer
from hf_vqgan.models.vqgan import VQGANModel
from testing_utils import grid_vqgan_config, seeded, small_vqgan_config

QUANTIZER_TYPES = ["fsq", "lfq"]
TWO_PROCESS_SCRIPT = Path(__file__).resolve().parent / "scripts" / "grid_quantizer_processes.py"


def make_quantizer(quantizer_type: str, **kwargs):
    if quantizer_type == "fsq":
        return FiniteScalarQuantizer(**{"levels": [8, 5, 4, 3], **kwargs})
    return LookupFreeQuantizer(**{"codebook_size": 32, **kwargs})


def latents_for(quantizer, batch: int = 4, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, quantizer.code_dim, 3, 5, generator=generator) * scale


def pixels_for(batch: int = 2) -> torch.Tensor:
    """Random one-channel 16 px images in [-1, 1], what `grid_vqgan_config()` takes."""
    return torch.rand(batch, 1, 16, 16, generator=seeded()) * 2 - 1


def flat(latents: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (N, D), in the quantizer's row order."""
    return latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])


# ---------------------------------------------------------------------------------------------------- FSQ
@pytest.mark.parametrize(
    "levels, latent, expected_code, expected_index",
    [
        ([3], [0.0], [0.0], 1),
        ([3], [9.0], [1.0], 2),
        ([3], [-9.0], [-1.0], 0),
        # An even level has the half-integer offset: 4 values -1, -0.5, 0, 0.5, and 0 stays exactly 0.
        ([4], [9.0], [0.5], 3),
        ([4], [-9.0], [-1.0], 0),
        ([4], [0.0], [0.0], 2),
        # Mixed radix, the first channel the least significant: digits (7, 0) -> 7; (0, 4) -> 0 + 4 * 8 = 32.
        ([8, 5], [9.0, -9.0], [0.75, -1.0], 7),
        ([8, 5], [-9.0, 9.0], [-1.0, 1.0], 32),
    ],
)
def test_fsq_codes_and_indices_of_known_latents(levels, latent, expected_code, expected_index):
    quantizer = FiniteScalarQuantizer(levels)
    out = quantizer(torch.tensor(latent).reshape(1, -1, 1, 1))
    assert out.indices.flatten().tolist() == [expected_index]
    assert flat(out.quantized).flatten().tolist() == expected_code
    assert flat(quantizer.lookup(out.indices)).flatten().tolist() == expected_code


def test_fsq_grid_has_every_code_once_with_levels_values_per_channel():
    quantizer = FiniteScalarQuantizer([8, 5, 4, 3])
    assert (quantizer.code_dim, quantizer.codebook_size) == (4, 480)
    grid = quantizer.lookup(torch.arange(480).reshape(1, 480, 1))  # (1, D, K, 1)
    codes = flat(grid)  # (K, D)
    assert len({tuple(code.tolist()) for code in codes}) == 480
    for channel, level in enumerate([8, 5, 4, 3]):
        values = codes[:, channel].unique()
        assert len(values) == level and values.min() == -1.0 and values.max() <= 1.0
    # A ramp of latents reaches every value of every channel, so (mixed radix) every index is reachable.
    ramp = torch.linspace(-4, 4, 201).reshape(1, 1, 1, 201).expand(1, 4, 1, 201).contiguous()
    reached = quantizer(ramp).quantized[0, :, 0]  # (D, 201)
    assert [row.unique().numel() for row in reached] == [8, 5, 4, 3]
    out = quantizer(latents_for(quantizer, batch=400))
    assert out.indices.min() >= 0 and out.indices.max() < 480 and out.usage > 0.95


def test_fsq_rounds_the_bounded_latent_to_its_nearest_grid_value():
    quantizer = FiniteScalarQuantizer([8, 5, 4, 3])
    latents = latents_for(quantizer, batch=50, scale=2.0)
    out = quantizer(latents)
    half_width = torch.tensor([4.0, 2.0, 2.0, 1.0])
    bounded = quantizer._bound(flat(latents)) / half_width  # (N, D), on the code scale
    # Within half a grid step of the bounded latent: the nearest grid value.
    assert ((flat(out.quantized) - bounded).abs() <= 0.5 / half_width + 1e-6).all()
    # Rounding is monotonic: a larger latent never gets a smaller code.
    ramp = torch.linspace(-4, 4, 101).reshape(1, 1, 1, 101).expand(1, 4, 1, 101).contiguous()
    codes = quantizer(ramp).quantized[0, :, 0]  # (D, 101)
    assert (codes.diff(dim=1) >= 0).all()


# ---------------------------------------------------------------------------------------------------- LFQ
def test_lfq_index_is_the_binary_number_of_the_signs():
    quantizer = LookupFreeQuantizer(8)
    out = quantizer(torch.tensor([[0.3, -2.0, 5.0], [-0.1, -0.1, -0.1], [1.0, 1.0, 1.0]]).reshape(3, 3, 1, 1))
    assert out.indices.flatten().tolist() == [0b101, 0, 0b111]
    assert flat(out.quantized).tolist() == [[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
    codes = flat(quantizer.lookup(torch.arange(8).reshape(1, 8, 1)))
    assert len({tuple(code.tolist()) for code in codes}) == 8 and set(codes.flatten().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_lfq_entropy_terms_match_the_softmax_over_every_code(temperature):
    quantizer = LookupFreeQuantizer(16, entropy_weight=0.3, commitment_weight=0.7, entropy_temperature=temperature)
    latents = latents_for(quantizer, batch=3)
    out = quantizer(latents)

    z = flat(latents).double()  # (N, D)
    codes = flat(quantizer.lookup(torch.arange(16).reshape(1, 16, 1))).double()  # (K, D)
    probs = torch.softmax(-torch.cdist(z, codes).pow(2) / temperature, dim=-1)  # (N, K), MAGVIT-v2 Eq. 3
    per_sample = -(probs * probs.log()).sum(-1).mean()
    average = probs.mean(0)
    codebook = -(average * average.log()).sum()
    commitment = (z - flat(out.quantized).double()).pow(2).mean()
    torch.testing.assert_close(out.entropy_loss.double(), per_sample - codebook, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.commitment_loss.double(), commitment, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss.double(), 0.7 * commitment + 0.3 * (per_sample - codebook), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_lfq_entropy_penalty_is_lower_for_a_batch_spread_over_the_codes():
    quantizer = LookupFreeQuantizer(4, entropy_temperature=0.1)
    one_code = torch.full((1, 2, 4, 1), 0.8)  # every vector confidently on code 3
    all_codes = torch.tensor([[-0.8, -0.8], [0.8, -0.8], [-0.8, 0.8], [0.8, 0.8]]).t().reshape(1, 2, 4, 1)
    # Confident everywhere: per-sample entropy ~0; spread: codebook entropy ~log 4.
    assert quantizer(all_codes).entropy_loss < -math.log(4) + 1e-3
    assert quantizer(one_code).entropy_loss.abs() < 1e-3


# -------------------------------------------------------------------------------------------------- both
@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
@pytest.mark.parametrize("training", [False, True])
def test_quantized_equals_lookup_of_indices_exactly(quantizer_type, training):
    quantizer = make_quantizer(quantizer_type).train(training)
    out = quantizer(latents_for(quantizer, scale=2.0))
    assert out.indices.shape == (4, 3, 5) and out.indices.dtype == torch.long
    assert out.indices.min() >= 0 and out.indices.max() < quantizer.codebook_size
    assert torch.equal(out.quantized, quantizer.lookup(out.indices))
    assert torch.equal(out.codebook_loss, torch.zeros(()))


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_straight_through_gradient_reaches_the_latents(quantizer_type):
    quantizer = make_quantizer(quantizer_type)
    latents = latents_for(quantizer).requires_grad_()
    quantizer(latents).quantized.sum().backward()
    if quantizer_type == "lfq":  # the identity
        assert torch.equal(latents.grad, torch.ones_like(latents))
    else:  # the derivative of the bound, d/dz tanh(z + shift) * half_l / (L // 2): positive everywhere
        bounded = latents.detach().clone().requires_grad_()
        half_width = torch.tensor([4.0, 2.0, 2.0, 1.0]).reshape(1, 4, 1, 1)
        (quantizer._bound(bounded.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) / half_width).sum().backward()
        assert (latents.grad > 0).all()
        torch.testing.assert_close(latents.grad, bounded.grad)


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_no_learned_parameters_and_an_empty_state_dict(quantizer_type):
    quantizer = make_quantizer(quantizer_type)
    assert list(quantizer.parameters()) == [] and quantizer.state_dict() == {}


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_usage_statistics_count_training_batches_only_and_round_trip(quantizer_type):
    quantizer = make_quantizer(quantizer_type, usage_window=3)
    quantizer.eval()(latents_for(quantizer))
    assert quantizer.usage_statistics() == {"perplexity": 0.0, "usage": 0.0}
    quantizer.train()
    latents = latents_for(quantizer, batch=20, scale=2.0)
    out = quantizer(latents)
    stats = quantizer.usage_statistics()
    assert stats["usage"] == pytest.approx(float(out.usage)) and stats["perplexity"] == pytest.approx(
        float(out.perplexity)
    )
    counts = torch.bincount(out.indices.flatten(), minlength=quantizer.codebook_size).float()
    assert torch.equal(quantizer.usage_history[0], counts)
    # A non-finite batch writes nothing (the training loop skips that step).
    saved = quantizer.statistics_state_dict()
    broken = latents.clone()
    broken[0, 0, 0, 0] = float("nan")
    quantizer(broken)
    assert all(torch.equal(value, quantizer.statistics_state_dict()[name]) for name, value in saved.items())
    fresh = make_quantizer(quantizer_type, usage_window=3)
    fresh.load_statistics_state_dict(saved)
    assert fresh.usage_statistics() == stats
    with pytest.raises(ValueError, match=r"`usage_history` has shape \(3, \d+\), expected \(4, \d+\)"):
        make_quantizer(quantizer_type, usage_window=4).load_statistics_state_dict(saved)


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_bf16_autocast_quantizes_in_float32(quantizer_type):
    quantizer = make_quantizer(quantizer_type).train()
    latents = latents_for(quantizer, scale=2.0)
    reference = quantizer(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(latents)
        bf16 = quantizer(latents.bfloat16())
    assert torch.equal(out.indices, reference.indices) and out.quantized.dtype == torch.float32
    assert torch.equal(out.loss, reference.loss)
    assert bf16.quantized.dtype == torch.bfloat16
    assert torch.equal(bf16.quantized, quantizer.lookup(bf16.indices).bfloat16())


def test_quantizers_run_in_two_processes_as_one_holding_the_whole_batch():
    """The usage counts, perplexity, losses (LFQ's codebook entropy over every process) and gradients of two gloo
    processes with batches of different sizes agree with one process quantizing the concatenated batch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, str(TWO_PROCESS_SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["OK", "fsq", "OK", "lfq"]


# --------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_model_tokens_decode_to_the_forward_reconstruction(quantizer_type):
    torch.manual_seed(0)
    model = VQGANModel(**grid_vqgan_config(quantizer_type)).eval()
    pixels = pixels_for()
    with torch.no_grad():
        out = model(pixels)
        indices = model.tokenize(pixels)
        decoded = model.decode_indices(indices).sample
    assert indices.shape == (2, 8, 8) and indices.min() >= 0 and indices.max() < 16
    assert torch.equal(indices, out.indices) and torch.equal(decoded, out.sample)


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_model_gradients_reach_the_encoder_through_the_quantizer(quantizer_type):
    torch.manual_seed(0)
    model = VQGANModel(**grid_vqgan_config(quantizer_type)).train()
    out = model(pixels_for())
    out.sample.abs().mean().backward()  # the reconstruction alone: only the straight-through path reaches back
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0 and model.quant_conv.weight.grad.abs().sum() > 0
    assert (out.entropy_loss is None) == (quantizer_type == "fsq")


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_model_trains_under_bf16_autocast(quantizer_type):
    torch.manual_seed(0)
    model = VQGANModel(**grid_vqgan_config(quantizer_type)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels_for())
    (out.sample.float().abs().mean() + out.quantizer_loss).backward()
    assert out.indices.min() >= 0 and out.indices.max() < 16 and torch.isfinite(out.quantizer_loss)
    assert out.quantizer_loss.dtype == torch.float32 and model.encoder.conv_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_model_save_and_load_keep_the_quantizer(tmp_path, quantizer_type):
    torch.manual_seed(0)
    model = VQGANModel(**grid_vqgan_config(quantizer_type)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    expected = {"fsq": dict(fsq_levels=[4, 4], code_dim=2), "lfq": dict(fsq_levels=None, code_dim=4)}[quantizer_type]
    assert config["quantizer_type"] == quantizer_type and config["codebook_size"] == 16
    assert {key: config[key] for key in expected} == expected
    assert not any(key.startswith("quantizer.") for key in model.state_dict())
    loaded = VQGANModel.from_pretrained(tmp_path).eval()
    pixels = pixels_for()
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(pixels), model.tokenize(pixels))
        assert torch.equal(loaded(pixels).sample, model(pixels).sample)


def test_vq_config_still_defaults_to_1024_codes_of_256_dimensions():
    config = VQGANModel(**{**small_vqgan_config(), "code_dim": None, "codebook_size": None}).config
    assert (config.quantizer_type, config.code_dim, config.codebook_size) == ("vq", 256, 1024)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(quantizer_type="rq"), r"Unknown `quantizer_type` 'rq'; expected one of \['vq', 'fsq', 'lfq'\]"),
        (dict(quantizer_type="fsq"), r"quantizer_type='fsq' needs `fsq_levels`"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 2]), r"`fsq_levels` must be a non-empty list of ints >= 3"),
        (dict(quantizer_type="fsq", fsq_levels=[]), r"`fsq_levels` must be a non-empty list"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 5], code_dim=4),
         r"`code_dim`=4 disagrees with `fsq_levels`=\[8, 5\], which give 2 dimensions"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 5], codebook_size=64),
         r"`codebook_size`=64 disagrees with `fsq_levels`=\[8, 5\], whose product is 40"),
        (dict(quantizer_type="vq", fsq_levels=[8, 5]), r"`fsq_levels`=\[8, 5\] applies to quantizer_type='fsq' only"),
        (dict(quantizer_type="lfq", codebook_size=1000), r"LFQ needs `codebook_size` to be a power of two >= 2"),
        (dict(quantizer_type="lfq", codebook_size=64, code_dim=8),
         r"`code_dim`=8 disagrees with LFQ's `codebook_size`=64 = 2\^6, which gives 6 dimensions"),
        (dict(quantizer_type="lfq", codebook_size=64, lfq_entropy_weight=-1.0),
         r"LFQ's `entropy_weight` must be a number >= 0, got -1.0"),
        (dict(quantizer_type="lfq", codebook_size=64, lfq_entropy_temperature=0.0),
         r"LFQ's `entropy_temperature` must be a number > 0, got 0.0"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 5], use_ema=True, dead_code_steps=5),
         r"\['dead_code_steps', 'use_ema'\] configure a learned VQ codebook, which quantizer_type='fsq' does not"),
        (dict(quantizer_type="lfq", codebook_size=64, l2_normalize_codes=True),
         r"\['l2_normalize_codes'\] configure a learned VQ codebook, which quantizer_type='lfq'"),
    ],
)  # fmt: skip
def test_bad_quantizer_options_are_refused(overrides, message):
    config = {key: value for key, value in small_vqgan_config().items() if key not in ("code_dim", "codebook_size")}
    with pytest.raises(ValueError, match=message):
        VQGANModel(**config, **overrides)


@pytest.mark.parametrize("quantizer_type", QUANTIZER_TYPES)
def test_lookup_refuses_bad_indices(quantizer_type):
    quantizer = make_quantizer(quantizer_type)
    K = quantizer.codebook_size
    with pytest.raises(ValueError, match=rf"`indices` must lie in \[0, {K}\), got values in \[0, {K}\]"):
        quantizer.lookup(torch.tensor([[[0, K]]]))
    with pytest.raises(TypeError, match="must be an integer tensor"):
        quantizer.lookup(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(batch_size, h, w\), got \(4,\)"):
        quantizer.lookup(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"Expected latents of shape \(batch_size, {quantizer.code_dim}, h, w\)"):
        quantizer(torch.zeros(1, quantizer.code_dim + 1, 2, 2))
