"""Model cards from `model_cards/` templates, and uploads that share only the model folder."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, upload_folder
from huggingface_hub import create_repo as _create_repo

# What never leaves the machine unless a user asks: training state, logs, credentials. Patterns are fnmatch-style
# on paths relative to the folder, where `*` also matches `/`: "*.pkl" excludes pickles at any depth.
PUSH_IGNORE_PATTERNS = [
    # Training state: checkpoints and what an interrupted save leaves behind. A model folder is safetensors + JSON,
    # so pickles of any kind (optimizer, scheduler, sampler and RNG states, old-style checkpoints) never go.
    "checkpoints/*",
    "checkpoint-*",
    "*/checkpoint-*",
    "*training_state.json",
    "*training_state.safetensors",
    "*.bin",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.ckpt",
    ".tmp-*",
    "*/.tmp-*",
    "*.tmp",
    # Logs, caches and tokenised data.
    "logs/*",
    "runs/*",
    "wandb/*",
    "tokenized/*",
    ".cache/*",
    "*/.cache/*",
    # Credentials and environment.
    "*token",
    "*.token",
    "*.env",
    "*.netrc",
    ".huggingface/*",
    "*/.huggingface/*",
    "*.pem",
    "*.key",
]


def template_path(name: str) -> Path:
    """The card template `model_cards/{name}.md` (from the source tree, or as installed with the package)."""
    source_tree = Path(__file__).resolve().parents[2] / "model_cards" / f"{name}.md"
    if source_tree.is_file():
        return source_tree
    try:
        installed = resources.files("hf_vqgan.model_cards") / f"{name}.md"
    except ModuleNotFoundError:  # an installation that ships no templates
        installed = None
    if installed is not None and installed.is_file():
        return Path(str(installed))
    raise FileNotFoundError(f"No model card template named {name!r} (looked for {source_tree}).")


def render_model_card(
    template: str,
    *,
    tags: list[str] | None = None,
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    pipeline_tag: str | None = None,
    **fields,
) -> ModelCard:
    """Fill `model_cards/{template}.md` with `fields`; metadata goes into the card's YAML header."""
    card_data = ModelCardData(
        library_name="hf_vqgan",
        license="apache-2.0",
        tags=["hf_vqgan", "vqgan", "image-tokenizer", *(tags or [])],
        datasets=datasets or None,
        pipeline_tag=pipeline_tag,
    )
    formatted = {
        name: f"{value:.4g}" if isinstance(value, float) else value for name, value in (metrics or {}).items()
    }
    fields.setdefault("repo_id", "path/to/this/folder")
    fields.setdefault("grid_file", None)
    return ModelCard.from_template(card_data, template_path=str(template_path(template)), metrics=formatted, **fields)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload with hf_vqgan",
    extra_ignore_patterns: list[str] | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` without checkpoints, optimizer states, logs or tokens."""
    _create_repo(repo_id, private=private, token=token, exist_ok=True)
    info = upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        token=token,
        commit_message=commit_message,
        ignore_patterns=PUSH_IGNORE_PATTERNS + list(extra_ignore_patterns or []),
    )
    return getattr(info, "commit_url", str(info))
