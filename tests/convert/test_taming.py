"""Conversion of taming-transformers checkpoints: parity with outputs of the original code, and the error paths.

The fixtures in tests/fixtures/taming were produced by running taming-transformers itself; the synthetic
class-conditional and cond-stage checkpoints below are built in taming's key layout and checked against a small
minGPT forward written here from the raw tensors. Run with `-s` to see the max abs differences.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fixtures import taming_fixtures
from hf_vqgan.convert import taming
from hf_vqgan.convert.taming import (
    convert_taming_checkpoint,
    convert_taming_transformer,
    convert_taming_vqgan,
    load_taming_checkpoint,
    load_taming_config,
    taming_vqgan_key,
    vqgan_to_taming_state_dict,
)
from hf_vqgan.models.prior import VQGANPriorForCausalLM
from hf_vqgan.models.vqgan import VQGANModel
from testing_utils import load_pipeline

ATOL = 1e-5


@pytest.fixture(scope="module")
def fixtures() -> Path:
    """The reference files (tests/fixtures/taming); a missing one fails the test, naming it."""
    return taming_fixtures()


def test_reference_fixtures_ship_with_the_tests_and_a_missing_one_fails(monkeypatch, tmp_path):
    """The parity tests run in every clone (the files are in tests/fixtures/taming, each named in its README);
    without a file they fail naming it, never skip."""
    import fixtures as fixture_module

    folder = taming_fixtures()
    assert folder == Path(__file__).resolve().parents[1] / "fixtures" / "taming"
    readme = (folder / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in fixture_module.TAMING_FILES)
    monkeypatch.setattr(fixture_module, "TAMING", tmp_path)
    (tmp_path / "vqgan_tiny.yaml").write_text("model: {}")
    with pytest.raises(
        FileNotFoundError, match=r"\['vqgan_tiny\.ckpt', 'vqgan_tiny_io\.safetensors', .*\] are missing"
    ):
        taming_fixtures()


def _report(name: str, ours: torch.Tensor, reference: torch.Tensor) -> float:
    diff = (ours.float() - reference.float()).abs().max().item()
    print(f"\n[taming parity] {name:<22} max |ours - taming| = {diff:.3e}", end="")
    return diff


def _io(fixtures: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(fixtures / name))


# --------------------------------------------------------------------------------------------- reference fixtures
def test_vqgan_matches_taming_outputs(fixtures):
    model = convert_taming_vqgan(
        load_taming_config(fixtures / "vqgan_tiny.yaml"), load_taming_checkpoint(fixtures / "vqgan_tiny.ckpt")
    )
    assert model.config.legacy_beta is True and model.config.commitment_beta == 0.25
    io = _io(fixtures, "vqgan_tiny_io.safetensors")
    with torch.no_grad():
        latents = model.encode(io["images"]).latents
        q = model.quantize(latents)
        reconstruction = model.decode(q.quantized).sample
        from_indices = model.decode_indices(io["indices"]).sample
    assert torch.equal(q.indices, io["indices"])
    for name, ours in [
        ("pre_quant", latents),
        ("quantized", q.quantized),
        ("reconstruction", reconstruction),
        ("decoded_from_indices", from_indices),
    ]:
        assert _report(name, ours, io[name]) <= ATOL, name


def test_vqgan_inverse_mapping_restores_taming_state(fixtures):
    original = load_taming_checkpoint(fixtures / "vqgan_tiny.ckpt")
    model = convert_taming_vqgan(load_taming_config(fixtures / "vqgan_tiny.yaml"), original)
    back = vqgan_to_taming_state_dict(model)
    expected = {k: v for k, v in original.items() if not k.startswith("loss.")}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


def mingpt_logits(sd: dict[str, torch.Tensor], idx: torch.LongTensor, n_layer: int, n_head: int) -> torch.Tensor:
    """minGPT's forward, from taming-layout tensors (`transformer.*`), written out here as an independent reference."""
    x = sd["transformer.tok_emb.weight"][idx] + sd["transformer.pos_emb"][0, : idx.shape[1]]  # (B, T, C)
    B, T, C = x.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(n_layer):
        p = f"transformer.blocks.{i}."
        h = F.layer_norm(x, (C,), sd[p + "ln1.weight"], sd[p + "ln1.bias"], eps=1e-5)
        q, k, v = (
            F.linear(h, sd[p + f"attn.{n}.weight"], sd[p + f"attn.{n}.bias"]).view(B, T, n_head, -1).transpose(1, 2)
            for n in ("query", "key", "value")
        )  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // n_head)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (C,), sd[p + "ln2.weight"], sd[p + "ln2.bias"], eps=1e-5)
        h = F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"]))  # exact (erf) GELU
        x = x + F.linear(h, sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], eps=1e-5)
    return F.linear(x, sd["transformer.head.weight"])  # (B, T, vocab)


