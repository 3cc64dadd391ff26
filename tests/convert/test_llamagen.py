"""Conversion of LlamaGen's VQ tokenizers: parity with outputs of LlamaGen's own code, the released layouts, and
the error paths.

The fixtures in tests/fixtures/llamagen were produced by running LlamaGen's `VQModel` (see the README there). Run
with `-s` to see the max abs differences.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from fixtures import llamagen_fixtures
from hf_vqgan.convert.llamagen import (
    convert_llamagen_checkpoint,
    convert_llamagen_vqgan,
    llamagen_key,
    llamagen_vqgan_config,
    llamagen_weights,
    read_llamagen_checkpoint,
)
from hf_vqgan.image_processor import VQGANImageProcessor
from hf_vqgan.models.vqgan import VQGANModel

ATOL = 1e-4
TINY_SIZE = 32  # the fixture model's image size


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return llamagen_fixtures()


@pytest.fixture(scope="module")
def weights(fixtures) -> dict[str, torch.Tensor]:
    return read_llamagen_checkpoint(fixtures / "vq_tiny.pt")


@pytest.fixture(scope="module")
def io(fixtures) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(fixtures / "vq_tiny_io.safetensors"))


def test_reference_fixtures_ship_with_the_tests_and_a_missing_one_fails(monkeypatch, tmp_path):
    import fixtures as fixture_module

    readme = (llamagen_fixtures() / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in fixture_module.LLAMAGEN_FILES)
    monkeypatch.setattr(fixture_module, "LLAMAGEN", tmp_path)
    (tmp_path / "vq_tiny.pt").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"\['vq_tiny_io\.safetensors', 'released_layouts\.json'\] are missing"
    ):
        llamagen_fixtures()


def _outputs(model: VQGANModel, images: torch.Tensor, indices: torch.LongTensor) -> dict[str, torch.Tensor]:
    """Everything the fixture records, computed by `model`."""
    with torch.no_grad():
        latents = model.encode(images).latents
        q = model.quantize(latents)
        return {
            "pre_quant": latents,
            "indices": q.indices,
            "quantized": q.quantized,
            "reconstruction": model.decode(q.quantized).sample,
            "decoded_from_indices": model.decode_indices(indices).sample,
        }


def test_tiny_model_matches_llamagen_outputs(weights, io):
    model = convert_llamagen_vqgan(weights, image_size=TINY_SIZE)
    assert model.config.l2_normalize_codes and not model.config.legacy_beta and model.config.commitment_beta == 0.25
    assert model.config.channel_multipliers == (1, 2) and model.config.attention_resolutions == (16,)
    ours = _outputs(model, io["images"], io["indices"])
    assert torch.equal(ours.pop("indices"), io["indices"])
    for name, tensor in ours.items():
        diff = (tensor - io[name]).abs().max().item()
        print(f"\n[llamagen parity] {name:<22} max |ours - LlamaGen| = {diff:.3e}", end="")
        assert diff <= ATOL, name


def test_parity_fails_when_any_one_tensor_is_wrong(weights, io):
    """Each converted tensor in turn is perturbed (as a wrong or misplaced source tensor would be): the output it
    feeds then leaves the value the parity test checks, so that test vouches for the mapping of every tensor."""
    model = convert_llamagen_vqgan(weights, image_size=TINY_SIZE)
    images = io["images"][:1, :, :8, :8]  # a corner keeps 200 forward passes fast: (1, 3, 8, 8)

    def part(name: str) -> str:
        if name.startswith(("encoder.", "quant_conv.")):
            return "encoder"
        return "quantizer" if name.startswith("quantizer.") else "decoder"  # decoder.*, post_quant_conv.*

    def output(part: str) -> torch.Tensor:
        # Only the part of the model a tensor lives in runs: the encoder up to the latents, the codebook lookup, or
        # the decoder from fixed quantized codes.
        with torch.no_grad():
            if part == "encoder":
                return model.encode(images).latents
            if part == "quantizer":
                return model.quantizer.lookup(io["indices"][:1])
            return model.decode(io["quantized"][:1, :, :4, :4]).sample

    reference = {name: output(name) for name in ("encoder", "quantizer", "decoder")}
    generator = torch.Generator().manual_seed(0)
    unnoticed = []
    for name, tensor in model.state_dict().items():
        original = tensor.clone()
        tensor.add_(torch.randn(tensor.shape, generator=generator) * (0.5 * tensor.std().nan_to_num(0) + 0.1))
        if (output(part(name)) - reference[part(name)]).abs().max() <= ATOL:
            unnoticed.append(llamagen_key(name, num_levels=2))
        tensor.copy_(original)
    assert len(weights) > 200 and sorted(unnoticed) == sorted(key for key in weights if _has_no_effect(key, weights))
    assert len(unnoticed) == 16


def _has_no_effect(key: str, weights: dict[str, torch.Tensor]) -> bool:
    """The fixture's tensors that no output depends on, in LlamaGen's model or ours (so no test can see them)."""
    if key.endswith(".k.bias"):  # adds q.b, the same for every key, to a query's scores: the softmax ignores it
        return True
    # With 32 groups a 32-wide GroupNorm normalises each channel alone, removing any per-channel constant: one added
    # by conv1's bias right before norm2, or, in the decoder's 32-wide last level (`conv_blocks.1`), one added by a
    # conv2 or shortcut bias, which the residual path carries to `norm_out` (and each block's norm1 removes).
    if key.endswith(".conv1.bias") and weights[key].numel() == 32:
        return True
    return key.startswith("decoder.conv_blocks.1.res.") and key.endswith((".conv2.bias", ".nin_shortcut.bias"))


@pytest.mark.parametrize(
    "name, multipliers, attention",
    [("VQ-16", (1, 1, 2, 2, 4), (16,)), ("VQ-8", (1, 2, 2, 4), (32,))],
)
def test_released_layouts_convert_exactly(fixtures, name, multipliers, attention):
    """Tensors with every key and shape of LlamaGen's `VQ_16()` / `VQ_8()` (on the meta device: no memory, no
    download) convert with nothing left over or missing, and the layout is recognised by name."""
    shapes = json.loads((fixtures / "released_layouts.json").read_text())[name]
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    config = llamagen_vqgan_config(state_dict)
    assert config["channel_multipliers"] == multipliers and config["attention_resolutions"] == attention
    assert (config["base_channels"], config["num_res_blocks"], config["latent_channels"]) == (128, 2, 256)
    assert (config["codebook_size"], config["code_dim"], config["sample_size"]) == (16384, 8, 256)
    with torch.device("meta"):
        model = convert_llamagen_vqgan(state_dict, model=name)
    assert model.config.channel_multipliers == multipliers
    other = "VQ-8" if name == "VQ-16" else "VQ-16"
    with pytest.raises(ValueError, match=rf"has the {name} layout .* not {other}'s"):
        llamagen_vqgan_config(state_dict, model=other)


def test_vq16_is_the_llamagen_preset(fixtures):
    from hf_vqgan.training.presets import vqgan_preset

    shapes = json.loads((fixtures / "released_layouts.json").read_text())["VQ-16"]
    config = llamagen_vqgan_config({key: torch.empty(shape, device="meta") for key, shape in shapes.items()})
    preset = vqgan_preset("llamagen-f16-16384")
    assert {key: config[key] for key in preset} == preset


def test_key_names():
    assert llamagen_key("decoder.levels.0.resnets.2.conv1.weight", 5) == "decoder.conv_blocks.4.res.2.conv1.weight"
    assert llamagen_key("decoder.levels.4.attentions.1.to_q.bias", 5) == "decoder.conv_blocks.0.attn.1.q.bias"
    assert llamagen_key("decoder.levels.1.resample.conv.weight", 4) == "decoder.conv_blocks.2.upsample.conv.weight"
    assert llamagen_key("encoder.levels.1.resample.conv.weight", 4) == "encoder.conv_blocks.1.downsample.conv.weight"
    assert (
        llamagen_key("encoder.levels.1.resnets.0.shortcut.weight", 4)
        == "encoder.conv_blocks.1.res.0.nin_shortcut.weight"
    )
    assert llamagen_key("encoder.mid.attention.to_out.weight", 4) == "encoder.mid.1.proj_out.weight"
    assert llamagen_key("decoder.mid.resnet_2.norm1.bias", 4) == "decoder.mid.2.norm1.bias"
    assert llamagen_key("quantizer.embedding.weight", 4) == "quantize.embedding.weight"


# --------------------------------------------------------------------------------------------------- checkpoints
def test_ema_weights_are_taken_first_as_llamagen_scripts_do(weights):
    other = {key: value + 1 for key, value in weights.items()}
    assert llamagen_weights({"model": other, "ema": weights, "steps": 3})["encoder.conv_in.bias"].equal(
        weights["encoder.conv_in.bias"]
    )
    for checkpoint in ({"model": weights, "optimizer": {"state": {}}}, {"state_dict": weights}, weights):
        assert llamagen_weights(checkpoint).keys() == weights.keys()
    with pytest.raises(ValueError, match=r"holds no LlamaGen weights: expected a dict with one of \['ema', 'model'"):
        llamagen_weights([weights])
    with pytest.raises(
        ValueError, match=r"entries \['args', 'steps'\] are not tensors \(expected a state dict, or a dict"
    ):
        llamagen_weights({"steps": 3, "args": None})


class TrainingState:
    """Stands for a pickled object other than the argparse Namespace LlamaGen's training checkpoints hold."""

    def __init__(self):
        self.learning_rate = 1e-4


