"""`hf_vqgan.hub`: model cards rendered from `model_cards/`, and uploads that leave training state behind (the Hub
calls are intercepted; nothing leaves the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_vqgan.hub import check_card_fields, push_folder_to_hub, push_saved_to_hub, render_model_card, template_path
from hub_recorder import STRAY_FILES as STRAY
from hub_recorder import record_hub_calls

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
    return record_hub_calls(monkeypatch)


SAVED = [
    "model_index.json", "vqgan/config.json", "vqgan/diffusion_pytorch_model.safetensors",
    "transformer/config.json", "transformer/model.safetensors",
]  # fmt: skip


def _write(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())


def test_push_folder_to_hub_uploads_only_the_listed_files(tmp_path, hub_calls):
    assert len(STRAY) == 25
    _write(tmp_path, SAVED + ["README.md", "samples.png", "weird[1].json"] + STRAY)
    listed = SAVED + ["README.md", "samples.png", "weird[1].json"]

    url = push_folder_to_hub(tmp_path, "user/model", files=listed, private=True, token="hf_secret",
                             commit_message="Upload it")  # fmt: skip
    assert url == "https://huggingface.co/user/model/commit/abc"
    assert hub_calls["create_repo"] == [dict(repo_id="user/model", private=True, token="hf_secret", exist_ok=True)]
    assert hub_calls["create_branch"] == []
    (upload,) = hub_calls["upload"]
    assert sorted(upload["files"]) == sorted(listed)  # `[1]` is a name, not a character class
    assert upload["commit_message"] == "Upload it" and upload["token"] == "hf_secret"
    assert upload["create_pr"] is False and upload["revision"] is None


def test_push_folder_to_hub_refuses_listed_training_state(tmp_path, hub_calls):
    _write(tmp_path, ["model.safetensors", "optimizer.bin"])
    with pytest.raises(ValueError, match=r"Refusing to upload \['optimizer.bin'\]"):
        push_folder_to_hub(tmp_path, "user/model", files=["model.safetensors", "optimizer.bin"])
    assert hub_calls["upload"] == []


def test_push_folder_to_hub_without_a_list_leaves_training_state_behind(tmp_path, hub_calls):
    """Without a list (a folder the user assembled), the folder goes whole, less the deny-list."""
    shared = ["README.md", "model_index.json", "samples.png", "metrics.json", "training_args.json", *SAVED[1:]]
    private = [
        "checkpoints/checkpoint-4/model.safetensors", "checkpoints/checkpoint-4/optimizer.bin",
        "checkpoint-2/random_states_0.pkl", "logs/events.out.tfevents", "tokenized/train.npy",
        "vqgan/optimizer.bin", "hub.token", ".env", "vqgan/.cache/lock", ".tmp-upload",
    ]  # fmt: skip
    _write(tmp_path, shared + private)
    push_folder_to_hub(tmp_path, "user/model")
    assert sorted(hub_calls["upload"][0]["files"]) == sorted(shared)


@pytest.mark.parametrize(
    "options, branch, upload",
    [
        (dict(create_pr=True), None, dict(create_pr=True, revision=None)),
        (dict(revision="fp16"), "fp16", dict(create_pr=False, revision="fp16")),
        (dict(revision="refs/pr/3"), None, dict(create_pr=False, revision="refs/pr/3")),  # an open PR: no branch
    ],
)
def test_push_saved_to_hub_forwards_pull_requests_and_branches(hub_calls, options, branch, upload):
    url = push_saved_to_hub("user/model", lambda folder: _write(Path(folder), SAVED), commit_message="m", **options)
    assert hub_calls["create_branch"] == ([dict(repo_id="user/model", branch=branch, token=None, exist_ok=True)]
                                          if branch else [])  # fmt: skip
    (call,) = hub_calls["upload"]
    assert {key: call[key] for key in upload} == upload
    assert url.endswith("/discussions/1" if options.get("create_pr") else "/commit/abc")


def test_push_saved_to_hub_refuses_a_pull_request_on_a_branch(hub_calls):
    with pytest.raises(ValueError, match=r"create_pr=True .* or revision='dev'"):
        push_saved_to_hub("user/model", lambda folder: None, commit_message="m", create_pr=True, revision="dev")
    assert hub_calls["create_repo"] == [] and hub_calls["upload"] == []


def test_push_saved_to_hub_uploads_what_save_writes_and_the_named_files(tmp_path, hub_calls):
    _write(tmp_path, ["README.md", *STRAY])
    push_saved_to_hub(
        "user/model", lambda folder: _write(Path(folder), SAVED), commit_message="m",
        extra_files={"README.md": tmp_path / "README.md", "samples.png": b"png"},
    )  # fmt: skip
    files = hub_calls["upload"][0]["files"]
    assert sorted(files) == sorted(SAVED + ["README.md", "samples.png"])
    assert files["README.md"] == b"README.md" and files["samples.png"] == b"png"


def test_unknown_card_fields_are_refused():
    check_card_fields("vqgan", {"dataset_description": "x", "metrics": {}})
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['create_pull_request'\]"):
        check_card_fields("vqgan", {"create_pull_request": True})
