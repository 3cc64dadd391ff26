"""Parity of the taming first-stage families beyond the plain `VQModel`: `GumbelVQ`, `EMAVQ`, a `remap`ped `VQModel`
(unknown index "random" and "extra"), `VQNoDiscModel`, `VQSegmentationModel`.

Each fixture in tests/fixtures/taming was made by running taming-transformers' own class with random weights (see its
README). Every test compares encode (pre-quant latents), indices (identical), quantized latents, the reconstruction
and the image decoded from the original's indices, within 1e-4; and a wrong tensor in the mapping must break that.
Run with `-s` to see the max abs differences.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures import taming_fixtures
from hf_vqgan.convert.taming import (
    convert_taming_checkpoint,
    convert_taming_vqgan,
    load_taming_checkpoint,
    load_taming_config,
    vqgan_to_taming_state_dict,
)
from hf_vqgan.models.vqgan import VQGANModel

TOL = 1e-4
# family -> (fixture stem, io file, unknown_index)
FAMILIES = {
    "gumbel": ("gumbel_tiny", "gumbel_tiny_io", "random"),
    "emavq": ("emavq_tiny", "emavq_tiny_io", "random"),
    "remap-random": ("remap_tiny", "remap_tiny_io", "random"),
    "remap-extra": ("remap_tiny", "remap_tiny_extra_io", "extra"),
    "nodisc": ("nodisc_tiny", "nodisc_tiny_io", "random"),
    "segmentation": ("segmentation_tiny", "segmentation_tiny_io", "random"),
}


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return taming_fixtures()


def _load(fixtures: Path, family: str) -> tuple[VQGANModel, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    stem, io_name, unknown_index = FAMILIES[family]
    original = load_taming_checkpoint(fixtures / f"{stem}.ckpt")
    model = convert_taming_vqgan(load_taming_config(fixtures / f"{stem}.yaml"), original, unknown_index=unknown_index)
    return model, original, load_file(str(fixtures / f"{io_name}.safetensors"))


def _differences(model: VQGANModel, io: dict[str, torch.Tensor], family: str, part: str = "all") -> dict[str, float]:
    """Max abs difference of each output from the original's (indices: the number of differing positions).
    `part="encoder"` or `"decoder"` computes only the outputs that side's weights reach."""
    diffs = {}
    with torch.no_grad():
        if part != "decoder":
            latents = model.encode(io["images"]).latents
            q = model.quantize(latents)
            diffs.update(_quantizer_differences(model, io, family, latents, q))
        if part == "all":
            reconstruction = model.decode(q.quantized).sample
            diffs["reconstruction"] = (reconstruction - io["reconstruction"]).abs().max().item()
        if part != "encoder":
            from_indices = model.decode_indices(io["indices"]).sample
            diffs["decoded_from_indices"] = (from_indices - io["decoded_from_indices"]).abs().max().item()
    if family == "emavq" and part == "all":
        diffs.update(_ema_update_differences(model, io))
    return diffs


def _quantizer_differences(model, io, family, latents, q) -> dict[str, float]:
    indices, reference = q.indices, io["indices"]
    if family == "remap-random":  # unknown rows draw a random token: compare the known ones
        known = torch.isin(io["table_indices"], model.quantizer.remap.used)
        assert 0 < int(known.sum()) < known.numel()  # the fixture exercises both
        assert int(indices[~known].min()) >= 0 and int(indices[~known].max()) < model.config.codebook_size
        indices, reference = indices[known], reference[known]
    diffs = {
        "pre_quant": (latents - io["pre_quant"]).abs().max().item(),
        "indices": float((indices != reference).sum()),
        "quantized": (q.quantized - io["quantized"]).abs().max().item(),
    }
    if family == "gumbel":
        diffs["logits"] = (model.quantizer.logits(latents) - io["logits"]).abs().max().item()
        diffs["kl"] = abs(float(q.loss) - float(io["kl"]))
    elif "loss" in io:
        diffs["loss"] = abs(float(q.loss) - float(io["loss"]))
    return diffs


