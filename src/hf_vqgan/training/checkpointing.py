"""Training checkpoints that survive a kill: written aside, renamed into place, pointed at by `latest`.

Layout under `output_dir/checkpoints/`:

    checkpoint-000100/     a complete `accelerator.save_state` folder (models, optimizers, schedulers, RNG, extras)
    checkpoint-000200/
    latest                 a text file naming the newest complete checkpoint folder
    .tmp-checkpoint-000300/  a save in progress; never read, removed at the next start

A checkpoint only gets its final name once every process has finished writing it, and `latest` is replaced
atomically afterwards, so a kill at any moment leaves `latest` pointing at a complete checkpoint.
"""

from __future__ import annotations

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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        """Complete checkpoint folders, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint `latest` points at, falling back to the newest complete folder."""
        pointer = self.directory / LATEST
        if pointer.is_file():
            target = self.directory / pointer.read_text(encoding="utf-8").strip()
            if target.is_dir():
                return target
            logger.warning("`%s` points at missing %s; using the newest complete checkpoint.", pointer, target)
        complete = self.complete_checkpoints()
        return complete[-1] if complete else None

    def resolve(self, resume_from: str | None) -> Path | None:
        """Turn `--resume_from_checkpoint` (`latest`, a path, or None) into a checkpoint folder or None."""
        if resume_from is None:
            return None
        if resume_from == "latest":
            found = self.latest()
            if found is None:
                logger.info("No checkpoint in %s: starting from scratch.", self.directory)
            return found
        path = Path(resume_from)
        if not path.is_dir():
            raise ValueError(
                f"--resume_from_checkpoint {resume_from!r} is not a checkpoint folder; pass 'latest' or a path "
                f"such as {self.directory / 'checkpoint-000100'}."
            )
        return path

    def clean_incomplete(self) -> None:
        """Remove saves that a kill interrupted (main process only)."""
        if self.directory.is_dir():
            for p in self.directory.iterdir():
                if p.name.startswith(TMP_PREFIX):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def save(self, accelerator, step: int, write_extra: Callable[[Path], None] | None = None) -> Path:
        """Write `checkpoint-{step}` through `accelerator.save_state`, atomically, then prune old ones.

        `write_extra(folder)`, called on the main process, adds files of its own (e.g. `TrainingState.save`) before
        the folder gets its final name.
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
            if final.exists():
                # A re-run of the same step after resuming from an older checkpoint. Move the old folder aside in one
                # rename rather than deleting it in place: a kill mid-deletion would leave a partial folder under a
                # final name. (`latest` may then point at a missing folder for a moment; `latest()` falls back.)
                stale = self.directory / f"{TMP_PREFIX}stale-{name}"
                shutil.rmtree(stale, ignore_errors=True)
                os.replace(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, final)
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
