"""`VQGANModel`: shapes, the verbs' contracts, save/load, gradients, input validation, taming's layer layout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_vqgan.models.vqgan import AttentionBlock, ResnetBlock, VQGANModel
from testing_utils import error_vqgan_config, tiny_vqgan

SHAPE_CONFIGS = {
    # f=4, one-channel images, attention at the middle level only.
    "f4-gray": dict(
        base_channels=16,
        channel_multipliers=(1, 1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        sample_size=16,
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        code_dim=8,
        codebook_size=16,
        norm_num_groups=8,
    ),
    # f=8, gray in / RGB out, no attention outside the middle blocks, codes as wide as the latents.
    "f8-gray-to-rgb": dict(
        base_channels=8,
        channel_multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        attention_resolutions=(),
        sample_size=32,
        in_channels=1,
        out_channels=3,
        latent_channels=16,
        code_dim=16,
        codebook_size=32,
        norm_num_groups=4,
    ),
    # f=1 (a single level, no resampling), factorised 2-D codes, four output channels.
    "f1-factorised": dict(
        base_channels=8,
        channel_multipliers=(2,),
        num_res_blocks=3,
        attention_resolutions=(16,),
        sample_size=16,
        in_channels=3,
        out_channels=4,
        latent_channels=4,
        code_dim=2,
        codebook_size=8,
        norm_num_groups=4,
    ),
}


def images(batch_size: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, channels, height, width, generator=generator) * 2 - 1  # (B, C, H, W) in [-1, 1]


def public_config(model: VQGANModel) -> dict:
    """The config as saved (tuples become lists), without bookkeeping keys such as `_name_or_path`."""
    return {k: v for k, v in json.loads(model.to_json_string()).items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", ["tiny", *SHAPE_CONFIGS])
def test_shapes_of_every_verb(name, tiny_vqgan_config):
    config = tiny_vqgan_config if name == "tiny" else SHAPE_CONFIGS[name]
    model = tiny_vqgan(**config)
    f = 2 ** (len(config["channel_multipliers"]) - 1)
    H, W = config["sample_size"], config["sample_size"] // 2  # not square: the model is convolutional
    h, w = H // f, W // f
    x = images(2, config.get("in_channels", 3), H, W)

    assert model.downsample_factor == f and model.latent_shape(H, W) == (h, w)
    latents = model.encode(x).latents
    assert latents.shape == (2, config["code_dim"], h, w)
    quantized = model.quantize(latents)
    assert quantized.quantized.shape == latents.shape and quantized.indices.shape == (2, h, w)
    indices = model.tokenize(x)
    assert indices.shape == (2, h, w) and indices.dtype == torch.long
    assert 0 <= indices.min() and indices.max() < config["codebook_size"]
    out_channels = config.get("out_channels", 3)
    assert model.decode(quantized.quantized).sample.shape == (2, out_channels, H, W)
    assert model.decode_indices(indices).sample.shape == (2, out_channels, H, W)
    out = model(x)
    assert out.sample.shape == (2, out_channels, H, W) and out.indices.shape == (2, h, w)
    assert out.sample.is_contiguous() and latents.is_contiguous()  # plain NCHW in, plain NCHW out
    for scalar in (out.quantizer_loss, out.codebook_loss, out.commitment_loss, out.perplexity, out.usage):
        assert scalar.shape == ()
    assert model.last_layer_weight is model.decoder.conv_out.weight


def test_attention_placement_follows_taming():
    # 32 px, multipliers (1, 2, 2): levels at 32, 16 and 8 px; attention at 16 means level 1, in both halves.
    model = VQGANModel(
        base_channels=16,
        channel_multipliers=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        sample_size=32,
        latent_channels=8,
        code_dim=8,
        codebook_size=16,
        norm_num_groups=8,
    )
    assert [len(level.attentions) for level in model.encoder.levels] == [0, 2, 0]
    assert [len(level.resnets) for level in model.encoder.levels] == [2, 2, 2]
    assert [level.resample is None for level in model.encoder.levels] == [False, False, True]
    # The decoder has one more ResNet block per level, each followed by attention where the level has it.
    assert [len(level.attentions) for level in model.decoder.levels] == [0, 3, 0]
    assert [len(level.resnets) for level in model.decoder.levels] == [3, 3, 3]
    assert [level.resample is None for level in model.decoder.levels] == [True, False, False]
    assert isinstance(model.encoder.mid.attention, AttentionBlock)
    assert isinstance(model.decoder.mid.attention, AttentionBlock)
    # Level widths: base x multiplier, in both halves.
    assert [level.resnets[-1].conv2.out_channels for level in model.encoder.levels] == [16, 32, 32]
    assert [level.resnets[-1].conv2.out_channels for level in model.decoder.levels] == [16, 32, 32]


def test_attention_is_single_head_softmax_over_positions():
    # taming's AttnBlock: weights softmax(q^T k / sqrt(C)) over all H*W positions, output v weighted by them.
    torch.manual_seed(0)
    block = AttentionBlock(16, num_groups=4)
    x = torch.randn(2, 16, 3, 5)
    h = block.norm(x)
    q, k, v = (proj(h).flatten(2) for proj in (block.to_q, block.to_k, block.to_v))  # (B, C, H*W)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(16), dim=-1)  # (B, query, key)
    attended = (v @ weights.transpose(1, 2)).reshape(2, 16, 3, 5)  # (B, C, H, W)
    torch.testing.assert_close(block(x), x + block.to_out(attended), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_channels", [16, 8])  # identity shortcut, 1x1-conv shortcut
def test_resnet_block_in_place_ops_match_the_plain_formula(in_channels):
    # The block writes its activations in place to save memory traffic; values and gradients must not change.
    torch.manual_seed(0)
    block = ResnetBlock(in_channels, 16, num_groups=4, dropout=0.0)
    x = torch.randn(2, in_channels, 6, 6, requires_grad=True)
    y = block(x)
    plain = block.shortcut(x) + block.conv2(F.silu(block.norm2(block.conv1(F.silu(block.norm1(x))))))
    assert torch.equal(y, plain)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *block.parameters()], upstream)
    plain_grads = torch.autograd.grad(plain, [x, *block.parameters()], upstream)
    assert all(torch.equal(a, b) for a, b in zip(grads, plain_grads, strict=True))


# ---------------------------------------------------------------------------------------- verbs agree
@pytest.mark.parametrize("l2_normalize_codes", [False, True])
def test_decode_indices_of_tokens_equals_decode_of_quantized(tiny_vqgan_config, l2_normalize_codes):
    model = tiny_vqgan(**tiny_vqgan_config, l2_normalize_codes=l2_normalize_codes)
    x = images(2, 3, 32, 32)
    with torch.no_grad():
        indices = model.tokenize(x)
        quantized = model.quantize(model.encode(x).latents)
        assert torch.equal(indices, quantized.indices)
        from_indices = model.decode_indices(indices).sample
        from_quantized = model.decode(quantized.quantized).sample
        # Equal up to the rounding of the straight-through sum z + (e - z).
        torch.testing.assert_close(from_indices, from_quantized, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x).sample, from_quantized, rtol=0, atol=0)


def test_return_dict_false_gives_tuples(tiny_vqgan_config):
    model = tiny_vqgan(**tiny_vqgan_config)
    x = images(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        as_tuple = model(x, return_dict=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 7
        for a, b in zip(as_tuple, out.to_tuple(), strict=True):
            assert torch.equal(a, b)
        (latents,) = model.encode(x, return_dict=False)
        assert torch.equal(latents, model.encode(x).latents)
        quantized = model.quantize(latents, return_dict=False)
        assert isinstance(quantized, tuple) and len(quantized) == 7 and torch.equal(quantized[1], out.indices)
        (sample,) = model.decode(quantized[0], return_dict=False)
        assert torch.equal(sample, out.sample)
        (sample,) = model.decode_indices(out.indices, return_dict=False)
        assert sample.shape == out.sample.shape


def test_bfloat16_model_runs_end_to_end(tiny_vqgan_config):
    model = tiny_vqgan(**tiny_vqgan_config).to(torch.bfloat16)
    x = images(1, 3, 32, 32).to(torch.bfloat16)
    with torch.no_grad():
        out = model(x)
        assert out.sample.dtype == torch.bfloat16 and out.sample.shape == x.shape
        assert model.decode_indices(out.indices).sample.dtype == torch.bfloat16


# -------------------------------------------------------------------------------------------- save/load
@pytest.mark.parametrize(
    "options",
    [{}, dict(use_ema=True, dead_code_steps=5, l2_normalize_codes=True, legacy_beta=True, commitment_beta=0.5)],
    ids=["default", "ema-l2-legacy"],
)
def test_save_and_load_give_identical_outputs(tmp_path, tiny_vqgan_config, options):
    model = tiny_vqgan(**tiny_vqgan_config, **options)
    x = images(2, 3, 32, 32)
    if options.get("use_ema"):  # move the EMA buffers off their initial values, so that loading them matters
        model.train()(x)
        model.eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]

    loaded = VQGANModel.from_pretrained(tmp_path).eval()
    assert public_config(loaded) == public_config(model)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[key], restored[key]) for key in saved)
    with torch.no_grad():
        expected, actual = model(x), loaded(x)
        for a, b in zip(expected.to_tuple(), actual.to_tuple(), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(model.encode(x).latents, loaded.encode(x).latents)
        assert torch.equal(
            model.decode_indices(expected.indices).sample, loaded.decode_indices(expected.indices).sample
        )


# ------------------------------------------------------------------------------------------- gradients
def test_reconstruction_gradients_reach_the_encoder_through_the_quantizer(tiny_vqgan_config):
    model = tiny_vqgan(**tiny_vqgan_config).train()
    x = images(2, 3, 32, 32)
    out = model(x)
    F.mse_loss(out.sample, x).backward(retain_graph=True)
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quant_conv.weight.grad.abs().sum() > 0
    assert model.last_layer_weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.weight.grad is None  # straight through: the codebook learns from its own loss
    out.quantizer_loss.backward()
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- errors
BAD_PIXELS = [
    (torch.zeros(3, 32, 32), ValueError, r"4-D tensor .*got shape \(3, 32, 32\)"),
    (torch.zeros(2, 1, 32, 32), ValueError, r"has 1 channels, but this model expects 3"),
    (torch.zeros(2, 3, 33, 32), ValueError, r"multiples of the downsampling factor 2, got 33x32"),
    (torch.zeros(2, 3, 32, 31), ValueError, r"multiples of the downsampling factor 2, got 32x31"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, r"floating-point .*got dtype torch\.uint8"),
    (np.zeros((2, 3, 32, 32), dtype=np.float32), TypeError, r"must be a torch\.Tensor, got ndarray"),
]


@pytest.mark.parametrize("verb", ["encode", "tokenize", "forward"])
@pytest.mark.parametrize("pixels, error, match", BAD_PIXELS)
def test_bad_pixels_raise(tiny_vqgan_config, verb, pixels, error, match):
    model = tiny_vqgan(**tiny_vqgan_config)
    with pytest.raises(error, match=match):
        getattr(model, verb)(pixels)


@pytest.mark.parametrize(
    "indices, error, match",
    [
        (torch.zeros(2, 16, dtype=torch.long), ValueError, r"shape \(batch_size, h, w\), got \(2, 16\)"),
        (torch.full((1, 4, 4), 64), ValueError, r"lie in \[0, 64\), got values in \[64, 64\]"),
        (torch.tensor([[[3, -1]]]), ValueError, r"lie in \[0, 64\), got values in \[-1, 3\]"),
        (torch.zeros(1, 4, 4), TypeError, r"integer tensor, got dtype torch\.float32"),
        ([[[0]]], TypeError, r"must be a torch\.Tensor, got list"),
    ],
)
def test_bad_indices_raise(tiny_vqgan_config, indices, error, match):
    model = tiny_vqgan(**tiny_vqgan_config)
    with pytest.raises(error, match=match):
        model.decode_indices(indices)


def test_quantized_of_the_wrong_shape_raises(tiny_vqgan_config):
    model = tiny_vqgan(**tiny_vqgan_config)
    with pytest.raises(ValueError, match=r"`quantized` must have shape \(batch_size, 8, h, w\), got \(1, 16, 4, 4\)"):
        model.decode(torch.zeros(1, 16, 4, 4))
    with pytest.raises(ValueError, match=r"latents of shape \(batch_size, 8, h, w\), got \(1, 4, 4, 4\)"):
        model.quantize(torch.zeros(1, 4, 4, 4))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(base_channels=36), r"divisible by `norm_num_groups`=8, .*gives width 36"),
        (dict(norm_num_groups=0), r"`norm_num_groups` must be a positive int, got 0"),
        (dict(channel_multipliers=()), r"`channel_multipliers` must be a non-empty list .*got \(\)"),
        (dict(channel_multipliers="12"), r"`channel_multipliers` must be a non-empty list .*got '12'"),
        (dict(channel_multipliers=(1, 0)), r"`channel_multipliers` must hold positive ints, got \(1, 0\)"),
        (dict(channel_multipliers=(1, 2.5)), r"`channel_multipliers` must hold positive ints, got \(1, 2\.5\)"),
        (dict(sample_size=33), r"`sample_size`=33 must be divisible by the downsampling factor 2"),
        (dict(attention_resolutions=16), r"`attention_resolutions` must be a list of positive ints, got 16"),
        (dict(dropout=1.0), r"`dropout` must be in \[0, 1\), got 1\.0"),
        (dict(in_channels=0), r"`in_channels` must be a positive int, got 0"),
        (dict(num_res_blocks=0), r"`num_res_blocks` must be a positive int, got 0"),
        (dict(code_dim=True), r"`code_dim` must be a positive int, got True"),
        (dict(codebook_size=1), r"`codebook_size` must be an int >= 2, got 1"),
    ],
)
def test_bad_config_raises(tiny_vqgan_config, overrides, match):
    with pytest.raises(ValueError, match=match):
        VQGANModel(**{**tiny_vqgan_config, **overrides})


# ------------------------------------------------------------------------------------------------ bad inputs
# One row per bad input: (id, call, exception type, regex the message must match). Each regex names the bad value
# (or the option) and the expectation, so an error raised for another reason, or one that says less, fails.
@pytest.fixture(scope="module")
def error_vqgan() -> VQGANModel:
    return tiny_vqgan(**error_vqgan_config())


# fmt: off
ERROR_CASES = [
    ("config in_channels=0", lambda vqgan: VQGANModel(**error_vqgan_config(in_channels=0)), ValueError, r"`in_channels` must be a positive int, got 0"),
    ("config in_channels=True", lambda vqgan: VQGANModel(**error_vqgan_config(in_channels=True)), ValueError, r"`in_channels` must be a positive int, got True"),
    ("config in_channels=3.0", lambda vqgan: VQGANModel(**error_vqgan_config(in_channels=3.0)), ValueError, r"`in_channels` must be a positive int, got 3\.0"),
    ("config empty multipliers", lambda vqgan: VQGANModel(**error_vqgan_config(channel_multipliers=())), ValueError, r"`channel_multipliers` must be a non-empty list of positive ints, got \(\)"),
    ("config zero multiplier", lambda vqgan: VQGANModel(**error_vqgan_config(channel_multipliers=(1, 0))), ValueError, r"`channel_multipliers` must hold positive ints, got \(1, 0\)"),
    ("config attention as str", lambda vqgan: VQGANModel(**error_vqgan_config(attention_resolutions="16")), ValueError, r"`attention_resolutions` must be a list of positive ints, got '16'"),
    ("config dropout=1.5", lambda vqgan: VQGANModel(**error_vqgan_config(dropout=1.5)), ValueError, r"`dropout` must be in \[0, 1\), got 1\.5"),
    ("config groups do not divide", lambda vqgan: VQGANModel(**error_vqgan_config(norm_num_groups=7)), ValueError, r"divisible by `norm_num_groups`=7.*width 32"),
    ("config sample_size indivisible", lambda vqgan: VQGANModel(**error_vqgan_config(sample_size=9)), ValueError, r"`sample_size`=9 must be divisible by the downsampling factor 2"),
    ("config codebook_size=1", lambda vqgan: VQGANModel(**error_vqgan_config(codebook_size=1)), ValueError, r"`codebook_size` must be an int >= 2, got 1"),
    ("config code_dim=0", lambda vqgan: VQGANModel(**error_vqgan_config(code_dim=0)), ValueError, r"`code_dim` must be a positive int, got 0"),
    ("config commitment_beta<0", lambda vqgan: VQGANModel(**error_vqgan_config(commitment_beta=-1.0)), ValueError, r"`beta` must be >= 0, got -1\.0"),
    ("config ema_decay=1", lambda vqgan: VQGANModel(**error_vqgan_config(use_ema=True, ema_decay=1.0)), ValueError, r"`ema_decay` must be in \(0, 1\), got 1\.0"),
    ("config dead_code_steps<0", lambda vqgan: VQGANModel(**error_vqgan_config(dead_code_steps=-1)), ValueError, r"`dead_code_steps` must be >= 0 .*got -1"),
    ("encode a list", lambda vqgan: vqgan.encode([[0.0]]), TypeError, r"`pixel_values` must be a torch\.Tensor, got list"),
    ("encode a numpy array", lambda vqgan: vqgan.encode(np.zeros((1, 3, 8, 8), np.float32)), TypeError, r"`pixel_values` must be a torch\.Tensor, got ndarray"),
    ("encode 3-D", lambda vqgan: vqgan.encode(torch.zeros(3, 8, 8)), ValueError, r"`pixel_values` must be a 4-D tensor \(batch_size, channels, height, width\), got shape \(3, 8, 8\)"),
    ("encode wrong channels", lambda vqgan: vqgan.encode(torch.zeros(1, 1, 8, 8)), ValueError, r"`pixel_values` has 1 channels, but this model expects 3"),
    ("encode uint8", lambda vqgan: vqgan.encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), TypeError, r"floating-point tensor in \[-1, 1\], got dtype torch\.uint8"),
    ("encode indivisible size", lambda vqgan: vqgan.encode(torch.zeros(1, 3, 9, 8)), ValueError, r"multiples of the downsampling factor 2, got 9x8"),
    ("encode zero size", lambda vqgan: vqgan.encode(torch.zeros(1, 3, 0, 8)), ValueError, r"positive multiples of the downsampling factor 2, got 0x8"),
    ("encode empty batch", lambda vqgan: vqgan.encode(torch.zeros(0, 3, 8, 8)), ValueError, r"`pixel_values` is an empty batch \(shape \(0, 3, 8, 8\)\)"),
    # A device mismatch is reported by torch itself, naming both devices.
    ("encode other device", lambda vqgan: vqgan.encode(torch.zeros(1, 3, 8, 8).to("meta")), RuntimeError, r"device cpu is not on the expected device meta"),
    ("forward 3-D", lambda vqgan: vqgan(torch.zeros(3, 8, 8)), ValueError, r"got shape \(3, 8, 8\)"),
    ("tokenize int64", lambda vqgan: vqgan.tokenize(torch.zeros(1, 3, 8, 8, dtype=torch.int64)), TypeError, r"got dtype torch\.int64"),
    ("quantize a list", lambda vqgan: vqgan.quantize([0.0]), TypeError, r"`latents` must be a torch\.Tensor, got list"),
    ("quantize wrong code_dim", lambda vqgan: vqgan.quantize(torch.zeros(1, 3, 4, 4)), ValueError, r"Expected latents of shape \(batch_size, 8, h, w\), got \(1, 3, 4, 4\)"),
    ("decode a list", lambda vqgan: vqgan.decode([0.0]), ValueError, r"`quantized` must have shape \(batch_size, 8, h, w\), got list"),
    ("decode wrong channels", lambda vqgan: vqgan.decode(torch.zeros(1, 3, 4, 4)), ValueError, r"`quantized` must have shape \(batch_size, 8, h, w\), got \(1, 3, 4, 4\)"),
    ("decode_indices float", lambda vqgan: vqgan.decode_indices(torch.zeros(1, 4, 4)), TypeError, r"`indices` must be an integer tensor, got dtype torch\.float32"),
    ("decode_indices bool", lambda vqgan: vqgan.decode_indices(torch.zeros(1, 4, 4, dtype=torch.bool)), TypeError, r"got dtype torch\.bool"),
    ("decode_indices 2-D", lambda vqgan: vqgan.decode_indices(torch.zeros(1, 16, dtype=torch.long)), ValueError, r"`indices` must have shape \(batch_size, h, w\), got \(1, 16\)"),
    ("decode_indices too large", lambda vqgan: vqgan.decode_indices(torch.full((1, 4, 4), 64)), ValueError, r"`indices` must lie in \[0, 64\), got values in \[64, 64\]"),
    ("decode_indices negative", lambda vqgan: vqgan.decode_indices(torch.full((1, 4, 4), -1)), ValueError, r"must lie in \[0, 64\), got values in \[-1, -1\]"),
    ("decode_indices a list", lambda vqgan: vqgan.decode_indices([[[0]]]), TypeError, r"`indices` must be a torch\.Tensor, got list"),
    ("latent_shape indivisible", lambda vqgan: vqgan.latent_shape(9, 8), ValueError, r"height and width must be positive multiples of the downsampling factor 2, got 9x8"),
    ("forward empty batch", lambda vqgan: vqgan(torch.zeros(0, 3, 8, 8)), ValueError, r"`pixel_values` is an empty batch"),
]
# fmt: on


@pytest.mark.parametrize("call, error, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_inputs_get_errors_that_name_them(error_vqgan, call, error, message):
    with pytest.raises(error, match=message):
        call(error_vqgan)
