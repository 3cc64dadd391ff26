"""Hub uploads intercepted at `huggingface_hub.HfApi`: nothing leaves the machine, and each call is recorded.

`record_hub_calls(monkeypatch)` replaces `HfApi.create_repo`, `create_branch` and `upload_folder`. The recorded
upload holds the files `upload_folder` would send, filtered by its `allow_patterns` and `ignore_patterns` as
huggingface_hub filters them, with their contents read before the (temporary) folder goes away.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

# 25 plausible files that sit next to a trained model; an upload takes none of them.
STRAY_FILES = [
    "nohup.out", "train.log", "logs/hf_vqgan-vqgan/events.out.tfevents.1", "steps.jsonl", "val/metrics.jsonl",
    "hf_token.txt", ".git-credentials", ".huggingface/token", ".cache/huggingface/token", "stored_tokens",
    "ckpt-100/model.safetensors", "ckpt-100/optimizer.bin", "checkpoints/checkpoint-000002/model.safetensors",
    "old/model.safetensors", "notes.md", "debug.png", "core", ".env", "wandb/run-1/files/config.yaml",
    "screenshot.jpg", "data.parquet", "id_rsa", "run.sh", "config.yaml", "vqgan/diffusion_pytorch_model.bin",
]  # fmt: skip


def write_stray_files(folder: Path) -> None:
    """Write `STRAY_FILES` under `folder`, each holding its own name."""
    for name in STRAY_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())


def record_hub_calls(monkeypatch) -> dict[str, list[dict]]:
    """`{"create_repo": [...], "create_branch": [...], "upload": [...]}`, one dict of arguments per call; an upload
    has `files` (`{path in repo: bytes}`) and the `token` of the `HfApi` that made it."""
    calls: dict[str, list[dict]] = {"create_repo": [], "create_branch": [], "upload": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append(dict(repo_id=repo_id, token=self.token, **kwargs))
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, **kwargs):
        calls["create_branch"].append(dict(repo_id=repo_id, branch=branch, token=self.token, **kwargs))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        names = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        ignore = list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS
        kept = filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore)
        files = {name: Path(folder_path, name).read_bytes() for name in kept}
        calls["upload"].append(dict(repo_id=repo_id, files=files, token=self.token, **kwargs))
        url = f"https://huggingface.co/{repo_id}/commit/abc"
        pr_url = f"https://huggingface.co/{repo_id}/discussions/1" if kwargs.get("create_pr") else None
        return SimpleNamespace(commit_url=url, pr_url=pr_url)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls
