"""`hf-vqgan convert-llamagen`: the round trip from LlamaGen's checkpoint to a tokenizer folder the other commands
use, and one-line errors (exit status 2) for what cannot convert."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from fixtures import llamagen_fixtures
from hf_vqgan.cli import main
from hf_vqgan.models.vqgan import VQGANModel


def _convert(tmp_path: Path, checkpoint: Path, *options: str) -> list[str]:
    return ["convert-llamagen", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "converted"), *options]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("hf-vqgan convert-llamagen: error: "), err
    return err


def test_round_trip_to_a_tokenizer_folder_that_reconstructs(tmp_path, capsys):
    from safetensors.torch import load_file

    fixtures = llamagen_fixtures()
    assert main(_convert(tmp_path, fixtures / "vq_tiny.pt", "--image-size", "32")) == 0
    out = capsys.readouterr().out
    assert f"vq_tiny.pt (a custom layout: f2, 64 codes of dimension 8) -> {tmp_path / 'converted'}" in out
    io = load_file(str(fixtures / "vq_tiny_io.safetensors"))
    model = VQGANModel.from_pretrained(tmp_path / "converted")
    with torch.no_grad():
        assert torch.equal(model.tokenize(io["images"]), io["indices"])

    image = tmp_path / "photo.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    argv = [
        "reconstruct",
        "--model",
        str(tmp_path / "converted"),
        "--input",
        str(image),
        "--output",
        str(tmp_path / "r.png"),
    ]
    assert main(argv) == 0
    assert "32x32 pixels -> 16x16 tokens" in capsys.readouterr().out
    assert PIL.Image.open(tmp_path / "r.png").size == (40, 40)


def test_a_layout_other_than_the_named_model_is_refused(tmp_path, capsys):
    assert main(_convert(tmp_path, llamagen_fixtures() / "vq_tiny.pt", "--model", "VQ-8")) == 2
    assert re.search(r"has a custom layout \(channel multipliers \[1, 2\].* not VQ-8's", _error_line(capsys))
    assert not (tmp_path / "converted").exists()


@pytest.mark.parametrize("content", [None, b"", "random", "truncated"])
def test_a_missing_or_damaged_checkpoint_is_named_in_one_line(tmp_path, capsys, content):
    original = (llamagen_fixtures() / "vq_tiny.pt").read_bytes()
    checkpoint = tmp_path / "vq_ds16_c2i.pt"
    if content is not None:
        data = {"random": np.random.default_rng(0).bytes(3000), "truncated": original[: len(original) // 2]}
        checkpoint.write_bytes(data.get(content, content))
    assert main(_convert(tmp_path, checkpoint)) == 2
    err = _error_line(capsys)
    assert "allow-pickle" not in err
    expected = "No checkpoint file at" if content is None else "(is empty|is not a readable PyTorch checkpoint)"
    assert re.search(rf"{expected}.*", err) and "vq_ds16_c2i.pt" in err, err


def test_a_gpt_checkpoint_is_refused_with_the_reason(tmp_path, capsys):
    checkpoint = tmp_path / "c2i_B_256.pt"
    gpt = {"tok_embeddings.weight": torch.zeros(4, 2), "layers.0.attention.wqkv.weight": torch.zeros(6, 2)}
    torch.save({"model": gpt}, checkpoint)
    assert main(_convert(tmp_path, checkpoint)) == 2
    assert re.search(r"LlamaGen GPT .*do not convert to VQGANPriorForCausalLM \(2D rotary", _error_line(capsys))


class OptimizerSettings:
    """Stands for a pickled object a training checkpoint might hold besides LlamaGen's argparse Namespace."""

    def __init__(self):
        self.betas = (0.9, 0.95)


def test_allow_pickle_reaches_the_loader(tmp_path, capsys):
    weights = torch.load(llamagen_fixtures() / "vq_tiny.pt", weights_only=False)["model"]
    checkpoint = tmp_path / "vq.pt"
    torch.save({"model": weights, "settings": OptimizerSettings()}, checkpoint)
    assert main(_convert(tmp_path, checkpoint, "--image-size", "32")) == 2
    assert re.search(r"vq\.pt holds Python objects .*OptimizerSettings.*--allow-pickle", _error_line(capsys))
    assert main(_convert(tmp_path, checkpoint, "--image-size", "32", "--allow-pickle")) == 0
    assert VQGANModel.from_pretrained(tmp_path / "converted").config.codebook_size == 64


def test_an_unknown_model_name_is_a_parser_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_convert(tmp_path, llamagen_fixtures() / "vq_tiny.pt", "--model", "VQ-32"))
    assert exit_info.value.code == 2
    assert re.search(r"argument --model: invalid choice: 'VQ-32'", capsys.readouterr().err)
