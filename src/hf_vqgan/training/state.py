"""What a run keeps and reports as it goes: resumable counters, the non-finite guard, seeds, JSON-lines logs.

`TrainingState` is what a checkpoint holds beside accelerate's own files. `any_process` is a per-step collective
that makes every process take the same branch (one small all-reduce, on purpose; the non-finite check is
`loop.finite_on_every_process`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpointing import CheckpointError

logger = logging.getLogger(__name__)


STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"


@dataclass
class TrainingState:
    """
    What a checkpoint holds beside accelerate's files: counters, training statistics and the EMA weights.

    `save` writes them as JSON and safetensors into the checkpoint folder. They are deliberately not registered with
    `accelerator.register_for_checkpointing`, which pickles custom objects and unpickles them with
    `weights_only=False`: resuming from a checkpoint then runs no code from it (accelerate reads its own files with
    `weights_only=True`). `extras` maps a group name to a dict of tensors, e.g. the quantizer's usage statistics.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    consecutive_nonfinite: int = 0
    skipped_nonfinite: int = 0
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    _COUNTERS = ("step", "epoch", "batch_in_epoch", "consecutive_nonfinite", "skipped_nonfinite")

    def save(self, folder: str | os.PathLike, ema=None) -> None:
        """Write `training_state.json` and `training_state.safetensors` (with `ema`'s weights, if given)."""
        from safetensors.torch import save_file

        tensors = {
            f"extras/{group}/{name}": value.detach().cpu().contiguous()
            for group, values in self.extras.items()
            for name, value in values.items()
        }
        meta = {
            "counters": {name: getattr(self, name) for name in self._COUNTERS},
            "extras": {group: sorted(values) for group, values in self.extras.items()},
        }
        if ema is not None:
            ema_state = dict(ema.state_dict())
            shadow = ema_state.pop("shadow_params")
            tensors.update({f"ema/{i}": p.detach().cpu().contiguous() for i, p in enumerate(shadow)})
            meta["ema"] = {**ema_state, "num_params": len(shadow)}
        save_file(tensors, os.path.join(folder, STATE_TENSORS))
        Path(folder, STATE_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")

    def load(self, folder: str | os.PathLike, ema=None) -> None:
        """Read what `save` wrote; `ema` gets the checkpoint's EMA weights (which must then be there).

        Raises `CheckpointError` naming the file when one is missing, unreadable or not what `save` writes.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        json_path, tensor_path = Path(folder, STATE_JSON), Path(folder, STATE_TENSORS)
        for path in (json_path, tensor_path):
            if not path.is_file():
                raise CheckpointError(f"{path} is missing: {folder} is not a complete hf_vqgan checkpoint.")
        try:
            meta = json.loads(json_path.read_bytes().decode("utf-8"))
            counters = {name: int(meta["counters"][name]) for name in self._COUNTERS}
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{json_path} is corrupt ({type(error).__name__}: {error}).") from None
        try:
            tensors = load_file(tensor_path)
            extras = {
                group: {name: tensors[f"extras/{group}/{name}"] for name in names}
                for group, names in meta["extras"].items()
            }
            ema_tensors = [tensors[f"ema/{i}"] for i in range(meta["ema"]["num_params"])] if "ema" in meta else None
        except (SafetensorError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"{tensor_path} does not hold what {json_path.name} lists ({type(error).__name__}: {error})."
            ) from None
        if ema is not None and ema_tensors is None:
            raise CheckpointError(
                f"--use_ema is set, but checkpoint {folder} holds no EMA weights (it was trained without)."
            )
        for name, value in counters.items():
            setattr(self, name, value)
        self.extras = extras
        if ema is not None:
            ema_state = {key: value for key, value in meta["ema"].items() if key != "num_params"}
            ema.load_state_dict({**ema_state, "shadow_params": ema_tensors})


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the message names the step and the last good checkpoint."""


def record_nonfinite(
    state: TrainingState, losses: dict[str, float], max_consecutive: int, last_checkpoint: Path | None
) -> None:
    """Count and log a skipped step; raise `NonFiniteLossError` after `max_consecutive` of them in a row."""
    state.consecutive_nonfinite += 1
    state.skipped_nonfinite += 1
    logger.warning("Step %d: non-finite loss %s; update skipped.", state.step, losses)
    if state.consecutive_nonfinite >= max_consecutive:
        raise NonFiniteLossError(
            f"{state.consecutive_nonfinite} consecutive non-finite losses, the last at step {state.step} ({losses}). "
            f"Last good checkpoint: {last_checkpoint if last_checkpoint is not None else 'none saved yet'}. Lower the "
            f"learning rate or check the data, then resume with --resume_from_checkpoint latest."
        )


def save_json(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON, atomically (a temporary file renamed into place)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def log_step_jsonl(accelerator, path: str | os.PathLike, step: int, logs: dict[str, float]) -> None:
    """Append `{"step": step, **logs}` to a JSON-lines file, every value averaged over processes.

    A collective: every process calls it with the same keys; the main process writes.
    """
    names = sorted(logs)
    values = torch.tensor([float(logs[name]) for name in names], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    if accelerator.is_main_process:
        with open(path, "a", encoding="utf-8") as f:
            record = {"step": step, "num_processes": accelerator.num_processes, **dict(zip(names, values.tolist()))}
            f.write(json.dumps(record) + "\n")


def position_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from integers such as `(seed, process_index, epoch, batch_in_epoch)`."""
    import numpy as np

    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, np.uint64)[0])


def any_process(accelerator, flag: bool) -> bool:
    """True when `flag` holds on any process, so that all processes skip a step together."""
    count = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return float(accelerator.reduce(count, reduction="sum")) > 0