def test_unconditional_transformer_matches_taming_logits(fixtures):
    config = load_taming_config(fixtures / "transformer_tiny_uncond.yaml")
    state_dict = load_taming_checkpoint(fixtures / "transformer_tiny_uncond.ckpt")
    components = convert_taming_transformer(config, state_dict)
    assert set(components) == {"vqgan", "transformer"}
    prior = components["transformer"]
    io = _io(fixtures, "transformer_tiny_uncond_io.safetensors")
    P, K = prior.config.prefix_length, prior.config.codebook_size
    input_ids = prior.build_input_ids(io["image_tokens"], batch_size=2)  # start token, then the image tokens
    assert input_ids[:, 0].eq(prior.config.start_token).all()
    with torch.no_grad():
        logits = prior(input_ids).logits[:, P - 1 : -1, :K]  # positions that predict image tokens, image codes only
        # The hand-written reference reproduces taming's logits too, which vouches for it in the tests below.
        reference = mingpt_logits(state_dict, torch.cat([io["cond_tokens"], io["image_tokens"]], 1)[:, :-1], 2, 2)
    assert _report("logits", logits, io["logits"]) <= ATOL
    assert _report("logits (reference)", reference, io["logits"]) <= ATOL

    # The first stage is the VQGAN fixture's model (same weights).
    vqgan = convert_taming_vqgan(
        load_taming_config(fixtures / "vqgan_tiny.yaml"), load_taming_checkpoint(fixtures / "vqgan_tiny.ckpt")
    )
    first = components["vqgan"].state_dict()
    assert all(torch.equal(first[k], v) for k, v in vqgan.state_dict().items())


def test_convert_checkpoint_writes_loadable_folders(fixtures, tmp_path):
    vq_dir = convert_taming_checkpoint(fixtures / "vqgan_tiny.yaml", fixtures / "vqgan_tiny.ckpt", tmp_path / "vq")
    assert (vq_dir / "diffusion_pytorch_model.safetensors").is_file()
    model = VQGANModel.from_pretrained(vq_dir)
    io = _io(fixtures, "vqgan_tiny_io.safetensors")
    with torch.no_grad():
        assert torch.equal(model.tokenize(io["images"]), io["indices"])

    pipe_dir = convert_taming_checkpoint(
        fixtures / "transformer_tiny_uncond.yaml", fixtures / "transformer_tiny_uncond.ckpt", tmp_path / "pipe"
    )
    index = json.loads((pipe_dir / "model_index.json").read_text())
    # The same index as any saved pipeline, with the module file the generic DiffusionPipeline loader imports.
    assert index["_class_name"] == ["pipeline_vqgan_transformer", "VQGANTransformerPipeline"]
    assert "_diffusers_version" in index and (pipe_dir / "pipeline_vqgan_transformer.py").is_file()
    assert index["vqgan"][0].startswith("hf_vqgan") and index["vqgan"][1] == "VQGANModel"
    assert index["transformer"][0].startswith("hf_vqgan") and index["transformer"][1] == "VQGANPriorForCausalLM"
    assert index["cond_vqgan"] == [None, None]
    assert (pipe_dir / "transformer" / "model.safetensors").is_file()
    prior = VQGANPriorForCausalLM.from_pretrained(pipe_dir / "transformer")
    tio = _io(fixtures, "transformer_tiny_uncond_io.safetensors")
    with torch.no_grad():
        logits = prior(prior.build_input_ids(tio["image_tokens"], batch_size=2)).logits[:, :-1, :64]
    assert torch.allclose(logits, tio["logits"], atol=ATOL)
    assert VQGANModel.from_pretrained(pipe_dir / "vqgan").config.codebook_size == 64


