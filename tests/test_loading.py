"""Damaged folders name the damaged file: every `from_pretrained` entry point, on its own and inside a pipeline.

Also the folder mix-ups of a first user: a pipeline root given to a model class gets the `subfolder` to pass (read
from model_index.json), a pipeline without a component folder names that folder, a model folder given to the
pipeline names the model classes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from hf_vqgan import VQGANImageProcessor, VQGANModel, VQGANPriorForCausalLM, VQGANTransformerPipeline
from hf_vqgan.loading import CorruptFileError, check_safetensors_file, read_json_file
from testing_utils import load_pipeline, prior_config, small_vqgan_config, tiny_pipeline, tiny_prior, tiny_vqgan

COMPONENT_CLASSES = {"vqgan": VQGANModel, "transformer": VQGANPriorForCausalLM, "image_processor": VQGANImageProcessor}


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    """A healthy pipeline folder: `vqgan/`, `transformer/`, `image_processor/` and model_index.json."""
    folder = tmp_path_factory.mktemp("loading") / "pipe"
    tiny_pipeline(tiny_vqgan(**small_vqgan_config()), tiny_prior(**prior_config())).save_pretrained(folder)
    return folder


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":  # a copy or download cut short
        path.write_bytes(data[: len(data) // 2])
    elif how == "binary":  # another file's bytes where JSON or safetensors should be
        path.write_bytes(bytes(torch.randint(128, 256, (300,), generator=torch.Generator().manual_seed(0)).tolist()))
    else:
        raise ValueError(how)


# (component folder, file, damage, what the message says besides the file's path)
DAMAGED_FILES = [
    ("vqgan", "config.json", "missing", "holds no config.json"),
    ("vqgan", "config.json", "empty", "is empty"),
    ("vqgan", "config.json", "truncated", "is not valid JSON"),
    ("vqgan", "diffusion_pytorch_model.safetensors", "missing", "no weights: expected diffusion_pytorch_model"),
    ("vqgan", "diffusion_pytorch_model.safetensors", "empty", "too short to be a safetensors file"),
    ("vqgan", "diffusion_pytorch_model.safetensors", "truncated", "is truncated: its header describes"),
    ("transformer", "config.json", "missing", "holds no config.json"),
    ("transformer", "config.json", "binary", "is not UTF-8 text"),
    ("transformer", "generation_config.json", "truncated", "is not valid JSON"),
    ("transformer", "model.safetensors", "missing", "no weights: expected model.safetensors"),
    ("transformer", "model.safetensors", "truncated", "is truncated: its header describes"),
    ("transformer", "model.safetensors", "binary", "is not a complete safetensors file"),
    ("image_processor", "preprocessor_config.json", "empty", "is empty"),
    ("image_processor", "preprocessor_config.json", "truncated", "is not valid JSON"),
]


@pytest.mark.parametrize("component, filename, how, message", DAMAGED_FILES)
def test_a_damaged_file_is_named_by_its_loader_and_the_pipeline(saved_pipeline, tmp_path, component, filename, how,
                                                                 message):  # fmt: skip
    root = shutil.copytree(saved_pipeline, tmp_path / "pipe")
    damaged = root / component / filename
    _damage(damaged, how)
    named = re.escape(str(damaged if how != "missing" else damaged.parent)) + r"[\s\S]*" + re.escape(message)
    with pytest.raises(OSError, match=named) as component_error:
        COMPONENT_CLASSES[component].from_pretrained(root / component)
    with pytest.raises(OSError, match=named) as pipeline_error:
        load_pipeline(root)
    for error in (component_error.value, pipeline_error.value):
        assert "\n" not in str(error)  # one line, for the command line's `error:` prefix
        assert isinstance(error, FileNotFoundError if how == "missing" else CorruptFileError)


def test_healthy_folders_load_unchanged(saved_pipeline):
    pipe = load_pipeline(saved_pipeline)
    vqgan = VQGANModel.from_pretrained(saved_pipeline, subfolder="vqgan")
    prior = VQGANPriorForCausalLM.from_pretrained(saved_pipeline / "transformer")
    assert all(torch.equal(vqgan.state_dict()[k], v) for k, v in pipe.vqgan.state_dict().items())
    assert all(torch.equal(prior.state_dict()[k], v) for k, v in pipe.transformer.state_dict().items())


# ---------------------------------------------------------------------------------------- folder mix-ups (#14.11)
@pytest.mark.parametrize("component", sorted(COMPONENT_CLASSES))
def test_a_pipeline_root_given_to_a_model_class_names_the_subfolder(saved_pipeline, component):
    cls = COMPONENT_CLASSES[component]
    expected = f"did you mean `{cls.__name__}.from_pretrained({str(saved_pipeline)!r}, subfolder={component!r})`?"
    with pytest.raises(FileNotFoundError, match=re.escape(expected)):
        cls.from_pretrained(saved_pipeline)
    cls.from_pretrained(saved_pipeline, subfolder=component)  # what the message says works


def test_the_subfolder_named_is_read_from_model_index(saved_pipeline, tmp_path):
    root = shutil.copytree(saved_pipeline, tmp_path / "pipe")
    os.replace(root / "vqgan", root / "tokenizer")
    index = json.loads((root / "model_index.json").read_text())
    index["tokenizer"] = index.pop("vqgan")
    (root / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match=re.escape("subfolder='tokenizer'")):
        VQGANModel.from_pretrained(root)
    with pytest.raises(FileNotFoundError, match=r"no subfolder 'vqgan'[\s\S]*'tokenizer'"):
        VQGANModel.from_pretrained(root, subfolder="vqgan")
    assert VQGANModel.from_pretrained(root, subfolder="tokenizer").config.codebook_size == 16


@pytest.mark.parametrize("component", ["vqgan", "transformer"])
def test_a_pipeline_missing_a_component_names_the_component_folder(saved_pipeline, tmp_path, component):
    root = shutil.copytree(saved_pipeline, tmp_path / "pipe")
    shutil.rmtree(root / component)
    expected = f"missing its component folder {root / component} ({COMPONENT_CLASSES[component].__name__}"
    with pytest.raises(FileNotFoundError, match=re.escape(expected)):
        VQGANTransformerPipeline.from_pretrained(root)


def test_a_model_folder_given_to_the_pipeline_names_the_model_classes(saved_pipeline):
    with pytest.raises(FileNotFoundError, match=r"no model_index\.json[\s\S]*VQGANModel\.from_pretrained"):
        VQGANTransformerPipeline.from_pretrained(saved_pipeline / "vqgan")


# ---------------------------------------------------------------------------------------------- the file checks
def test_safetensors_check_reads_the_header_only(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4, 4), "b": torch.ones(3)}, str(path))
    check_safetensors_file(path)  # a whole file passes
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CorruptFileError, match="longer than its header describes"):
        check_safetensors_file(path)
    path.write_bytes(b"\x10\0\0\0\0\0\0\0{not json at all}" + b"\0" * 8)
    with pytest.raises(CorruptFileError, match="corrupt safetensors header"):
        check_safetensors_file(path)


def test_json_check_names_a_list_where_an_object_belongs(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match=r"config\.json holds a JSON list, not an object"):
        read_json_file(tmp_path / "config.json")