def test_namespace_loads_safely_and_other_objects_need_allow_pickle(weights, tmp_path):
    path = tmp_path / "vq.pt"
    torch.save({"model": weights, "args": argparse.Namespace(vq_model="VQ-16"), "state": TrainingState()}, path)
    with pytest.raises(ValueError, match=r"vq\.pt[\s\S]*TrainingState[\s\S]*--allow-pickle"):
        read_llamagen_checkpoint(path)
    assert read_llamagen_checkpoint(path, allow_pickle=True).keys() == weights.keys()


def test_leftover_missing_and_misshapen_tensors_are_named(weights):
    extra = dict(weights, **{"encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"not mapped[\s\S]*encoder\.extra\.weight"):
        convert_llamagen_vqgan(extra, image_size=TINY_SIZE)
    missing = {k: v for k, v in weights.items() if k != "decoder.conv_blocks.0.attn.1.v.bias"}
    with pytest.raises(ValueError, match=r"missing[\s\S]*decoder\.conv_blocks\.0\.attn\.1\.v\.bias"):
        convert_llamagen_vqgan(missing, image_size=TINY_SIZE)
    misshapen = dict(weights, **{"decoder.mid.1.q.weight": torch.zeros(64, 64, 3, 3)})
    with pytest.raises(ValueError, match=r"shape mismatches[\s\S]*decoder\.mid\.1\.q\.weight: \(64, 64, 3, 3\)"):
        convert_llamagen_vqgan(misshapen, image_size=TINY_SIZE)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda sd: {"tok_embeddings.weight": torch.zeros(2, 2), "layers.0.attention.wqkv.weight": torch.zeros(1)},
            "GPT .* not convert to VQGANPriorForCausalLM",
        ),  # fmt: skip
        (lambda sd: {k: v for k, v in sd.items() if not k.startswith("quantize.")}, "lacks.*quantize.embedding"),
        (lambda sd: dict(sd, **{"encoder.conv_blocks.0.res.0.norm1.running_mean": torch.zeros(32)}), "not mapped"),
    ],
)
def test_what_is_not_a_tokenizer_is_refused(weights, change, message):
    with pytest.raises(ValueError, match=message):
        convert_llamagen_vqgan(change(weights), image_size=TINY_SIZE)


