"""CheckpointManager: atomic saves, `latest`, interrupted saves, pruning and `--resume_from_checkpoint` resolution.

A stand-in accelerator writes a two-file "state" so that a save can be interrupted half-way, as a kill would.
The real `accelerator.save_state` path is exercised end to end by tests/examples.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_vqgan.training.checkpointing import LATEST, TMP_PREFIX, CheckpointManager


class FakeAccelerator:
    """The part of `accelerate.Accelerator` that CheckpointManager uses, on one process."""

    is_main_process = True

    def __init__(self, fail_after_first_file: bool = False):
        self.fail_after_first_file = fail_after_first_file
        self.saved_to: list[Path] = []

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        folder = Path(path)
        folder.mkdir(parents=True)
        self.saved_to.append(folder)
        (folder / "model.safetensors").write_text(f"weights of {folder.name}")
        if self.fail_after_first_file:
            raise KeyboardInterrupt("killed in the middle of save_state")
        (folder / "optimizer.bin").write_text("optimizer")


def _pointer(directory: Path) -> str:
    return (directory / LATEST).read_text(encoding="utf-8").strip()


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_save_is_written_aside_then_renamed_and_pointed_at(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    accelerator = FakeAccelerator()
    final = manager.save(accelerator, 2)

    assert final == tmp_path / "checkpoints" / "checkpoint-000002"
    # accelerate wrote into the temporary name, never straight into the final one
    assert accelerator.saved_to == [tmp_path / "checkpoints" / f"{TMP_PREFIX}checkpoint-000002"]
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors", "optimizer.bin"]
    assert _pointer(manager.directory) == "checkpoint-000002"
    assert not [p for p in manager.directory.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert manager.latest() == final
    assert manager.resolve("latest") == final


def test_interrupted_save_leaves_latest_on_the_previous_complete_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    manager = CheckpointManager(directory)
    first = manager.save(FakeAccelerator(), 2)
    with pytest.raises(KeyboardInterrupt):
        manager.save(FakeAccelerator(fail_after_first_file=True), 4)

    partial = directory / f"{TMP_PREFIX}checkpoint-000004"
    assert partial.is_dir()  # the half-written save is still there...
    assert not (directory / "checkpoint-000004").exists()  # ...but never under a checkpoint name
    assert _pointer(directory) == "checkpoint-000002"

    restarted = CheckpointManager(directory)  # the next run
    assert restarted.resolve("latest") == first
    assert _names(restarted.complete_checkpoints()) == ["checkpoint-000002"]
    restarted.clean_incomplete()
    assert not partial.exists()
    assert first.is_dir() and (directory / LATEST).is_file()


def test_leftover_temporary_files_are_never_used_and_are_cleaned(tmp_path):
    directory = tmp_path / "checkpoints"
    manager = CheckpointManager(directory)
    manager.save(FakeAccelerator(), 3)
    # What a kill leaves: a newer half-written checkpoint and a half-written pointer file.
    (directory / f"{TMP_PREFIX}checkpoint-000009").mkdir()
    (directory / f"{TMP_PREFIX}checkpoint-000009" / "model.safetensors").write_text("truncated")
    (directory / f"{TMP_PREFIX}{LATEST}.12345").write_text("checkpoint-000009")

    assert manager.latest() == directory / "checkpoint-000003"
    assert _names(manager.complete_checkpoints()) == ["checkpoint-000003"]
    manager.clean_incomplete()
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-000003", LATEST]


def test_a_save_at_the_step_of_a_leftover_temporary_folder_replaces_it(tmp_path):
    directory = tmp_path / "checkpoints"
    (directory / f"{TMP_PREFIX}checkpoint-000004").mkdir(parents=True)
    (directory / f"{TMP_PREFIX}checkpoint-000004" / "stale.bin").write_text("from a killed run")
    final = CheckpointManager(directory).save(FakeAccelerator(), 4)
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors", "optimizer.bin"]


def test_saving_a_step_again_replaces_that_checkpoint(tmp_path):
    """After resuming from an earlier checkpoint, the run saves the same step numbers again."""
    manager = CheckpointManager(tmp_path)
    manager.save(FakeAccelerator(), 4)
    (tmp_path / "checkpoint-000004" / "from_the_first_run.txt").write_text("old")
    final = manager.save(FakeAccelerator(), 4)
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors", "optimizer.bin"]


def test_extra_files_are_written_before_the_checkpoint_gets_its_name(tmp_path):
    manager = CheckpointManager(tmp_path)
    seen = []

    def write_extra(folder: Path) -> None:
        seen.append(folder.name)
        (folder / "training_state.json").write_text("{}")

    final = manager.save(FakeAccelerator(), 5, write_extra=write_extra)
    assert seen == [f"{TMP_PREFIX}checkpoint-000005"]
    assert (final / "training_state.json").is_file()

    def failing_extra(folder: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        manager.save(FakeAccelerator(), 6, write_extra=failing_extra)
    assert manager.resolve("latest") == final  # the step-6 save never became a checkpoint
    assert _names(manager.complete_checkpoints()) == ["checkpoint-000005"]


def test_latest_falls_back_to_the_newest_complete_folder(tmp_path):
    manager = CheckpointManager(tmp_path)
    assert manager.latest() is None
    for name in ["checkpoint-9", "checkpoint-000010", "checkpoint-000002", "checkpoint-abc", "notes"]:
        (tmp_path / name).mkdir()
    # numeric order, not string order; other names are not checkpoints
    assert _names(manager.complete_checkpoints()) == ["checkpoint-000002", "checkpoint-9", "checkpoint-000010"]
    assert manager.latest() == tmp_path / "checkpoint-000010"
    (tmp_path / LATEST).write_text("checkpoint-000042")  # points at a folder that was deleted by hand
    assert manager.latest() == tmp_path / "checkpoint-000010"
    (tmp_path / LATEST).write_text("checkpoint-000002\n")
    assert manager.latest() == tmp_path / "checkpoint-000002"


@pytest.mark.parametrize("total_limit", [1, 2, 3])
def test_total_limit_keeps_the_newest_checkpoints(tmp_path, total_limit):
    manager = CheckpointManager(tmp_path, total_limit=total_limit)
    for step in range(1, 6):
        manager.save(FakeAccelerator(), step)
        kept = _names(manager.complete_checkpoints())
        assert len(kept) == min(step, total_limit)
        assert kept[-1] == f"checkpoint-{step:06d}" == _pointer(tmp_path)
    assert _names(manager.complete_checkpoints()) == [f"checkpoint-{s:06d}" for s in range(6 - total_limit, 6)]


def test_total_limit_never_deletes_the_newest_checkpoint_after_resuming_from_an_older_one(tmp_path):
    manager = CheckpointManager(tmp_path, total_limit=1)
    for name in ["checkpoint-000002", "checkpoint-000004"]:  # a run resumed from step 2 of an earlier one
        (tmp_path / name).mkdir()
    newest = manager.save(FakeAccelerator(), 3)
    assert _names(manager.complete_checkpoints()) == ["checkpoint-000003"]
    assert manager.resolve("latest") == newest


def test_total_limit_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoints_total_limit.*0"):
        CheckpointManager(tmp_path, total_limit=0)


def test_resolve(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert manager.resolve(None) is None
    assert manager.resolve("latest") is None  # nothing saved yet: start from scratch
    saved = manager.save(FakeAccelerator(), 7)
    assert manager.resolve("latest") == saved
    assert manager.resolve(str(saved)) == saved
    elsewhere = tmp_path / "copied-checkpoint"
    elsewhere.mkdir()
    assert manager.resolve(str(elsewhere)) == elsewhere

    missing = str(tmp_path / "checkpoints" / "checkpoint-000099")
    with pytest.raises(ValueError, match="checkpoint-000099") as error:
        manager.resolve(missing)
    assert "latest" in str(error.value)  # tells the user what to pass instead
    a_file = tmp_path / "checkpoints" / LATEST
    with pytest.raises(ValueError, match="is not a checkpoint folder"):
        manager.resolve(str(a_file))
