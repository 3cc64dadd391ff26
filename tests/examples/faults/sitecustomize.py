"""Fault injection for training runs started by tests/examples (test code: nothing ships it).

A test puts this folder first on a subprocess's `PYTHONPATH`; Python imports `sitecustomize` at start-up, and it
arms the faults the test asked for through these environment variables:

    FAULT_KILL_AFTER_STEP=N    SIGKILL the process once `TrainingRun.end_step` has finished optimizer step N (its
                               checkpoint and validation included), as an OOM killer or a pre-empted node would.
    FAULT_KILL_DURING_SAVE=N   SIGKILL the process when checkpoint N, fully written, is about to be renamed into place.
    FAULT_STEP_SECONDS=S       sleep S seconds before each `TrainingRun.end_step`: a tiny model's steps last long
                               enough for a kill from outside to land inside the run, not after its end. (Only the
                               timing changes, not a number.)
    FAULT_KILL_AFTER_CHUNKS=N  SIGKILL the process once it has written N chunks of an extraction
                               (`Extraction._extract_chunk`, `train.py tokenize` and the transformer stage's cache).
    FAULT_CHUNK_LOG=PATH       append "<split> <index>" to PATH for every chunk a process extracts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _die(reason: str) -> None:
    print(f"[fault injection] {reason}: SIGKILL", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after_step(step: int) -> None:
    from hf_vqgan.training.loop import TrainingRun

    end_step = TrainingRun.end_step

    def end_step_then_die(self, *args, **kwargs):
        end_step(self, *args, **kwargs)
        if self.state.step == step:
            _die(f"after step {step}")

    TrainingRun.end_step = end_step_then_die


def _kill_during_save(step: int) -> None:
    # CheckpointManager.save writes into `.tmp-checkpoint-N` and renames it to `checkpoint-N` with os.replace.
    replace = os.replace
    folder = f".tmp-checkpoint-{step:06d}"

    def replace_or_die(src, dst, **kwargs):
        if Path(src).name == folder:
            _die(f"while saving checkpoint {step}")
        return replace(src, dst, **kwargs)

    os.replace = replace_or_die


def _slow_steps(seconds: float) -> None:
    import time

    from hf_vqgan.training.loop import TrainingRun

    end_step = TrainingRun.end_step

    def sleep_then_end_step(self, *args, **kwargs):
        time.sleep(seconds)
        return end_step(self, *args, **kwargs)

    TrainingRun.end_step = sleep_then_end_step


def _watch_chunks(kill_after: int | None, log: str | None) -> None:
    from hf_vqgan.training.extraction import Extraction

    extract_chunk = Extraction._extract_chunk
    written = []

    def extract_chunk_then_maybe_die(self, split, index, *args, **kwargs):
        extract_chunk(self, split, index, *args, **kwargs)
        written.append((split, index))
        if log:
            with open(log, "a") as f:
                f.write(f"{split} {index}\n")
        if kill_after is not None and len(written) == kill_after:
            _die(f"after {kill_after} chunks")

    Extraction._extract_chunk = extract_chunk_then_maybe_die


if os.environ.get("FAULT_KILL_AFTER_CHUNKS") or os.environ.get("FAULT_CHUNK_LOG"):
    _kill_chunks = os.environ.get("FAULT_KILL_AFTER_CHUNKS")
    _watch_chunks(int(_kill_chunks) if _kill_chunks else None, os.environ.get("FAULT_CHUNK_LOG"))
if os.environ.get("FAULT_STEP_SECONDS"):
    _slow_steps(float(os.environ["FAULT_STEP_SECONDS"]))
if os.environ.get("FAULT_KILL_AFTER_STEP"):
    _kill_after_step(int(os.environ["FAULT_KILL_AFTER_STEP"]))
if os.environ.get("FAULT_KILL_DURING_SAVE"):
    _kill_during_save(int(os.environ["FAULT_KILL_DURING_SAVE"]))
