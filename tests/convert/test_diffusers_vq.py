"""hf_vqgan <-> diffusers VQModel: same latents, indices and images both ways, exact round trips, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import VQModel

from fixtures import taming_fixtures
from hf_vqgan.convert.diffusers_vq import (
    convert_diffusers_folder,
    diffusers_key,
    from_diffusers_vqmodel,
    to_diffusers_vqmodel,
)
from hf_vqgan.models.vqgan import VQGANModel
from testing_utils import vqgan_config

ATOL = 1e-5
TINY = vqgan_config(legacy_beta=True)  # beta placed as in diffusers' VectorQuantizer(legacy=True)


def _randomised(model, seed: int = 0):
    torch.manual_seed(seed)
    with torch.no_grad():  # move every tensor away from its init so a wrong mapping shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _images(channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _assert_same_outputs(ours: VQGANModel, theirs: VQModel, images: torch.Tensor) -> None:
    with torch.no_grad():
        latents = ours.encode(images).latents
        assert torch.allclose(theirs.encode(images).latents, latents, atol=ATOL)
        q = ours.quantize(latents)
        _, _, (_, _, their_indices) = theirs.quantize(latents)
        assert torch.equal(their_indices.reshape(q.indices.shape), q.indices)
        # diffusers' decode() quantizes its input first; codebook entries quantize to themselves.
        assert torch.allclose(theirs.decode(q.quantized).sample, ours.decode(q.quantized).sample, atol=ATOL)
        assert torch.allclose(theirs(images).sample, ours(images).sample, atol=ATOL)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # attention at the coarse level only
        {"attention_resolutions": (32, 16)},  # at every level
        {"attention_resolutions": ()},  # mid block only
        {"channel_multipliers": (1, 1, 2), "num_res_blocks": 1, "code_dim": 16},  # code_dim == latent_channels
        {"in_channels": 1, "out_channels": 4},
    ],
)
def test_to_diffusers_gives_the_same_outputs(overrides):
    ours = _randomised(VQGANModel(**{**TINY, **overrides}))
    theirs = to_diffusers_vqmodel(ours)
    _assert_same_outputs(ours, theirs, _images(ours.config.in_channels))
    attention = [t.startswith("Attn") for t in theirs.config.down_block_types]
    assert attention == [r in ours.config.attention_resolutions for r in (32, 16, 8)[: len(attention)]]
    assert theirs.config.up_block_types == tuple(
        "AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attention)
    )


def test_decode_from_indices_with_lookup_from_codebook():
    ours = _randomised(VQGANModel(**TINY))
    theirs = to_diffusers_vqmodel(ours, lookup_from_codebook=True, force_upcast=True)
    assert theirs.config.lookup_from_codebook and theirs.config.force_upcast and theirs.config.scaling_factor == 1.0
    with torch.no_grad():
        indices = ours.tokenize(_images())  # (B, h, w)
        B, h, w = indices.shape
        decoded = theirs.decode(indices.flatten(), force_not_quantize=True, shape=(B, h, w, 8)).sample
        assert torch.allclose(decoded, ours.decode_indices(indices).sample, atol=ATOL)


def test_round_trips_are_exact():
    ours = _randomised(VQGANModel(**TINY))
    back = from_diffusers_vqmodel(to_diffusers_vqmodel(ours))
    assert {k: v for k, v in back.config.items() if not k.startswith("_")} == {
        k: v for k, v in ours.config.items() if not k.startswith("_")
    }
    state, back_state = ours.state_dict(), back.state_dict()
    assert state.keys() == back_state.keys() and all(torch.equal(state[k], back_state[k]) for k in state)

    # The other way, from a VQModel built by diffusers itself.
    theirs = _randomised(
        VQModel(
            block_out_channels=(32, 64, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
            up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
            layers_per_block=1,
            latent_channels=4,
            vq_embed_dim=3,
            num_vq_embeddings=32,
            norm_num_groups=8,
            sample_size=32,
        )
    )
    ours = from_diffusers_vqmodel(theirs)
    assert ours.config.attention_resolutions == (8,) and ours.config.channel_multipliers == (1, 2, 2)
    _assert_same_outputs(ours, theirs, _images())
    again = to_diffusers_vqmodel(ours, scaling_factor=theirs.config.scaling_factor).state_dict()
    original = theirs.state_dict()
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in original)


def test_decoder_levels_are_numbered_the_other_way():
    assert diffusers_key("decoder.levels.0.resnets.2.conv1.weight", 3) == "decoder.up_blocks.2.resnets.2.conv1.weight"
    assert diffusers_key("decoder.levels.2.resample.conv.bias", 3) == "decoder.up_blocks.0.upsamplers.0.conv.bias"
    assert diffusers_key("encoder.mid.attention.norm.weight", 3) == "encoder.mid_block.attentions.0.group_norm.weight"
    assert diffusers_key("encoder.levels.1.attentions.0.to_out.bias", 3) == (
        "encoder.down_blocks.1.attentions.0.to_out.0.bias"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"channel_multipliers": (2, 2)}, r"channel_multipliers\[0\]=2"),
        ({"l2_normalize_codes": True}, "l2_normalize_codes"),
        ({"dropout": 0.1}, "dropout"),
    ],
)
def test_what_diffusers_cannot_express_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        to_diffusers_vqmodel(VQGANModel(**{**TINY, **overrides}))


@pytest.mark.parametrize(
    "quantizer, message",
    [
        (
            dict(quantizer_type="fsq", fsq_levels=[8, 5, 5]),
            r"cannot represent quantizer_type='fsq'; keep this tokenizer",
        ),
        (dict(quantizer_type="lfq", codebook_size=256), r"cannot represent quantizer_type='lfq'; keep"),
    ],
)
def test_fixed_grid_quantizers_are_refused(tmp_path: Path, quantizer, message):
    model = VQGANModel(**vqgan_config(**{"code_dim": None, "codebook_size": None, **quantizer}))
    with pytest.raises(ValueError, match=message):
        to_diffusers_vqmodel(model)
    model.save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match=message):
        convert_diffusers_folder(tmp_path / "ours", tmp_path / "theirs", to="vqmodel")
    assert not (tmp_path / "theirs").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm_type": "spatial"}, "norm_type"),
        ({"act_fn": "gelu"}, "act_fn"),
        ({"mid_block_add_attention": False}, "mid_block_add_attention"),
        (
            {"up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D")},
            "same levels in encoder and decoder",
        ),
        ({"block_out_channels": (32, 48)}, "not multiples"),
    ],
)
def test_diffusers_models_without_an_equivalent_are_refused(kwargs, message):
    config = dict(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
    )
    config.update(kwargs)
    with pytest.raises(ValueError, match=message):
        from_diffusers_vqmodel(VQModel(**config))


def test_folders_convert_both_ways(tmp_path: Path):
    ours = _randomised(VQGANModel(**TINY))
    ours.save_pretrained(tmp_path / "ours")
    convert_diffusers_folder(tmp_path / "ours", tmp_path / "theirs", to="vqmodel")
    theirs = VQModel.from_pretrained(tmp_path / "theirs")
    _assert_same_outputs(ours, theirs, _images())
    convert_diffusers_folder(tmp_path / "theirs", tmp_path / "back", to="hf_vqgan")
    back = VQGANModel.from_pretrained(tmp_path / "back")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="'vqmodel' or 'hf_vqgan'"):
        convert_diffusers_folder(tmp_path / "ours", tmp_path / "x", to="diffusers")


def test_converted_taming_checkpoint_reproduces_taming_in_diffusers():
    fixtures = taming_fixtures()
    from safetensors.torch import load_file

    from hf_vqgan.convert.taming import convert_taming_vqgan, load_taming_checkpoint, load_taming_config

    ours = convert_taming_vqgan(
        load_taming_config(fixtures / "vqgan_tiny.yaml"), load_taming_checkpoint(fixtures / "vqgan_tiny.ckpt")
    )
    theirs = to_diffusers_vqmodel(ours)
    io = load_file(str(fixtures / "vqgan_tiny_io.safetensors"))
    with torch.no_grad():
        latents = theirs.encode(io["images"]).latents
        quantized, _, (_, _, indices) = theirs.quantize(latents)
        reconstruction = theirs.decode(latents).sample
    diffs = {
        "pre_quant": (latents - io["pre_quant"]).abs().max().item(),
        "quantized": (quantized - io["quantized"]).abs().max().item(),
        "reconstruction": (reconstruction - io["reconstruction"]).abs().max().item(),
    }
    print(f"\n[taming -> diffusers parity] max abs diffs {diffs}", end="")
    assert torch.equal(indices.reshape(io["indices"].shape), io["indices"])
    assert max(diffs.values()) <= ATOL
