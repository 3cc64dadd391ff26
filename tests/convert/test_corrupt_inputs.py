"""The converters' inputs when they are not what they claim: damaged checkpoints and configs are named in one line
that never suggests unpickling, a whole pickle holding other objects is the only file that does, and an output
folder that is the input (or inside it) is refused before anything is written."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml

from fixtures import taming_fixtures
from hf_vqgan.convert.diffusers_vq import convert_diffusers_folder
from hf_vqgan.convert.taming import convert_taming_checkpoint, load_taming_checkpoint, load_taming_config
from hf_vqgan.loading import CorruptFileError, pickle_is_complete
from testing_utils import small_vqgan_config, tiny_vqgan


class Hyperparameters:
    """Stands for the pickled hyper-parameter objects of old Lightning checkpoints."""

    def __init__(self):
        self.learning_rate = 4.5e-6


def _random_bytes(count: int, seed: int = 0) -> bytes:
    return bytes(torch.randint(0, 256, (count,), generator=torch.Generator().manual_seed(seed)).tolist())


def _with_objects(path: Path, legacy: bool = False) -> Path:
    """A checkpoint whose pickle holds a `Hyperparameters` object next to its tensors."""
    checkpoint = {"state_dict": {"w": torch.arange(64.0)}, "hyper_parameters": Hyperparameters()}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


def _cut_after_objects(path: Path) -> Path:
    """Cut the file 40 bytes after the name of the objects' class: inside the pickle, past its global."""
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"Hyperparameters") + 40])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# name -> (a function of the test folder that makes the file, what the message says)
DAMAGED_CHECKPOINTS = {
    "empty.ckpt": (lambda d: _write(d / "empty.ckpt", b""), "is empty (0 bytes)"),
    "truncated.ckpt": (
        lambda d: _write(d / "truncated.ckpt", (taming_fixtures() / "vqgan_tiny.ckpt").read_bytes()[:100_000]),
        "not a readable PyTorch checkpoint",
    ),
    "random.ckpt": (lambda d: _write(d / "random.ckpt", _random_bytes(3000)), "not a readable PyTorch checkpoint"),
    # The objects' global comes before the cut: the weights-only loader meets it first, yet the file is broken.
    "truncated-legacy-with-objects.ckpt": (
        lambda d: _cut_after_objects(_with_objects(d / "truncated-legacy-with-objects.ckpt", legacy=True)),
        "not a readable PyTorch checkpoint",
    ),
    "truncated-with-objects.ckpt": (
        lambda d: _cut_after_objects(_with_objects(d / "truncated-with-objects.ckpt")),
        "not a readable PyTorch checkpoint",
    ),
    "random.safetensors": (
        lambda d: _write(d / "random.safetensors", _random_bytes(3000)),
        "is not a complete safetensors file",
    ),
}


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("name", sorted(DAMAGED_CHECKPOINTS))
def test_a_damaged_checkpoint_is_named_and_unpickling_is_not_suggested(tmp_path, name, allow_pickle):
    make, message = DAMAGED_CHECKPOINTS[name]
    path = make(tmp_path)
    with pytest.raises(CorruptFileError, match=re.escape(str(path)) + r"[\s\S]*" + re.escape(message)) as error:
        load_taming_checkpoint(path, allow_pickle=allow_pickle)
    text = str(error.value)
    assert "allow-pickle" not in text and "allow_pickle" not in text and "weights_only" not in text
    assert "\n" not in text  # one line, for the command line's `error:` prefix


@pytest.mark.parametrize("legacy", [False, True])
def test_a_whole_pickle_holding_objects_is_the_one_file_that_suggests_allow_pickle(tmp_path, legacy):
    path = _with_objects(tmp_path / "objects.ckpt", legacy=legacy)
    assert pickle_is_complete(path)
    with pytest.raises(ValueError, match=r"objects\.ckpt[\s\S]*Hyperparameters[\s\S]*--allow-pickle"):
        load_taming_checkpoint(path)
    assert torch.equal(load_taming_checkpoint(path, allow_pickle=True)["w"], torch.arange(64.0))


def test_pickle_completeness_reads_opcodes_without_running_them(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(Hyperparameters()))  # not a torch file: one pickle, not the legacy five
    assert not pickle_is_complete(path)
    assert pickle_is_complete(_with_objects(tmp_path / "zip.ckpt"))
    assert not pickle_is_complete(_write(tmp_path / "empty.ckpt", b""))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"model:\n  target: [taming.models.vqgan.VQModel\n  params: {", r"is not valid YAML \(.* at line \d+"),
        (bytes(range(128, 256)), "is not UTF-8 text"),
    ],
)
def test_a_damaged_taming_config_is_named(tmp_path, content, message):
    path = _write(tmp_path / "model.yaml", content)
    with pytest.raises(CorruptFileError, match=re.escape(str(path)) + r"[\s\S]*" + message) as error:
        load_taming_config(path)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------- outputs in inputs
def test_convert_diffusers_refuses_an_output_that_is_or_is_inside_the_input(tmp_path):
    source = tmp_path / "ours"
    tiny_vqgan(**small_vqgan_config()).save_pretrained(source)
    before = {f.name: f.read_bytes() for f in source.iterdir()}
    for output, relation in ((source, "is the input"), (source / "converted", "is inside the input")):
        with pytest.raises(ValueError, match=re.escape(relation) + r"[\s\S]*overwrite the source"):
            convert_diffusers_folder(source, output, to="vqmodel")
    assert {f.name: f.read_bytes() for f in source.iterdir()} == before  # nothing written
    assert (convert_diffusers_folder(source, tmp_path / "theirs") / "config.json").is_file()


def test_convert_taming_refuses_an_output_that_is_an_input_file(tmp_path):
    config = _write(
        tmp_path / "model.yaml", yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel"}}).encode()
    )
    checkpoint = _with_objects(tmp_path / "last.ckpt")
    before = checkpoint.read_bytes()
    for output in (checkpoint, config):
        with pytest.raises(ValueError, match=re.escape(f"{str(output)!r} is the input")):
            convert_taming_checkpoint(config, checkpoint, output, allow_pickle=True)
    assert checkpoint.read_bytes() == before