def test_push_to_hub_uploads_what_the_conversion_writes_and_nothing_else(fixtures, tmp_path, monkeypatch):
    from hub_recorder import STRAY_FILES, record_hub_calls, write_stray_files

    calls = record_hub_calls(monkeypatch)
    write_stray_files(tmp_path / "vq")
    out = convert_taming_checkpoint(
        fixtures / "vqgan_tiny.yaml", fixtures / "vqgan_tiny.ckpt", tmp_path / "vq", push_to_hub="user/vqgan"
    )
    [upload] = calls["upload"]
    assert upload["repo_id"] == "user/vqgan"
    assert sorted(upload["files"]) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert not set(upload["files"]) & set(STRAY_FILES)
    assert upload["files"]["config.json"] and (out / "config.json").is_file()


# ------------------------------------------------------------------------------------------------ pickle handling
class Hyperparameters:
    """Stands for the pickled hyper-parameter objects of old Lightning checkpoints."""

    def __init__(self):
        self.learning_rate = 4.5e-6


def _tiny_vqgan_config(**ddconfig) -> dict:
    dd = dict(double_z=False, z_channels=8, resolution=8, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
              num_res_blocks=1, attn_resolutions=[4], dropout=0.0)  # fmt: skip
    dd.update(ddconfig)
    return {
        "model": {"target": "taming.models.vqgan.VQModel", "params": {"embed_dim": 4, "n_embed": 16, "ddconfig": dd}}
    }


def _tiny_vqgan(seed: int, **overrides) -> VQGANModel:
    torch.manual_seed(seed)
    kwargs = taming.vqgan_config_from_taming(_tiny_vqgan_config())
    kwargs.update(overrides)
    model = VQGANModel(**kwargs)
    with torch.no_grad():  # move every tensor away from its init so a wrong mapping shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_checkpoint_needing_pickle_is_refused_unless_allowed(tmp_path):
    state_dict = {f"{k}": v for k, v in vqgan_to_taming_state_dict(_tiny_vqgan(0)).items()}
    path = tmp_path / "with_objects.ckpt"
    torch.save({"state_dict": state_dict, "hyper_parameters": Hyperparameters()}, path)
    with pytest.raises(ValueError, match=r"with_objects\.ckpt[\s\S]*Hyperparameters[\s\S]*--allow-pickle"):
        load_taming_checkpoint(path)
    loaded = load_taming_checkpoint(path, allow_pickle=True)
    assert loaded.keys() == state_dict.keys()

    config_path = tmp_path / "model.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(_tiny_vqgan_config()))
    with pytest.raises(ValueError, match="--allow-pickle"):
        convert_taming_checkpoint(config_path, path, tmp_path / "out")
    out = convert_taming_checkpoint(config_path, path, tmp_path / "out", allow_pickle=True)
    assert VQGANModel.from_pretrained(out).config.codebook_size == 16


def test_plain_state_dict_and_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file

    state_dict = vqgan_to_taming_state_dict(_tiny_vqgan(0))
    torch.save(state_dict, tmp_path / "plain.pt")
    save_file(state_dict, str(tmp_path / "weights.safetensors"))
    for name in ("plain.pt", "weights.safetensors"):
        loaded = load_taming_checkpoint(tmp_path / name)
        assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


