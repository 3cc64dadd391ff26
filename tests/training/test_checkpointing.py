"""CheckpointManager: atomic saves, manifests, `latest`, interrupted saves, pruning and `--resume_from_checkpoint`.

A stand-in accelerator writes a three-file "state" (weights, optimizer, RNG states) so that a save can be interrupted
half-way, as a kill would, and its files corrupted one at a time. The real `accelerator.save_state` path is exercised
end to end by tests/examples (the fault matrix of test_train_fault_tolerance.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from hf_vqgan.training import checkpointing
from hf_vqgan.training.checkpointing import (
    LATEST,
    MANIFEST,
    TMP_PREFIX,
    CheckpointError,
    CheckpointManager,
    verify_checkpoint,
)
from testing_utils import FILE_FAULTS, corrupt_file

STATE_FILES = ["model.safetensors", "optimizer.bin", "random_states_0.pkl"]


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
        (folder / "random_states_0.pkl").write_bytes(os.urandom(64))


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
    assert sorted(p.name for p in final.iterdir()) == sorted([*STATE_FILES, MANIFEST])
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
    assert sorted(p.name for p in final.iterdir()) == sorted([*STATE_FILES, MANIFEST])


def test_saving_a_step_again_replaces_that_checkpoint(tmp_path):
    """After resuming from an earlier checkpoint, the run saves the same step numbers again."""
    manager = CheckpointManager(tmp_path)
    manager.save(FakeAccelerator(), 4)
    (tmp_path / "checkpoint-000004" / "from_the_first_run.txt").write_text("old")
    final = manager.save(FakeAccelerator(), 4)
    assert sorted(p.name for p in final.iterdir()) == sorted([*STATE_FILES, MANIFEST])


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
    os.renames(saved, elsewhere)  # a checkpoint moved by hand still proves it is complete
    assert manager.resolve(str(elsewhere)) == elsewhere
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(
        CheckpointError,
        match=f"Cannot resume from {empty}: {empty / MANIFEST} is missing: the checkpoint is incomplete",
    ):
        manager.resolve(str(empty))

    missing = str(tmp_path / "checkpoints" / "checkpoint-000099")
    with pytest.raises(ValueError, match="checkpoint-000099") as error:
        manager.resolve(missing)
    assert "latest" in str(error.value)  # tells the user what to pass instead
    a_file = tmp_path / "checkpoints" / LATEST
    with pytest.raises(CheckpointError, match="is not a checkpoint folder"):
        manager.resolve(str(a_file))


# ------------------------------------------------------------------------------------------------- manifests


def test_the_manifest_lists_every_file_with_its_size_and_checksum(tmp_path):
    def write_extra(folder: Path) -> None:
        (folder / "training_state.json").write_text('{"step": 3}')
        (folder / "nested").mkdir()
        (folder / "nested" / "shard.bin").write_bytes(b"\x00\x01")

    final = CheckpointManager(tmp_path).save(FakeAccelerator(), 3, write_extra=write_extra)
    manifest = json.loads((final / MANIFEST).read_text())
    expected = sorted([*STATE_FILES, "training_state.json", "nested/shard.bin"])
    assert sorted(manifest["files"]) == expected
    for name, entry in manifest["files"].items():
        data = (final / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    verify_checkpoint(final)  # and it verifies


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fsync'ed descriptor through /proc (Linux)")
def test_files_are_flushed_before_the_rename_and_the_directories_after(tmp_path, monkeypatch):
    """A power cut after the rename must not find empty files under a checkpoint's final name (issue 15, 2)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "fsync", fsync)
    monkeypatch.setattr(checkpointing.os, "replace", replace)
    CheckpointManager(tmp_path / "checkpoints").save(FakeAccelerator(), 2)
    rename = events.index(("rename", f"{TMP_PREFIX}checkpoint-000002", "checkpoint-000002"))
    before, after = events[:rename], events[rename + 1 :]
    flushed_before = {name for kind, name, *_ in before if kind == "fsync"}
    assert {*STATE_FILES, MANIFEST, f"{TMP_PREFIX}checkpoint-000002"} <= flushed_before  # files, manifest, folder
    assert [e for e in before if e[0] == "fsync"][-2:] == [
        ("fsync", MANIFEST),
        ("fsync", f"{TMP_PREFIX}checkpoint-000002"),
    ]
    assert after[0] == ("fsync", "checkpoints")  # the rename itself is made durable...
    assert after[-2:] == [
        ("rename", f"{TMP_PREFIX}{LATEST}.{os.getpid()}", LATEST),
        ("fsync", "checkpoints"),
    ]  # ...and `latest`