def _ema_update_differences(model: VQGANModel, io: dict[str, torch.Tensor]) -> dict[str, float]:
    """One training-mode EMA update on the fixture's latents, against the original's statistics afterwards; the
    model is put back as it was."""
    quantizer = model.quantizer
    saved = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer.train()
    with torch.no_grad():
        quantizer(io["pre_quant"])
    quantizer.eval()
    diffs = {
        "ema_weight_after": (quantizer.embedding.weight - io["ema_weight_after"]).abs().max().item(),
        "ema_cluster_size_after": (quantizer.ema_cluster_size - io["ema_cluster_size_after"]).abs().max().item(),
        "ema_embed_avg_after": (quantizer.ema_embed_sum - io["ema_embed_avg_after"]).abs().max().item(),
    }
    quantizer.load_state_dict(saved)
    return diffs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_taming_outputs(fixtures, family):
    model, _, io = _load(fixtures, family)
    diffs = _differences(model, io, family)
    for name, diff in diffs.items():
        print(f"\n[taming parity] {family:<13} {name:<22} max |ours - taming| = {diff:.3e}", end="")
    assert diffs["indices"] == 0
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_wrong_tensor_in_the_mapping_breaks_parity(fixtures, family):
    """Each converted tensor in turn is perturbed (a float one by noise, the used-index buffer by a rotation): parity
    then fails, for every tensor any output depends on.

    Some biases no output depends on, in the original as here (31 of 125 tensors in these 32-channel fixtures): a
    per-channel constant that only GroupNorms of 32 groups read (one channel each, so the constant is subtracted
    again), directly or through the residual stream and attention values (whose weights sum to one); and attention
    key biases (a shift of every score of a query alike, which softmax ignores). Each such tensor is shown to be
    ignored, not merely small: at 10x the noise no output moves either.
    """
    model, _, io = _load(fixtures, family)
    generator = torch.Generator().manual_seed(0)
    ignored = []
    for name, tensor in model.state_dict().items():
        part = "encoder" if name.startswith(("encoder.", "quant_conv.")) else "all"
        part = "decoder" if name.startswith(("decoder.", "post_quant_conv.")) else part
        saved = tensor.clone()
        with torch.no_grad():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.5)
            else:
                tensor.copy_(tensor.roll(1))
        if max(_differences(model, io, family, part).values()) <= TOL:
            ignored.append(name)
            with torch.no_grad():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 5)
            assert name.endswith(".bias") and max(_differences(model, io, family, part).values()) <= 1e-3, name
        with torch.no_grad():
            tensor.copy_(saved)
    print(
        f"\n[taming parity] {family}: {len(ignored)} of {len(model.state_dict())} tensors ignored by every output: {ignored}"
    )
    assert len(ignored) < len(model.state_dict()) // 3, ignored
    assert max(_differences(model, io, family).values()) <= TOL  # restored


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_inverse_mapping_restores_taming_state(fixtures, family):
    model, original, _ = _load(fixtures, family)
    back = vqgan_to_taming_state_dict(model)
    expected = {k: v for k, v in original.items() if not k.startswith("loss.") and k != "colorize"}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------------------------------- per family
def test_converted_configs_name_each_quantizer(fixtures):
    gumbel, _, _ = _load(fixtures, "gumbel")
    assert gumbel.config.quantizer_type == "gumbel" and gumbel.config.gumbel_kl_weight == 1e-8
    ema, _, _ = _load(fixtures, "emavq")
    assert ema.config.use_ema and not ema.config.legacy_beta and ema.config.commitment_beta == 0.25
    remap, _, _ = _load(fixtures, "remap-random")
    extra, _, _ = _load(fixtures, "remap-extra")
    assert (remap.config.codebook_size, remap.config.remap_table_size) == (20, 32)
    assert (extra.config.codebook_size, extra.config.remap_unknown_index) == (21, "extra")
    segmentation, _, _ = _load(fixtures, "segmentation")
    assert segmentation.config.in_channels == segmentation.config.out_channels == 5


def test_gumbel_training_forward_matches_taming_draw(fixtures):
    """With the same seed, a training-mode forward draws the same Gumbel noise as taming's and gives its hard,
    straight-through codes, indices and KL term."""
    model, _, io = _load(fixtures, "gumbel")
    quantizer = model.quantizer.train()
    quantizer.temperature = 0.7
    torch.manual_seed(1234)
    with torch.no_grad():
        q = quantizer(io["pre_quant"])
    assert torch.equal(q.indices, io["train_indices"].reshape(q.indices.shape))
    torch.testing.assert_close(q.quantized, io["train_quantized"], rtol=0, atol=TOL)
    torch.testing.assert_close(q.loss, io["train_kl"], rtol=0, atol=1e-12)
    torch.testing.assert_close(q.kl_loss * 1e-8, io["train_kl"], rtol=1e-6, atol=0)


def test_remap_random_draws_come_from_the_quantizers_generator(fixtures):
    model, _, io = _load(fixtures, "remap-random")
    remap = model.quantizer.remap
    with torch.no_grad():
        latents = model.encode(io["images"]).latents
        draws = []
        for _ in range(2):
            remap.generator = torch.Generator().manual_seed(7)
            draws.append(model.tokenize(io["images"]))
    assert torch.equal(draws[0], draws[1])
    remap.generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        assert not torch.equal(model.quantize(latents).indices, draws[0])


# ----------------------------------------------------------------------------------------------- refusals / files
def _config(fixtures: Path, stem: str) -> dict:
    return load_taming_config(fixtures / f"{stem}.yaml")


