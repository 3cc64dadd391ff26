"""Safe loading and uploading (issue 9): what is saved is safetensors + JSON, nothing loaded by default unpickles,
loading needs no remote code, and uploads leave training state, logs and credentials behind.

Also covered elsewhere: reading an original taming checkpoint that needs pickle is refused unless `allow_pickle` /
`--allow-pickle` is given (tests/convert/test_taming.py), and upload calls themselves (tests/test_hub.py).
"""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoConfig, AutoModelForCausalLM

import hf_vqgan.hub
from hf_vqgan import VQGANModel, VQGANPriorConfig, VQGANPriorForCausalLM, VQGANTransformerPipeline
from hf_vqgan.hub import PUSH_IGNORE_PATTERNS
from hf_vqgan.models.prior_config import AUTO_MAP, AUTO_MAP_MODULE, AUTO_MAP_SOURCE
from hf_vqgan.pipelines import pipeline_vqgan_transformer as pipeline_module
from hf_vqgan.pipelines.pipeline_vqgan_transformer import PIPELINE_MODULE
from testing_utils import small_vqgan_config, tiny_prior, tiny_vqgan

TINY_VQGAN = small_vqgan_config(sample_size=8)
SAFE_SUFFIXES = {".safetensors", ".json", ".md"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tokenizer, a prior and a pipeline, each saved to its own folder."""
    vqgan = tiny_vqgan(**TINY_VQGAN)
    prior = tiny_prior(None, latent_height=4, latent_width=4, num_classes=2, n_embd=16)
    root = tmp_path_factory.mktemp("saved")
    vqgan.save_pretrained(root / "vqgan")
    prior.save_pretrained(root / "prior")
    VQGANTransformerPipeline(vqgan=vqgan, transformer=prior).save_pretrained(root / "pipeline")
    return root, vqgan, prior


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# The only code files a saved folder may carry: the import-only modules the generic loaders name (transformers'
# `auto_map`, diffusers' `_class_name`), each exactly the text the library writes, holding no model code.
IMPORT_ONLY_MODULES = {
    f"{AUTO_MAP_MODULE}.py": AUTO_MAP_SOURCE,
    f"{PIPELINE_MODULE}.py": pipeline_module._PIPELINE_MODULE_SOURCE,
}


@pytest.mark.parametrize("name", ["vqgan", "prior", "pipeline"])
def test_saved_folders_hold_only_safetensors_json_and_import_only_modules(saved, name):
    root, _, _ = saved
    files = _files(root / name)
    modules = [p for p in files if p.suffix == ".py"]
    assert files and {p.suffix for p in files} <= SAFE_SUFFIXES | {".py"}, [p.name for p in files]
    assert any(p.suffix == ".safetensors" for p in files)
    for path in modules:
        assert IMPORT_ONLY_MODULES.get(path.name) == path.read_text(), path
        source = ast.parse(path.read_text())
        assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in source.body), path
        imports = [node.module for node in source.body if isinstance(node, ast.ImportFrom)]
        assert imports and all(module.split(".")[0] == "hf_vqgan" for module in imports), imports
    for path in files:  # configs name no code but those modules
        if path.suffix == ".json":
            config = json.loads(path.read_text())
            assert "custom_pipeline" not in config, path
            assert config.get("auto_map", AUTO_MAP) == AUTO_MAP, path
    assert {p.name for p in modules} == {
        "vqgan": set(),
        "prior": {f"{AUTO_MAP_MODULE}.py"},
        "pipeline": {f"{AUTO_MAP_MODULE}.py", f"{PIPELINE_MODULE}.py"},
    }[name]


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every way of unpickling fail loudly for the duration of a test."""

    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled while loading")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)


def test_loading_a_model_or_pipeline_never_unpickles_nor_needs_remote_code(saved, no_unpickling):
    root, vqgan, prior = saved
    loaded_vqgan = VQGANModel.from_pretrained(root / "vqgan")
    loaded_prior = VQGANPriorForCausalLM.from_pretrained(root / "prior")
    # The Auto classes resolve "vqgan_prior" from the installed library: no trust_remote_code.
    auto_config = AutoConfig.from_pretrained(root / "prior")
    auto_prior = AutoModelForCausalLM.from_pretrained(root / "prior")
    pipe = VQGANTransformerPipeline.from_pretrained(root / "pipeline")
    assert type(auto_config) is VQGANPriorConfig and type(auto_prior) is VQGANPriorForCausalLM
    for model, reference in [(loaded_vqgan, vqgan), (pipe.vqgan, vqgan), (loaded_prior, prior), (auto_prior, prior),
                             (pipe.transformer, prior)]:  # fmt: skip
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())