def test_unknown_model_name_and_bad_image_size_are_refused(weights):
    with pytest.raises(ValueError, match=r"Unknown LlamaGen model 'VQ-32'; expected one of \['VQ-16', 'VQ-8'\]"):
        llamagen_vqgan_config(weights, model="VQ-32")
    with pytest.raises(ValueError, match=r"has a custom layout \(channel multipliers \[1, 2\], ch=32.* not VQ-16's"):
        llamagen_vqgan_config(weights, model="VQ-16")
    with pytest.raises(ValueError, match=r"`image_size` must be a positive multiple of the downsampling factor 2"):
        llamagen_vqgan_config(weights, image_size=33)


# -------------------------------------------------------------------------------------------------------- folders
def test_converted_folder_loads_and_tokenizes(fixtures, io, tmp_path):
    out = convert_llamagen_checkpoint(fixtures / "vq_tiny.pt", tmp_path / "vq", image_size=TINY_SIZE)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "diffusion_pytorch_model.safetensors", "preprocessor_config.json"
    ]  # fmt: skip
    model = VQGANModel.from_pretrained(out)
    with torch.no_grad():
        assert torch.equal(model.tokenize(io["images"]), io["indices"])
    processor = VQGANImageProcessor.from_pretrained(out)
    assert (processor.config.resolution, processor.config.channels, processor.config.center_crop) == (32, 3, True)
    assert not processor.config.random_flip
    with pytest.raises(ValueError, match="would overwrite the source"):
        convert_llamagen_checkpoint(fixtures / "vq_tiny.pt", fixtures / "vq_tiny.pt" / "out")


def test_push_to_hub_uploads_what_the_conversion_writes_and_nothing_else(fixtures, tmp_path, monkeypatch):
    from hub_recorder import STRAY_FILES, record_hub_calls, write_stray_files

    calls = record_hub_calls(monkeypatch)
    write_stray_files(tmp_path / "vq")
    convert_llamagen_checkpoint(fixtures / "vq_tiny.pt", tmp_path / "vq", image_size=TINY_SIZE, push_to_hub="u/vq")
    [upload] = calls["upload"]
    assert upload["repo_id"] == "u/vq"
    assert sorted(upload["files"]) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "preprocessor_config.json",
    ]
    assert not set(upload["files"]) & set(STRAY_FILES)