# --------------------------------------------------------------------------------------------------- error paths
def _vqgan_checkpoint(model: VQGANModel) -> dict[str, torch.Tensor]:
    sd = vqgan_to_taming_state_dict(model)
    sd["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)  # training-only, dropped by the converter
    return sd


def test_tiny_vqgan_round_trips_through_taming_layout():
    model = _tiny_vqgan(1)
    converted = convert_taming_vqgan(_tiny_vqgan_config(), _vqgan_checkpoint(model))
    ours = converted.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())
    assert taming_vqgan_key("decoder.levels.1.resample.conv.weight") == "decoder.up.1.upsample.conv.weight"
    assert taming_vqgan_key("encoder.mid.attention.to_out.bias") == "encoder.mid.attn_1.proj_out.bias"


@pytest.mark.parametrize(
    "target, message",
    [
        # The Gumbel and EMA families convert (tests/convert/test_taming_families.py). This config under GumbelVQ
        # could not run in taming (z_channels != embed_dim); a plain VQModel checkpoint under EMAVQ lacks tensors.
        ("taming.models.vqgan.GumbelVQ", r"z_channels=8 inputs but `quant_conv` gives embed_dim=4"),
        ("taming.models.vqgan.EMAVQ", r"missing from the taming VQModel weights: quantize\.embedding\.cluster_size"),
        ("taming.models.autoencoder.AutoencoderKL", "expected one of"),
    ],
)
def test_unsupported_model_classes_are_refused(target, message):
    config = _tiny_vqgan_config()
    config["model"]["target"] = target
    with pytest.raises(ValueError, match=message):
        convert_taming_vqgan(config, _vqgan_checkpoint(_tiny_vqgan(0)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["params"].update(remap="used_codes.npy"), r"remap file 'used_codes\.npy' .*--remap-file"),
        (lambda c: c["params"]["ddconfig"].update(double_z=True), "double_z"),
        (lambda c: c["params"]["ddconfig"].pop("double_z"), "double_z"),
        (lambda c: c["params"]["ddconfig"].update(resamp_with_conv=False), "resamp_with_conv"),
        (lambda c: c["params"]["ddconfig"].update(attn_type="linear"), "attn_type"),
        (lambda c: c["params"]["ddconfig"].update(mystery=1), "mystery"),
        (lambda c: c["params"].update(kl_weight=1e-8), "kl_weight"),
    ],
)
def test_unmappable_vqgan_options_are_refused(change, message):
    config = _tiny_vqgan_config()
    change(config["model"])
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        convert_taming_vqgan(config, _vqgan_checkpoint(_tiny_vqgan(0)))