def test_resuming_a_training_checkpoint_reads_pickles_only_with_weights_only(tmp_path, monkeypatch):
    """accelerate's optimizer, scheduler and RNG files are `torch.save` pickles; the resume must read them with
    `weights_only=True` (no code runs), and the run's own state (counters, EMA, codebook statistics) is
    safetensors + JSON rather than an accelerate custom object, which accelerate would unpickle with
    `weights_only=False`."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from diffusers.training_utils import EMAModel

    from hf_vqgan.training.checkpointing import CheckpointManager
    from hf_vqgan.training.state import TrainingState

    def build():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        accelerator = Accelerator(cpu=True)
        torch.manual_seed(0)
        model = VQGANModel(**TINY_VQGAN, dead_code_steps=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        ema = EMAModel(model.parameters())
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        return accelerator, model, optimizer, scheduler, ema

    try:
        accelerator, model, optimizer, scheduler, ema = build()
        out = model(torch.rand(2, 1, 8, 8) * 2 - 1)
        accelerator.backward(out.sample.abs().mean() + out.quantizer_loss)
        optimizer.step()
        scheduler.step()
        ema.step(model.parameters())
        state = TrainingState(step=1, extras={"quantizer": model.quantizer.statistics_state_dict()})
        folder = CheckpointManager(tmp_path).save(accelerator, 1, write_extra=lambda f: state.save(f, ema))
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix not in SAFE_SUFFIXES)
        assert pickles and not [name for name in pickles if name.startswith("custom_checkpoint")], pickles

        accelerator, model, optimizer, scheduler, ema = build()
        real_load = torch.load

        def weights_only_load(*args, **kwargs):
            assert kwargs.get("weights_only") is True, f"torch.load({args[0]}) without weights_only=True"
            return real_load(*args, **kwargs)

        monkeypatch.setattr(torch, "load", weights_only_load)
        accelerator.load_state(str(folder))
        restored = TrainingState()
        restored.load(folder, ema)
        assert restored.step == 1 and int(ema.optimization_step) == 1
        assert torch.equal(restored.extras["quantizer"]["usage_step"], state.extras["quantizer"]["usage_step"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


# ------------------------------------------------------------------------------------------------ uploads
MODEL_FOLDER = [
    "README.md", "model_index.json", "metrics.json", "training_args.json", "samples.png", "reconstructions.png",
    "config.json", "diffusion_pytorch_model.safetensors", "vqgan/config.json",
    "vqgan/diffusion_pytorch_model.safetensors", "transformer/config.json", "transformer/generation_config.json",
    "transformer/model.safetensors",
]  # fmt: skip
NEVER_UPLOADED = [
    # checkpoints, wherever they are, and what an interrupted save leaves
    "checkpoints/latest", "checkpoints/checkpoint-000002/model.safetensors", "checkpoints/checkpoint-000002/optimizer.bin",
    "checkpoints/checkpoint-000002/training_state.json", "checkpoints/.tmp-checkpoint-000004/model.safetensors",
    "checkpoint-000006/model.safetensors", "vqgan/checkpoint-1/model.safetensors",
    # accelerate's and our training state files, if they sit in the folder itself
    "optimizer.bin", "optimizer_1.bin", "scheduler.bin", "sampler.bin", "random_states_0.pkl",
    "custom_checkpoint_0.pkl", "training_state.json", "training_state.safetensors", "vqgan/optimizer.bin",
    "transformer/random_states_1.pkl", "pytorch_model.bin", "last.ckpt", "model.pt", "metrics.json.tmp",
    ".tmp-latest.123",
    # logs, caches, tokenised data
    "logs/hf_vqgan-vqgan/events.out.tfevents.1", "runs/x/events", "wandb/run-1/files/config.yaml",
    "tokenized/abc/data.arrow", ".cache/huggingface/upload.lock", "vqgan/.cache/lock",
    # credentials and environment
    "hf.token", "token", ".env", "vqgan/.env", "prod.env", ".netrc", ".huggingface/token", "id.pem", "server.key",
]  # fmt: skip


def test_push_ignore_patterns_keep_only_the_model_folder():
    uploaded = list(filter_repo_objects(MODEL_FOLDER + NEVER_UPLOADED, ignore_patterns=PUSH_IGNORE_PATTERNS))
    assert sorted(uploaded) == sorted(MODEL_FOLDER)


def test_pipeline_push_to_hub_uploads_only_the_saved_pipeline(saved, tmp_path, monkeypatch):
    import shutil

    root, _, _ = saved
    folder = tmp_path / "pipeline"
    shutil.copytree(root / "pipeline", folder)
    pipe = VQGANTransformerPipeline.from_pretrained(folder)
    for name in NEVER_UPLOADED:  # training leftovers next to the files the pipeline was loaded from
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    uploads = {}

    def fake_push(upload_folder, repo_id, **kwargs):
        files = {p.relative_to(upload_folder).as_posix(): p.read_bytes() for p in Path(upload_folder).rglob("*")
                 if p.is_file()}  # fmt: skip
        uploads[repo_id] = (files, kwargs)
        return f"https://huggingface.co/{repo_id}/commit/1"

    monkeypatch.setattr(hf_vqgan.hub, "push_folder_to_hub", fake_push)
    pipe.push_to_hub("user/pipe", token="hf_secret")
    files, kwargs = uploads["user/pipe"]
    saved_files = {p.relative_to(root / "pipeline").as_posix() for p in _files(root / "pipeline")}
    assert set(files) == saved_files | {"README.md"}  # what save_pretrained writes, and a model card
    assert kwargs["token"] == "hf_secret"  # the token authenticates the upload, and is in no uploaded file
    assert not any(b"hf_secret" in content for content in files.values())


# ------------------------------------------------------------------------------------ push_to_hub options (issue 14)
@pytest.fixture
def hub(monkeypatch):
    from hub_recorder import record_hub_calls

    return record_hub_calls(monkeypatch)


def test_pipeline_push_to_hub_forwards_pull_request_variant_and_commit_options(saved, hub):
    root, _, _ = saved
    pipe = VQGANTransformerPipeline.from_pretrained(root / "pipeline")
    url = pipe.push_to_hub("me/x", create_pr=True, variant="fp16", private=True, token="hf_secret",
                           commit_message="Add fp16 weights")  # fmt: skip
    assert url == "https://huggingface.co/me/x/discussions/1"  # the pull request, not a commit on main
    assert hub["create_repo"] == [dict(repo_id="me/x", token="hf_secret", private=True, exist_ok=True)]
    (upload,) = hub["upload"]
    assert upload["create_pr"] is True and upload["revision"] is None and upload["token"] == "hf_secret"
    assert upload["commit_message"] == "Add fp16 weights"
    weights = sorted(name for name in upload["files"] if name.endswith(".safetensors"))
    assert weights == ["transformer/model.fp16.safetensors", "vqgan/diffusion_pytorch_model.fp16.safetensors"]
    card = upload["files"]["README.md"].decode()
    assert "create_pr" not in card and "fp16" not in card  # options are not card fields


def test_push_to_hub_commits_to_a_branch(saved, hub):
    root, vqgan, _ = saved
    VQGANTransformerPipeline.from_pretrained(root / "pipeline").push_to_hub("me/x", revision="dev")
    vqgan.push_to_hub("me/tok", revision="dev")
    assert [call["branch"] for call in hub["create_branch"]] == ["dev", "dev"]
    assert [(call["repo_id"], call["revision"], call["create_pr"]) for call in hub["upload"]] == [
        ("me/x", "dev", False),
        ("me/tok", "dev", False),
    ]


def test_push_to_hub_refuses_unknown_options(saved, hub):
    root, vqgan, _ = saved
    pipe = VQGANTransformerPipeline.from_pretrained(root / "pipeline")
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['create_pull_request'\]"):
        pipe.push_to_hub("me/x", create_pull_request=True)
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['branch'\]"):
        vqgan.push_to_hub("me/x", branch="dev")
    assert hub["upload"] == []


def test_vqgan_push_to_hub_uploads_the_projects_card_and_the_saved_files_only(saved, hub, tmp_path):
    from hub_recorder import STRAY_FILES, write_stray_files

    root, vqgan, _ = saved
    url = vqgan.push_to_hub("me/tok", create_pr=True, variant="fp16", token="hf_secret",
                            dataset_description="Shapes.")  # fmt: skip
    assert url.endswith("/discussions/1")
    (upload,) = hub["upload"]
    assert sorted(upload["files"]) == ["README.md", "config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert upload["create_pr"] is True and upload["token"] == "hf_secret"
    card = upload["files"]["README.md"].decode()
    assert "library_name: hf_vqgan" in card and "# tok" in card and "Shapes." in card  # not diffusers' generic card
    assert 'VQGANModel.from_pretrained("me/tok")' in card and "vqgan.tokenize(pixels)" in card

    # Loaded from a trained folder: its card and the grid the card shows go along, its other files do not.
    folder = tmp_path / "trained"
    vqgan.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: hf_vqgan\n---\n# trained\n![r](reconstructions.png)\n")
    (folder / "reconstructions.png").write_bytes(b"png")
    write_stray_files(folder)
    VQGANModel.from_pretrained(folder).push_to_hub("me/trained")
    files = hub["upload"][-1]["files"]
    assert sorted(files) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors", "reconstructions.png"]
    assert files["README.md"].startswith(b"---\nlibrary_name: hf_vqgan\n---\n# trained")
    assert not set(files) & set(STRAY_FILES)
    assert not any(str(tmp_path).encode() in content for content in files.values())  # no local `_name_or_path`