@pytest.mark.parametrize("fault", FILE_FAULTS)
@pytest.mark.parametrize("name", [*STATE_FILES, MANIFEST])
def test_verify_names_the_missing_or_corrupt_file(tmp_path, name, fault):
    final = CheckpointManager(tmp_path).save(FakeAccelerator(), 2)
    corrupt_file(final / name, fault)
    with pytest.raises(CheckpointError) as error:
        verify_checkpoint(final)
    message = str(error.value)
    assert str(final / name) in message
    assert "\n" not in message


def test_missing_rng_states_of_a_process_are_an_error(tmp_path):
    """Resuming with more processes than saved the checkpoint would leave the new ones' RNG unrestored (issue 15, 1)."""
    final = CheckpointManager(tmp_path).save(FakeAccelerator(), 2)
    verify_checkpoint(final, num_processes=1)
    with pytest.raises(
        CheckpointError, match=r"random_states_1.pkl is missing: .* RNG states of 1 process\(es\), this run has 2"
    ):
        verify_checkpoint(final, num_processes=2)


def test_latest_skips_a_corrupt_newest_checkpoint_naming_the_file(tmp_path, caplog):
    manager = CheckpointManager(tmp_path)
    for step in (2, 4, 6):
        manager.save(FakeAccelerator(), step)
    corrupt_file(tmp_path / "checkpoint-000006" / "optimizer.bin", "truncated")
    corrupt_file(tmp_path / "checkpoint-000004" / MANIFEST, "missing")
    with caplog.at_level(logging.WARNING):
        assert manager.resolve("latest") == tmp_path / "checkpoint-000002"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{tmp_path / 'checkpoint-000006' / 'optimizer.bin'} is " in warnings[0]
    assert "truncated" in warnings[0]
    assert f"{tmp_path / 'checkpoint-000004' / MANIFEST} is missing: the checkpoint is incomplete" in warnings[1]
    assert warnings[2] == f"Resuming from {tmp_path / 'checkpoint-000002'}, the newest intact checkpoint."
    # Named explicitly, the corrupt one is refused rather than replaced by another.
    with pytest.raises(CheckpointError, match=r"Cannot resume from .*checkpoint-000006: .*optimizer.bin is"):
        manager.resolve(str(tmp_path / "checkpoint-000006"))


def test_latest_never_falls_back_to_a_checkpoint_of_an_abandoned_branch(tmp_path):
    manager = CheckpointManager(tmp_path)
    for step in (2, 4, 6):
        manager.save(FakeAccelerator(), step)
    manager.save(FakeAccelerator(), 4)  # resumed from step 2 explicitly: step 6 is from the abandoned run
    corrupt_file(tmp_path / "checkpoint-000004" / "model.safetensors", "bit-flipped")
    assert manager.resolve("latest") == tmp_path / "checkpoint-000002"


def test_latest_refuses_when_no_checkpoint_is_intact(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(FakeAccelerator(), 2)
    corrupt_file(tmp_path / "checkpoint-000002" / "random_states_0.pkl", "empty")
    with pytest.raises(CheckpointError, match=r"No intact checkpoint in .*random_states_0.pkl is 0 bytes"):
        manager.resolve("latest")


@pytest.mark.parametrize("pointer", [b"", b"\xff\xfe garbage", b"../..", b"checkpoint-000004"])
def test_a_garbled_latest_pointer_falls_back_to_the_newest_checkpoint(tmp_path, pointer):
    manager = CheckpointManager(tmp_path)
    manager.save(FakeAccelerator(), 2)
    (tmp_path / LATEST).write_bytes(pointer)
    assert manager.latest() == manager.resolve("latest") == tmp_path / "checkpoint-000002"


def test_a_checkpoint_from_before_manifests_is_refused_until_vouched_for(tmp_path):
    manager = CheckpointManager(tmp_path)
    legacy = manager.save(FakeAccelerator(), 2)
    (legacy / MANIFEST).unlink()  # what hf_vqgan wrote before manifests existed
    with pytest.raises(CheckpointError, match=r"write_manifest\('.*checkpoint-000002'\)"):
        manager.resolve(str(legacy))
    checkpointing.write_manifest(legacy)  # the command the message gives
    assert manager.resolve(str(legacy)) == legacy


@pytest.mark.parametrize("fault", ["missing", "empty", "truncated"])  # a flipped bit is the manifest's to catch
@pytest.mark.parametrize("name", ["training_state.json", "training_state.safetensors"])
def test_training_state_load_names_a_damaged_file(tmp_path, name, fault):
    """Issue 15 (2): an empty `training_state.json` was a JSONDecodeError traceback; now, even without a manifest,
    one line names the file."""
    import torch

    from hf_vqgan.training.state import TrainingState

    TrainingState(step=4, extras={"quantizer": {"usage": torch.arange(6.0)}}).save(tmp_path)
    corrupt_file(tmp_path / name, fault)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / name} (is missing|is corrupt|does not hold)"):
        TrainingState().load(tmp_path)
