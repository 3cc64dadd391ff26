"""Model cards from `model_cards/` templates, and uploads of exactly the files a model folder is made of.

Every upload is an allow-list: `push_saved_to_hub` uploads what `save_pretrained` writes into an empty temporary
folder, plus the files it is handed by name (the card, a sample grid, the run's metrics); nothing else that sits next
to a trained model (checkpoints, logs, `nohup.out`, credentials) can reach the Hub.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import filter_repo_objects

# A second fence behind the allow-list: files that are never uploaded, even when named (a `save` that wrote one is a
# bug). Patterns are fnmatch-style on paths relative to the folder, where `*` also matches `/`.
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
    fields.setdefault("curves_file", None)
    return ModelCard.from_template(card_data, template_path=str(template_path(template)), metrics=formatted, **fields)


RENDER_ARGUMENTS = ("tags", "datasets", "metrics", "pipeline_tag")


def template_fields(template: str) -> set[str]:
    """The names `model_cards/{template}.md` fills in, and the metadata `render_model_card` takes."""
    import jinja2
    from jinja2 import meta

    source = template_path(template).read_text(encoding="utf-8")
    return meta.find_undeclared_variables(jinja2.Environment().parse(source)) | set(RENDER_ARGUMENTS)


def check_card_fields(template: str, fields: Mapping, also: Iterable[str] = ()) -> None:
    """Refuse card fields the template does not use: a misspelt upload option (`create_pr`, `variant`, ...) would
    otherwise vanish into the card silently."""
    known = template_fields(template) | set(also)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(
            f"push_to_hub() got unknown keyword arguments {unknown}: they are neither upload options nor fields of "
            f"the {template!r} model card ({sorted(known - {'card_data'})})."
        )


def quantizer_description(config) -> str:
    """What a tokenizer's indices point into, in words, for its model card ("a 1024-entry codebook", ...)."""
    quantizer_type = getattr(config, "quantizer_type", "vq")
    if quantizer_type == "fsq":  # FSQ/LFQ (issue 18)
        return (
            f"a fixed grid of {config.codebook_size} codes (finite scalar quantization, FSQ, levels "
            f"{list(config.fsq_levels)}; nothing learned)"
        )
    if quantizer_type == "lfq":
        return (
            f"a fixed grid of {config.codebook_size} codes (lookup-free quantization, LFQ, {config.code_dim} bits; "
            "nothing learned)"
        )
    return f"a {config.codebook_size}-entry codebook"


def vqgan_model_card(
    model, repo_id: str = "path/to/this/folder", resolution: int | None = None, **fields
) -> ModelCard:
    """A model card for the `VQGANModel` `model`, rendered from `model_cards/vqgan.md` (`fields` fill it in)."""
    config = model.config
    resolution = resolution or config.sample_size
    latent_height, latent_width = model.latent_shape(resolution, resolution)
    defaults = dict(
        model_name=repo_id.rstrip("/").split("/")[-1],
        resolution=resolution,
        latent_height=latent_height,
        latent_width=latent_width,
        codebook_size=config.codebook_size,
        quantizer_description=quantizer_description(config),
        in_channels=config.in_channels,
        dataset_description="Not recorded.",
        loss_description="not recorded",
        training_description="",
        model_config=json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, indent=2),
    )
    return render_model_card("vqgan", repo_id=repo_id, **{**defaults, **fields})


# ------------------------------------------------------------------------------------------------------ uploads
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def linked_images(card_text: str, folder: str | os.PathLike) -> dict[str, Path]:
    """The local images `card_text` shows (`![...](samples.png)`) that exist in `folder`: they must travel with it."""
    images = {}
    for link in _IMAGE_LINK.findall(card_text):
        path = Path(folder, link)
        if "://" not in link and not Path(link).is_absolute() and ".." not in Path(link).parts and path.is_file():
            images[Path(link).as_posix()] = path
    return images