def test_remap_indices_come_from_the_checkpoint_or_a_named_file(fixtures, tmp_path):
    config, original = _config(fixtures, "remap_tiny"), load_taming_checkpoint(fixtures / "remap_tiny.ckpt")
    without_buffer = {k: v for k, v in original.items() if k != "quantize.used"}
    with pytest.raises(FileNotFoundError, match=r"'data/remap_tiny_used\.npy'.*--remap-file"):
        convert_taming_vqgan(config, without_buffer)
    model = convert_taming_vqgan(config, without_buffer, remap_file=fixtures / "remap_tiny_used.npy")
    assert torch.equal(model.quantizer.remap.used, original["quantize.used"])
    import numpy as np

    np.save(tmp_path / "other.npy", np.arange(20))
    with pytest.raises(ValueError, match="differ from the checkpoint's `quantize.used`"):
        convert_taming_vqgan(config, original, remap_file=tmp_path / "other.npy")


def test_emavq_with_remap_and_a_gumbel_that_cannot_run_are_refused(fixtures):
    config = _config(fixtures, "emavq_tiny")
    config["model"]["params"]["remap"] = "used.npy"
    state = {**load_taming_checkpoint(fixtures / "emavq_tiny.ckpt"), "quantize.used": torch.arange(5)}
    with pytest.raises(ValueError, match="EMAVQ` with `remap`: .* never applies them"):
        convert_taming_vqgan(config, state)
    config = _config(fixtures, "gumbel_tiny")
    config["model"]["params"]["embed_dim"] = 4
    with pytest.raises(ValueError, match="z_channels=8 inputs but `quant_conv` gives embed_dim=4"):
        convert_taming_vqgan(config, load_taming_checkpoint(fixtures / "gumbel_tiny.ckpt"))


def test_cli_converts_a_remapped_checkpoint_with_a_remap_file(fixtures, tmp_path, capsys):
    from hf_vqgan.cli import main

    original = load_taming_checkpoint(fixtures / "remap_tiny.ckpt")
    torch.save({"state_dict": {k: v for k, v in original.items() if k != "quantize.used"}}, tmp_path / "m.ckpt")
    args = ["convert-taming", "--config", str(fixtures / "remap_tiny.yaml"), "--checkpoint", str(tmp_path / "m.ckpt")]
    assert main([*args, "--output", str(tmp_path / "a")]) == 2  # one line naming the missing file, exit 2
    assert "'data/remap_tiny_used.npy'" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "b"), "--remap-file", str(fixtures / "remap_tiny_used.npy"),
          "--unknown-index", "extra"]) == 0  # fmt: skip
    model = VQGANModel.from_pretrained(tmp_path / "b")
    assert model.config.codebook_size == 21 and torch.equal(model.quantizer.remap.used, original["quantize.used"])


def test_converted_gumbel_folder_loads_and_reproduces(fixtures, tmp_path):
    out = convert_taming_checkpoint(fixtures / "gumbel_tiny.yaml", fixtures / "gumbel_tiny.ckpt", tmp_path / "g")
    model, _, io = _load(fixtures, "gumbel")
    loaded = VQGANModel.from_pretrained(out)
    assert isinstance(loaded.quantizer, type(model.quantizer))
    assert max(_differences(loaded, io, "gumbel").values()) <= TOL


def test_converted_gumbel_in_a_pipeline_samples_and_its_tokens_decode(fixtures, tmp_path):
    """The issue's done-when: a converted GumbelVQ, wrapped in a `VQGANTransformerPipeline` with a small prior over
    its 32 codes on its 8x8 grid, samples; the sampled tokens decode, through the saved and reloaded pipeline too."""
    from testing_utils import load_pipeline, tiny_pipeline, tiny_prior

    model, _, _ = _load(fixtures, "gumbel")
    prior = tiny_prior(0, codebook_size=model.config.codebook_size, latent_height=8, latent_width=8)
    pipe = tiny_pipeline(model, prior)
    generator = torch.Generator().manual_seed(0)
    tokens = pipe(batch_size=2, generator=generator, output_type="latent").images  # (2, 8, 8)
    assert tokens.shape == (2, 8, 8) and int(tokens.min()) >= 0 and int(tokens.max()) < 32
    assert len(tokens.unique()) > 1  # sampled, not one code
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    with torch.no_grad():
        decoded = model.decode_indices(tokens).sample.clamp(-1, 1)
    assert images.shape == (2, 3, 8, 8)
    torch.testing.assert_close(images, (decoded + 1) / 2, rtol=0, atol=1e-5)
    pipe.save_pretrained(tmp_path / "pipe")
    reloaded = load_pipeline(tmp_path / "pipe")
    again = reloaded(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert isinstance(reloaded.vqgan.quantizer, type(model.quantizer)) and torch.equal(again, tokens)