def test_leftover_missing_and_misshapen_tensors_are_named():
    sd = _vqgan_checkpoint(_tiny_vqgan(0))
    extra = dict(sd, **{"encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"not mapped[\s\S]*encoder\.extra\.weight"):
        convert_taming_vqgan(_tiny_vqgan_config(), extra)
    missing = {k: v for k, v in sd.items() if k != "decoder.up.0.block.0.conv1.weight"}
    with pytest.raises(ValueError, match=r"missing[\s\S]*decoder\.up\.0\.block\.0\.conv1\.weight"):
        convert_taming_vqgan(_tiny_vqgan_config(), missing)
    config = _tiny_vqgan_config()
    config["model"]["params"]["n_embed"] = 32
    with pytest.raises(ValueError, match=r"shape mismatches[\s\S]*quantize\.embedding\.weight"):
        convert_taming_vqgan(config, sd)


# ------------------------------------------------------------------------- synthetic Net2Net checkpoints (by hand)
N_LAYER, N_HEAD, N_EMBD = 2, 2, 16


def _random_mingpt(vocab_size: int, block_size: int, seed: int) -> dict[str, torch.Tensor]:
    """A minGPT state dict in taming's layout (`transformer.*`), with random values."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    C = N_EMBD
    sd = {"transformer.tok_emb.weight": rand(vocab_size, C), "transformer.pos_emb": rand(1, block_size, C)}
    for i in range(N_LAYER):
        p = f"transformer.blocks.{i}."
        sd.update({p + "ln1.weight": 1 + rand(C), p + "ln1.bias": rand(C), p + "ln2.weight": 1 + rand(C),
                   p + "ln2.bias": rand(C)})  # fmt: skip
        sd[p + "attn.mask"] = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
        for name in ("key", "query", "value", "proj"):
            sd[p + f"attn.{name}.weight"], sd[p + f"attn.{name}.bias"] = rand(C, C), rand(C)
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = rand(4 * C, C), rand(4 * C)
        sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"] = rand(C, 4 * C), rand(C)
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = 1 + rand(C), rand(C)
    sd["transformer.head.weight"] = rand(vocab_size, C)
    return sd


def _net2net(kind: str):
    """(config, state_dict, first stage, cond stage or None, taming condition ids function)."""
    first = _tiny_vqgan(2)  # 8x8 images -> 4x4 = 16 tokens, codebook 16
    first_config = _tiny_vqgan_config()["model"]
    params = {"first_stage_config": first_config, "first_stage_key": "image", "pkeep": 0.9}
    sd = {"first_stage_model." + k: v for k, v in _vqgan_checkpoint(first).items()}
    cond_model = None
    if kind == "unconditional":
        params.update(cond_stage_config="__is_unconditional__", sos_token=5, unconditional=True)
        vocab, block = 16, 16
    elif kind == "class":
        params["cond_stage_config"] = {"target": "taming.modules.util.Labelator", "params": {"n_classes": 10}}
        vocab, block = 16, 16
    elif kind == "vqgan":
        # A segmentation-like condition: 5 channels, its own codebook (24 codes, more than the image's 16), and
        # taming's downsample_cond_size resizing 16x16 condition maps to 8x8 (16 condition tokens).
        cond_config = _tiny_vqgan_config(in_channels=5, out_ch=5, resolution=16)["model"]
        cond_config["params"].update(n_embed=24, colorize_nlabels=5, image_key="segmentation")
        cond_model = _tiny_vqgan(3, in_channels=5, out_channels=5, sample_size=16, codebook_size=24)
        cond_sd = _vqgan_checkpoint(cond_model)
        cond_sd["colorize"] = torch.randn(3, 5, 1, 1)
        sd.update({"cond_stage_model." + k: v for k, v in cond_sd.items()})
        params.update(cond_stage_config=cond_config, downsample_cond_size=8, cond_stage_key="segmentation")
        vocab, block = 24, 40  # block_size larger than the 31 tokens fed
    else:  # "first_stage": the image VQGAN tokenizes the condition too; Lightning saves both names
        params["cond_stage_config"] = "__is_first_stage__"
        sd.update({k.replace("first_stage_model.", "cond_stage_model."): v for k, v in sd.items()})
        cond_model = first
        vocab, block = 16, 31
    params["transformer_config"] = {
        "target": "taming.modules.transformer.mingpt.GPT",
        "params": {"vocab_size": vocab, "block_size": block, "n_layer": N_LAYER, "n_head": N_HEAD, "n_embd": N_EMBD},
    }
    sd.update(_random_mingpt(vocab, block, seed=4))
    config = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": params}}
    return config, sd, first, cond_model


@pytest.mark.parametrize("kind", ["unconditional", "class", "vqgan", "first_stage"])
def test_conditional_transformers_match_a_mingpt_reference(kind):
    config, sd, first, cond_model = _net2net(kind)
    components = convert_taming_transformer(config, sd)
    prior = components["transformer"]
    K, P = prior.config.codebook_size, prior.config.prefix_length
    g = torch.Generator().manual_seed(0)
    image_codes = torch.randint(0, K, (3, 16), generator=g)
    if kind == "unconditional":
        taming_prefix = torch.full((3, 1), 5)  # SOSProvider(sos_token=5)
        input_ids = prior.build_input_ids(image_codes, batch_size=3)
    elif kind == "class":
        labels = torch.tensor([0, 3, 9])
        taming_prefix = labels[:, None]  # Labelator: the class id itself, in the shared table
        input_ids = prior.build_input_ids(image_codes, class_labels=labels)
    else:
        size = 8
        channels = cond_model.config.in_channels
        condition = torch.rand(3, channels, size, size, generator=g) * 2 - 1
        with torch.no_grad():
            taming_prefix = components["cond_vqgan"].tokenize(condition).flatten(1)  # (B, cond_length)
        assert taming_prefix.shape[1] == prior.config.cond_length == 16
        input_ids = prior.build_input_ids(image_codes, cond_indices=taming_prefix)
        converted = components["cond_vqgan"].state_dict()
        assert all(torch.equal(converted[k], v) for k, v in cond_model.state_dict().items())
    if kind == "vqgan":
        assert prior.config.cond_image_size == 8 and prior.config.n_positions == 40
    with torch.no_grad():
        ours = prior(input_ids).logits[:, P - 1 : -1, :K]
        taming_ids = torch.cat([taming_prefix, image_codes], 1)[:, :-1]  # what Net2NetTransformer.forward feeds
        reference = mingpt_logits(sd, taming_ids, N_LAYER, N_HEAD)[:, P - 1 :, :K]
    assert _report(f"logits ({kind})", ours, reference) <= ATOL
    first_converted = components["vqgan"].state_dict()
    assert all(torch.equal(first_converted[k], v) for k, v in first.state_dict().items())
    assert set(components) == ({"vqgan", "transformer"} | ({"cond_vqgan"} if cond_model is not None else set()))


def test_class_conditional_rows_are_copied_from_the_shared_table():
    config, sd, _, _ = _net2net("class")
    prior = convert_taming_transformer(config, sd)["transformer"]
    wte = prior.transformer.wte.weight
    table = sd["transformer.tok_emb.weight"]
    off = prior.config.class_token_offset
    assert torch.equal(wte[:16], table[:16]) and torch.equal(wte[off : off + 10], table[:10])
    # The null class has no taming counterpart (taming trained no guidance); it starts at zero.
    assert wte[prior.config.null_class_token].abs().sum() == 0


def test_pipeline_folder_for_a_cond_stage_model(tmp_path):
    config, sd, _, _ = _net2net("vqgan")
    out = taming.save_pipeline_folder(convert_taming_transformer(config, sd), tmp_path / "pipe")
    index = json.loads((out / "model_index.json").read_text())
    assert index["cond_vqgan"][0].startswith("hf_vqgan") and index["cond_vqgan"][1] == "VQGANModel"
    assert VQGANModel.from_pretrained(out / "cond_vqgan").config.in_channels == 5
    assert VQGANPriorForCausalLM.from_pretrained(out / "transformer").config.cond_image_size == 8


def _set(config, path, value):
    node = config["model"]["params"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize(
    "kind, change, message",
    [
        # Both convert (tests/convert/test_taming_conditions.py); refused here for what they lack: room for condition
        # tokens beside the 16 image tokens in block_size 16, and the CoordStage's n_embed.
        (
            "class",
            ("cond_stage_config", {"target": "taming.models.dummy_cond_stage.DummyCondStage"}),
            "leaves no room",
        ),
        ("class", ("cond_stage_config", {"target": "taming.modules.misc.coord.CoordStage"}), r"params\.n_embed"),
        ("class", ("cond_stage_config", {"target": "taming.modules.misc.seg.SegStage"}), "expected one of"),
        ("class", ("permuter_config", {"target": "taming.modules.transformer.permuter.Subsample"}), "permuter"),
        ("class", ("transformer_config", "params", "n_unmasked", 4), "n_unmasked"),
        ("class", ("transformer_config", "target", "taming.modules.transformer.mingpt.CodeGPT"), "CodeGPT"),
        ("class", ("cond_stage_config", "params", "n_classes", 17), "n_classes"),
        ("class", ("transformer_config", "params", "block_size", 8), "block_size"),
        ("class", ("mystery_option", 1), "mystery_option"),
        ("vqgan", ("cond_stage_config", "params", "n_embed", 32), "exceeds"),
    ],
)
def test_unmappable_transformer_configs_are_refused(kind, change, message):
    config, sd, _, _ = _net2net(kind)
    _set(config, change[:-1], change[-1])
    with pytest.raises(ValueError, match=message):
        convert_taming_transformer(config, sd)


def test_transformer_checkpoint_problems_are_named():
    config, sd, _, _ = _net2net("unconditional")
    with pytest.raises(ValueError, match=r"cond_stage_model"):
        convert_taming_transformer(config, dict(sd, **{"cond_stage_model.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match=r"unexpected tensors \['ema\.decay'\]"):
        convert_taming_transformer(config, dict(sd, **{"ema.decay": torch.zeros(())}))
    partial = {k: v for k, v in sd.items() if k != "transformer.blocks.1.attn.value.bias"}
    with pytest.raises(ValueError, match=r"missing: transformer\.blocks\.1\.attn\.value\.bias"):
        convert_taming_transformer(config, partial)
    extra = dict(sd, **{"transformer.blocks.2.ln1.weight": torch.ones(N_EMBD)})
    with pytest.raises(ValueError, match=r"not mapped to any weight: transformer\.blocks\.2\.ln1\.weight"):
        convert_taming_transformer(config, extra)
    wrong_vocab = dict(sd, **{"transformer.head.weight": torch.zeros(20, N_EMBD)})
    with pytest.raises(ValueError, match=r"transformer\.head\.weight` has shape \(20, 16\), expected \(16, 16\)"):
        convert_taming_transformer(config, wrong_vocab)
    with pytest.raises(ValueError, match="convert_taming_transformer"):
        convert_taming_vqgan(config, sd)
    unmasked = dict(sd)
    unmasked["transformer.blocks.0.attn.mask"] = torch.ones_like(sd["transformer.blocks.0.attn.mask"])
    with pytest.raises(ValueError, match="causal mask"):
        convert_taming_transformer(config, unmasked)


def test_converted_cond_stage_pipeline_samples_from_a_condition_image(tmp_path):
    """A converted pipeline with a VQGAN condition stage carries its processors, so a condition map samples
    (before: `ValueError: Unknown condition type None`)."""

    config, sd, _, _ = _net2net("vqgan")
    components = convert_taming_transformer(config, sd)
    out = taming.save_pipeline_folder({**components, **taming.taming_processors(config, components)}, tmp_path / "p")
    index = json.loads((out / "model_index.json").read_text())
    assert index["condition_processor"][1] == index["image_processor"][1] == "VQGANImageProcessor"
    processor = json.loads((out / "condition_processor" / "preprocessor_config.json").read_text())
    assert (processor["condition_type"], processor["num_labels"], processor["resolution"]) == ("segmentation", 5, 8)
    assert processor["one_hot_off_value"] == 0.0  # taming's cond stages read `np.eye(n_labels)[labels]`
    pipe = load_pipeline(out)
    labels = torch.randint(0, 5, (8, 8), generator=torch.Generator().manual_seed(0))
    tokens = pipe(condition_image=labels, top_k=1, output_type="latent").images
    cond_codes = pipe.cond_vqgan.tokenize(F.one_hot(labels, 5).permute(2, 0, 1)[None].float()).flatten(1)  # {0, 1}
    assert torch.equal(tokens, pipe.transformer.sample(cond_indices=cond_codes, top_k=1))
    assert pipe(condition_image=labels, output_type="pt").images.shape == (1, 3, 8, 8)


def test_convert_checkpoint_writes_the_processors(fixtures, tmp_path):
    out = convert_taming_checkpoint(fixtures / "transformer_tiny_uncond.yaml",
                                    fixtures / "transformer_tiny_uncond.ckpt", tmp_path / "pipe")  # fmt: skip
    processor = json.loads((out / "image_processor" / "preprocessor_config.json").read_text())
    assert processor["resolution"] == 32 and processor["channels"] == 3 and processor["condition_type"] is None
    assert not (out / "condition_processor").exists()
