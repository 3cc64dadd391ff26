"""Training checkpoints that survive a kill and prove they are complete: written aside, renamed, pointed at.

Layout under `output_dir/checkpoints/`:

    checkpoint-000100/     a complete `accelerator.save_state` folder (models, optimizers, schedulers, RNG, extras)
        manifest.json      written last: every other file's name, size and SHA-256
    checkpoint-000200/
    latest                 a text file naming the newest complete checkpoint folder
    .tmp-checkpoint-000300/  a save in progress; never read, removed at the next start

A checkpoint only gets its final name once every process has finished writing it, its files and manifest are flushed
to disk (`fsync`) and `latest` is replaced atomically afterwards, so neither a kill nor a power cut leaves `latest`
pointing at a partial checkpoint. A resume checks every file the manifest names: `latest` skips a corrupt newest
checkpoint (with a warning naming the file) for the newest intact one; a corrupt checkpoint named explicitly is
refused (`CheckpointError`, naming the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LATEST = "latest"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
RNG_STATES = "random_states_{}.pkl"  # accelerate's per-process RNG file


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from exactly; the message names the file and what to do."""


# ------------------------------------------------------------------------------------------- files on disk
def _fsync_directory(path: Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk; directories cannot be opened on Windows."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _checkpoint_files(folder: Path) -> list[str]:
    """Every file under `folder` but the manifest, as sorted POSIX paths relative to it."""
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(name for name in found if name != MANIFEST)


def _digest_and_sync(path: Path) -> str:
    """SHA-256 of a file, which is flushed to disk on the way (`fsync` of any descriptor flushes the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest()


def _table_digest(files: dict) -> str:
    """SHA-256 of the manifest's file table: a damaged manifest is told apart from the files it describes."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: str | os.PathLike) -> Path:
    """
    Flush every file of a written checkpoint folder to disk and record it in `manifest.json` (name, size in bytes,
    SHA-256), written last and flushed too: a folder with a manifest that matches its files is complete.
    """
    folder = Path(folder)
    files = {}
    for name in _checkpoint_files(folder):
        path = folder / name
        files[name] = {"size": path.stat().st_size, "sha256": _digest_and_sync(path)}
    manifest = folder / MANIFEST
    payload = {"version": MANIFEST_VERSION, "files": files, "sha256": _table_digest(files)}
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync_directory(folder)
    return manifest


def _read_manifest(folder: Path) -> dict[str, dict]:
    """The `files` table of `folder`'s manifest; a `CheckpointError` naming it when missing or unreadable."""
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the checkpoint is incomplete (its save was interrupted, or hf_vqgan's "
            "CheckpointManager did not write it). To vouch for a checkpoint saved before hf_vqgan wrote manifests, "
            'run `python -c "from hf_vqgan.training.checkpointing import write_manifest; '
            f"write_manifest('{folder}')\"`."
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
        files = manifest["files"]
        if manifest["version"] != MANIFEST_VERSION:
            raise ValueError(f"version {manifest['version']!r}, expected {MANIFEST_VERSION}")
        if manifest["sha256"] != _table_digest(files):
            raise ValueError("its file table does not match its checksum")
        if not all(isinstance(entry["size"], int) and isinstance(entry["sha256"], str) for entry in files.values()):
            raise ValueError("a file entry without an integer size and a SHA-256")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} is corrupt ({type(error).__name__}: {error}).") from None
    return files


def verify_checkpoint(folder: str | os.PathLike, num_processes: int = 1) -> None:
    """
    Raise `CheckpointError`, naming the file, unless every file `folder`'s manifest lists is there with its size
    and checksum, and the RNG states of each of `num_processes` processes are among them (without its own RNG
    states a process would resume with other random numbers: a different run, not a resume).
    """
    folder = Path(folder)
    files = _read_manifest(folder)
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (the checkpoint's {MANIFEST} lists it).")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(
                f"{path} is {size} bytes, but {entry['size']} were written: it was truncated or overwritten."
            )
        if _digest_and_sync(path) != entry["sha256"]:
            raise CheckpointError(f"{path} does not match its SHA-256 in {MANIFEST}: the file is corrupt.")
    saved_by = sum(1 for name in files if re.fullmatch(RNG_STATES.format(r"\d+"), name))
    for index in range(num_processes):
        if RNG_STATES.format(index) not in files:
            raise CheckpointError(
                f"{folder / RNG_STATES.format(index)} is missing: the checkpoint holds the RNG states of "
                f"{saved_by} process(es), this run has {num_processes}. Resume with {saved_by} process(es)."
            )


# ------------------------------------------------------------------------------------------------ the manager
class CheckpointManager:
    """Saves, lists, prunes and resolves training checkpoints for one run.

    Args:
        directory: where checkpoints live (usually `output_dir/checkpoints`).
        total_limit: keep at most this many complete checkpoints (`None` keeps all). The newest complete one is
            never deleted.
    """

    def __init__(self, directory: str | os.PathLike, total_limit: int | None = None):
        if total_limit is not None and total_limit < 1:
            raise ValueError(f"`checkpoints_total_limit` must be >= 1 or None, got {total_limit}.")
        self.directory = Path(directory)
        self.total_limit = total_limit

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoint folders (renamed into place, not necessarily verified), oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return [p for _, p in sorted(found)]

    def _pointed_at(self) -> Path | None:
        """The folder `latest` names, or None (with a warning) when it is missing, garbled or names nothing."""
        pointer = self.directory / LATEST
        if not pointer.is_file():
            return None
        name = pointer.read_bytes().decode("utf-8", errors="replace").strip()
        target = self.directory / name
        if _CHECKPOINT.match(name) and target.is_dir():
            return target
        logger.warning("`%s` names %r, not a checkpoint folder; using the newest complete checkpoint.", pointer, name)
        return None

    def latest(self) -> Path | None:
        """The checkpoint `latest` points at, falling back to the newest complete folder (no files are checked)."""
        pointed = self._pointed_at()
        if pointed is not None:
            return pointed
        complete = self.complete_checkpoints()
        return complete[-1] if complete else None

    def _candidates(self) -> list[Path]:
        """Checkpoints a `latest` resume may use, best first: the one `latest` names, then older ones, newest first.
        (Newer folders than `latest`'s are from a branch abandoned by resuming from an older checkpoint.)"""
        complete = self.complete_checkpoints()
        pointed = self._pointed_at()
        if pointed is None:
            return complete[::-1]
        step = int(_CHECKPOINT.match(pointed.name).group(1))
        return [pointed, *(p for p in reversed(complete) if int(_CHECKPOINT.match(p.name).group(1)) < step)]

    def resolve(self, resume_from: str | None, num_processes: int = 1) -> Path | None:
        """
        Turn `--resume_from_checkpoint` (`latest`, a path, or None) into a verified checkpoint folder, or None.

        `latest` uses the newest checkpoint whose files all match its manifest, warning about (and naming the
        file of) each newer one that does not; a `CheckpointError` if checkpoints exist but none is intact. A path
        must be an intact checkpoint, else `CheckpointError` names the bad file.
        """
        if resume_from is None:
            return None
        if resume_from == "latest":
            return self._newest_intact(num_processes)
        path = Path(resume_from)
        if not path.is_dir():
            raise CheckpointError(
                f"--resume_from_checkpoint {resume_from!r} is not a checkpoint folder; pass 'latest' or a path "
                f"such as {self.directory / 'checkpoint-000100'}."
            )
        try:
            verify_checkpoint(path, num_processes)
        except CheckpointError as error:
            message = f"Cannot resume from {path}: {error}"
            raise CheckpointError(
                f"{message} Pass another checkpoint, or 'latest' for the newest intact one."
            ) from None
        return path

    def _newest_intact(self, num_processes: int) -> Path | None:
        problems = []
        for candidate in self._candidates():
            try:
                verify_checkpoint(candidate, num_processes)
            except CheckpointError as error:
                logger.warning("Skipping checkpoint %s: %s", candidate.name, error)
                problems.append(str(error))
                continue
            if problems:
                logger.warning("Resuming from %s, the newest intact checkpoint.", candidate)
            return candidate
        if problems:
            raise CheckpointError(
                f"No intact checkpoint in {self.directory}: {' '.join(problems)} Move the folder aside to start from "
                "scratch."
            )
        logger.info("No checkpoint in %s: starting from scratch.", self.directory)
        return None

    def clean_incomplete(self) -> None:
        """Remove saves that a kill interrupted (main process only)."""
        if self.directory.is_dir():
            for p in self.directory.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def save(self, accelerator, step: int, write_extra: Callable[[Path], None] | None = None) -> Path:
        """Write `checkpoint-{step}` through `accelerator.save_state`, atomically, then prune old ones.

        `write_extra(folder)`, called on the main process, adds files of its own (e.g. `TrainingState.save`) before
        the manifest is written and the folder gets its final name.
        """
        name = f"checkpoint-{step:06d}"
        final = self.directory / name
        tmp = self.directory / f"{TMP_PREFIX}{name}"
        if accelerator.is_main_process:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if write_extra is not None:
                write_extra(tmp)
            write_manifest(tmp)  # last: its presence says every other file is complete and on disk
            if final.exists():
                # A re-run of the same step after resuming from an older checkpoint. Move the old folder aside in one
                # rename rather than deleting it in place: a kill mid-deletion would leave a partial folder under a
                # final name. (`latest` may then point at a missing folder for a moment; `latest()` falls back.)
                stale = self.directory / f"{TMP_PREFIX}stale-{name}"
                shutil.rmtree(stale, ignore_errors=True)
                os.replace(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, final)
            _fsync_directory(self.directory)
            _atomic_write_text(self.directory / LATEST, name)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _prune(self) -> None:
        if self.total_limit is None:
            return
        complete = self.complete_checkpoints()
        newest = self.latest()
        excess = len(complete) - self.total_limit
        for path in complete:
            if excess <= 0:
                break
            if path == newest:
                continue
            shutil.rmtree(path, ignore_errors=True)
            excess -= 1