def source_folder(model) -> str | None:
    """The local folder `model` (a model or a pipeline) was loaded from, if it was loaded from one."""
    source = getattr(model.config, "_name_or_path", None)
    return source if source and os.path.isdir(source) else None


def card_files(model, model_card, render: Callable[[], ModelCard]) -> dict[str, Path | bytes]:
    """The card to upload with `model` as `{"README.md": text}`, and the local images it shows.

    The card is `model_card` if given, else the `README.md` of the folder `model` was loaded from (the card of a
    trained folder), else `render()`. A card from a folder links that folder's images: those, and only those, go too.
    """
    source = source_folder(model)
    if model_card is not None:
        text = str(model_card)
    elif source and os.path.isfile(os.path.join(source, "README.md")):
        text = Path(source, "README.md").read_text(encoding="utf-8")
    else:
        text = str(render())
    return {**(linked_images(text, source) if source else {}), "README.md": text.encode("utf-8")}


def _drop_local_origins(folder: str | os.PathLike) -> None:
    """Remove `_name_or_path` from saved configs where it is a local path: diffusers records the folder a model was
    loaded from (`/home/me/runs/vqgan`), which says where things are on this machine and nothing to a reader."""
    for path in Path(folder).rglob("*.json"):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        origin = config.get("_name_or_path") if isinstance(config, dict) else None
        if isinstance(origin, str) and (os.path.isabs(origin) or os.path.exists(origin)):
            del config["_name_or_path"]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def push_saved_to_hub(
    repo_id: str,
    save: Callable[[str], None],
    *,
    extra_files: Mapping[str, str | os.PathLike | bytes] | None = None,
    commit_message: str,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    revision: str | None = None,
) -> str:
    """Upload exactly the files `save(folder)` writes into an empty temporary folder, and `extra_files`.

    Args:
        repo_id: the Hub repository, created if needed (`private` applies then).
        save: writes the model folder, e.g. `lambda folder: model.save_pretrained(folder, variant="fp16")`.
        extra_files: `{path in the repo: local file or bytes}`, e.g. the model card as `README.md`.
        commit_message, token: of the commit.
        create_pr: open a pull request instead of committing to the branch.
        revision: the branch to commit to (created from the default branch if missing); not with `create_pr`.

    Returns:
        The URL of the commit (or of the pull request).
    """
    with tempfile.TemporaryDirectory() as folder:
        save(folder)
        _drop_local_origins(folder)
        for name, content in (extra_files or {}).items():
            target = Path(folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
        files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
        return push_folder_to_hub(
            folder, repo_id, files=files, commit_message=commit_message, private=private, token=token,
            create_pr=create_pr, revision=revision,
        )  # fmt: skip


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    files: Iterable[str] | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload with hf_vqgan",
    create_pr: bool = False,
    revision: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload the `files` of `folder` (paths relative to it), nothing else.

    `files=None` uploads every file of `folder` less `PUSH_IGNORE_PATTERNS`, for a folder you assembled yourself; the
    library's own uploads (`push_saved_to_hub`) always pass the list. Listed files that match those patterns are
    refused. See `push_saved_to_hub` for the
    other arguments.
    """
    if create_pr and revision is not None:
        raise ValueError(
            f"Pass either create_pr=True (a pull request against the default branch) or revision={revision!r} (a "
            "commit to that branch), not both."
        )
    allow_patterns = None
    if files is not None:
        files = sorted(files)
        refused = [
            name for name in files if not list(filter_repo_objects([name], ignore_patterns=PUSH_IGNORE_PATTERNS))
        ]
        if refused:
            raise ValueError(f"Refusing to upload {refused}: training state, logs and credentials stay local.")
        allow_patterns = [glob.escape(name) for name in files]  # exact names: `[`, `*`, `?` match only themselves
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, allow_patterns=allow_patterns,
        ignore_patterns=list(PUSH_IGNORE_PATTERNS), create_pr=create_pr, revision=revision,
    )  # fmt: skip
    return getattr(info, "pr_url", None) or getattr(info, "commit_url", str(info))
