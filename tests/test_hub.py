"""`hf_vqgan.hub`: model cards rendered from `model_cards/`, and uploads that leave training state behind (the Hub
calls are intercepted; nothing leaves the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

import hf_vqgan.hub
from hf_vqgan.hub import push_folder_to_hub, render_model_card, template_path

VQGAN_FIELDS = dict(
    model_name="vqgan-digits", resolution=16, latent_height=8, latent_width=8, codebook_size=32, in_channels=1,
    dataset_description="Digits.", loss_description="l1 pixel", training_description="6 steps.", model_config="{}",
)  # fmt: skip


@pytest.mark.parametrize("name", ["vqgan", "pipeline"])
def test_template_path_finds_the_templates(name):
    path = template_path(name)
    assert path.name == f"{name}.md" and path.read_text().startswith("---\n{{ card_data }}\n---")


def test_template_path_names_a_missing_template():
    with pytest.raises(FileNotFoundError, match="'nonexistent'"):
        template_path("nonexistent")


def test_render_model_card_fills_metadata_and_fields():
    card = render_model_card(
        "vqgan", repo_id="user/vqgan-digits", tags=["digits"], datasets=["user/digits"],
        metrics={"rfid": 12.345678, "steps": 6}, grid_file="reconstructions.png", **VQGAN_FIELDS,
    )  # fmt: skip
    assert isinstance(card, ModelCard)
    data = card.data.to_dict()
    assert data["library_name"] == "hf_vqgan" and data["license"] == "apache-2.0"
    assert data["tags"] == ["hf_vqgan", "vqgan", "image-tokenizer", "digits"]
    assert data["datasets"] == ["user/digits"]
    assert "pipeline_tag" not in data
    text = str(card)
    assert "# vqgan-digits" in text
    assert 'VQGANModel.from_pretrained("user/vqgan-digits")' in text
    assert "torch.rand(1, 1, 16, 16)" in text and "(1, 8, 8) code indices" in text
    assert "| rfid | 12.35 |" in text and "| steps | 6 |" in text  # floats to 4 significant digits
    assert "(reconstructions.png)" in text
    # The rendered text parses back to the same metadata, as the Hub will read it.
    assert ModelCard(text).data.to_dict() == data


def test_render_model_card_defaults():
    card = render_model_card("vqgan", pipeline_tag="image-to-image", **VQGAN_FIELDS)
    text = str(card)
    assert 'from_pretrained("path/to/this/folder")' in text  # repo_id default
    assert ".png)" not in text  # no grid, no image link
    assert card.data.pipeline_tag == "image-to-image" and card.data.datasets is None


@pytest.fixture
def hub_calls(monkeypatch):
    """Records `create_repo` and `upload_folder` calls; the upload lists the files it would send."""
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = dict(repo_id=repo_id, **kwargs)

    def fake_upload_folder(*, repo_id, folder_path, ignore_patterns=None, **kwargs):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        calls["upload"] = dict(
            repo_id=repo_id, files=sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns)), **kwargs
        )
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(hf_vqgan.hub, "_create_repo", fake_create_repo)
    monkeypatch.setattr(hf_vqgan.hub, "upload_folder", fake_upload_folder)
    return calls


def test_push_folder_to_hub_leaves_training_state_behind(tmp_path, hub_calls):
    shared = [
        "README.md", "model_index.json", "samples.png", "metrics.json", "training_args.json",
        "vqgan/config.json", "vqgan/diffusion_pytorch_model.safetensors",
        "transformer/config.json", "transformer/model.safetensors",
    ]  # fmt: skip
    private = [
        "checkpoints/checkpoint-4/model.safetensors", "checkpoints/checkpoint-4/optimizer.bin",
        "checkpoint-2/random_states_0.pkl", "logs/events.out.tfevents", "tokenized/train.npy",
        "vqgan/optimizer.bin", "hub.token", ".env", "vqgan/.cache/lock", ".tmp-upload",
    ]  # fmt: skip
    for name in shared + private:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    url = push_folder_to_hub(tmp_path, "user/model", private=True, token="hf_secret", commit_message="Upload it")
    assert url == "https://huggingface.co/user/model/commit/1"
    assert hub_calls["create_repo"] == dict(repo_id="user/model", private=True, token="hf_secret", exist_ok=True)
    upload = hub_calls["upload"]
    assert upload["files"] == sorted(shared)
    assert upload["commit_message"] == "Upload it" and upload["token"] == "hf_secret"


def test_push_folder_to_hub_extra_ignore_patterns(tmp_path, hub_calls):
    for name in ("model.safetensors", "samples.png"):
        (tmp_path / name).write_bytes(b"x")
    push_folder_to_hub(tmp_path, "user/model", extra_ignore_patterns=["*.png"])
    assert hub_calls["upload"]["files"] == ["model.safetensors"]
