"""What both training stages share: arguments, the accelerator, resumable state, the non-finite guard, saving.

`examples/train.py` orchestrates; the pieces that are the same for the tokenizer and the prior live here so the
script reads top to bottom and the two stages cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- arguments
def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {value}")
    return number


def _split(value: str) -> float | str:
    """`--validation_split`: a held-out fraction in (0, 1) or the name of a split."""
    try:
        fraction = float(value)
    except ValueError:
        return value
    if not 0.0 < fraction < 1.0:
        raise argparse.ArgumentTypeError(f"a held-out fraction must be in (0, 1), got {value}")
    return fraction


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data (defaults to the built-in scikit-learn digits)")
    g.add_argument("--dataset_name", help="A Hub dataset id or anything `datasets.load_dataset` takes.")
    g.add_argument("--dataset_config_name")
    g.add_argument("--train_data_dir", help="A folder of images (loaded with the `imagefolder` builder).")
    g.add_argument("--image_column", default="image")
    g.add_argument("--class_column", default=None, help="Integer class labels (class-conditional priors).")
    g.add_argument("--validation_split", type=_split, default=0.1, help="Held-out fraction or a split name.")
    g.add_argument("--resolution", type=_positive_int, default=None, help="Defaults to the model's sample_size.")
    g.add_argument("--random_crop", action="store_true", help="Random instead of center crop.")
    g.add_argument("--random_flip", action="store_true", help="Random horizontal flips.")
    g.add_argument("--max_train_samples", type=_positive_int, default=None)
    g.add_argument("--max_eval_samples", type=_positive_int, default=None, help="Validate on the first N only.")
    g.add_argument("--streaming", action="store_true", help="Stream the dataset instead of downloading it.")
    g.add_argument("--cache_dir", default=None)
    g.add_argument("--dataloader_num_workers", type=int, default=0)


def add_run_arguments(parser: argparse.ArgumentParser, *, learning_rate: float, betas: tuple[float, float]) -> None:
    g = parser.add_argument_group("optimisation")
    g.add_argument("--output_dir", default="outputs")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train_batch_size", type=_positive_int, default=32, help="Per process.")
    g.add_argument("--eval_batch_size", type=_positive_int, default=64)
    g.add_argument("--max_train_steps", type=_positive_int, default=None, help="Overrides --num_train_epochs.")
    g.add_argument("--num_train_epochs", type=_positive_int, default=10)
    g.add_argument("--gradient_accumulation_steps", type=_positive_int, default=1)
    g.add_argument("--learning_rate", type=float, default=learning_rate)
    g.add_argument("--scale_lr", action="store_true", help="Multiply the learning rate by the global batch size.")
    g.add_argument("--lr_scheduler", default="constant_with_warmup", help="Any diffusers.optimization scheduler.")
    g.add_argument("--lr_warmup_steps", type=int, default=0)
    g.add_argument("--adam_beta1", type=float, default=betas[0])
    g.add_argument("--adam_beta2", type=float, default=betas[1])
    g.add_argument("--max_grad_norm", type=_non_negative_float, default=1.0, help="0 disables clipping.")
    g.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    g.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights; it is what gets saved.")
    g.add_argument("--ema_decay", type=float, default=0.999)
    g.add_argument(
        "--max_nonfinite_steps",
        type=_positive_int,
        default=20,
        help="Stop after this many consecutive steps whose loss is NaN or Inf (each one is skipped).",
    )
    g = parser.add_argument_group("checkpoints, validation, logging, sharing")
    g.add_argument("--checkpointing_steps", type=_positive_int, default=500)
    g.add_argument("--checkpoints_total_limit", type=_positive_int, default=None)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    g.add_argument("--validation_steps", type=_positive_int, default=500)
    g.add_argument("--logging_steps", type=_positive_int, default=10)
    g.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all, or none.")
    g.add_argument(
        "--log_jsonl",
        default=None,
        help="Also append every step's losses, averaged over processes, to this JSON-lines file (for tests, plots).",
    )
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", default=None)
    g.add_argument("--hub_private_repo", action="store_true")


def check_run_arguments(args: argparse.Namespace) -> None:
    """Contradictions argparse cannot see, reported before anything is loaded."""
    if args.dataset_name and args.train_data_dir:
        raise ValueError(
            f"Pass either --dataset_name ({args.dataset_name!r}) or --train_data_dir ({args.train_data_dir!r}), "
            "not both."
        )
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. 'user/vqgan-digits').")
    if not 0.0 < args.ema_decay < 1.0:
        raise ValueError(f"--ema_decay must be in (0, 1), got {args.ema_decay}.")
    if args.learning_rate <= 0 or not math.isfinite(args.learning_rate):
        raise ValueError(f"--learning_rate must be a positive number, got {args.learning_rate}.")
    if args.streaming and args.max_train_steps is None:
        raise ValueError("--streaming datasets have no length: pass --max_train_steps.")


# ------------------------------------------------------------------------------------------------- accelerate
def make_accelerator(args: argparse.Namespace):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    report_to = None if args.report_to in (None, "none") else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        # A seedable sampler makes each epoch's order a function of (seed, epoch): resumes replay the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    set_seed(args.seed, device_specific=False)
    return accelerator


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

        tensors = {f"extras/{group}/{name}": value.detach().cpu().contiguous()
                   for group, values in self.extras.items() for name, value in values.items()}  # fmt: skip
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
        """Read what `save` wrote; `ema` gets the checkpoint's EMA weights (which must then be there)."""
        from safetensors.torch import load_file

        json_path, tensor_path = Path(folder, STATE_JSON), Path(folder, STATE_TENSORS)
        if not json_path.is_file() or not tensor_path.is_file():
            raise ValueError(
                f"{folder} is not a complete hf_vqgan checkpoint: {STATE_JSON} or {STATE_TENSORS} is missing."
            )
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(tensor_path)
        for name in self._COUNTERS:
            setattr(self, name, int(meta["counters"][name]))
        self.extras = {group: {name: tensors[f"extras/{group}/{name}"] for name in names}
                       for group, names in meta["extras"].items()}  # fmt: skip
        if ema is not None:
            if "ema" not in meta:
                raise ValueError(
                    f"--use_ema is set, but checkpoint {folder} holds no EMA weights (it was trained without)."
                )
            ema_state = dict(meta["ema"])
            count = ema_state.pop("num_params")
            ema.load_state_dict({**ema_state, "shadow_params": [tensors[f"ema/{i}"] for i in range(count)]})


class NonFiniteLossError(RuntimeError):
    pass


def all_finite(accelerator, *losses: torch.Tensor) -> bool:
    """True when every loss is finite on every process (all processes then take the same branch)."""
    bad = torch.tensor([sum(0.0 if torch.isfinite(loss).all() else 1.0 for loss in losses)], device=accelerator.device)
    return float(accelerator.reduce(bad, reduction="sum")) == 0.0


def record_nonfinite(state: TrainingState, args, checkpoints, losses: dict[str, float]) -> None:
    """Log a skipped step; stop the run after `--max_nonfinite_steps` in a row."""
    state.consecutive_nonfinite += 1
    state.skipped_nonfinite += 1
    logger.warning("Step %d: non-finite loss %s; update skipped.", state.step, losses)
    if state.consecutive_nonfinite >= args.max_nonfinite_steps:
        last = checkpoints.latest()
        raise NonFiniteLossError(
            f"{state.consecutive_nonfinite} consecutive non-finite losses, the last at step {state.step} ({losses}). "
            f"Last good checkpoint: {last if last is not None else 'none saved yet'}. Lower the learning rate or "
            f"check the data, then resume with --resume_from_checkpoint latest."
        )


def num_update_steps(args, batches_per_epoch: int | None) -> tuple[int, int]:
    """(max_train_steps, num_epochs) from either option."""
    if args.max_train_steps is not None:
        steps = args.max_train_steps
        if batches_per_epoch:
            per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
            return steps, math.ceil(steps / per_epoch)
        return steps, 10**9
    per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
    return per_epoch * args.num_train_epochs, args.num_train_epochs


def adam(params, args, lr: float | None = None, weight_decay: float = 0.0):
    """Adam(W) with the run's betas, fused on CUDA where available."""
    kwargs = dict(lr=lr or args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=weight_decay)
    if torch.cuda.is_available():
        kwargs["fused"] = True
    return torch.optim.AdamW(params, **kwargs)


def save_json(path: str | os.PathLike, payload: dict) -> None:
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


# ------------------------------------------------------------------------------------- fault injection (tests)
# Test-only hooks that let tests/examples/test_faults.py reproduce real crashes in a real run of examples/train.py.
# They read environment variables that no user sets; unset, each costs a dictionary lookup per step.
#   HF_VQGAN_TEST_KILL_AT_STEP=N          SIGKILL this process right after optimizer step N (and its checkpoint).
#   HF_VQGAN_TEST_NONFINITE_AT_STEPS=3,3  poison the loss of the first two attempts at step 3 (each entry is one
#                                         attempt; a skipped step is retried with the next batch).
#   HF_VQGAN_TEST_NONFINITE_VALUE=inf     the poison: nan (default) or inf.
#   HF_VQGAN_TEST_KILL_DURING_SAVE=N      (checkpointing.py) SIGKILL once checkpoint N is written, before its rename.


def kill_for_tests_at_step(step: int) -> None:
    """Fault injection for tests: die with SIGKILL, as an OOM killer or a pre-empted node would, after `step`."""
    if os.environ.get("HF_VQGAN_TEST_KILL_AT_STEP") == str(step):
        import signal

        logger.warning("HF_VQGAN_TEST_KILL_AT_STEP: killing the process after step %d.", step)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def inject_nonfinite_for_tests(loss: torch.Tensor, step: int, attempt: int) -> torch.Tensor:
    """Fault injection for tests: `loss` times NaN (or Inf) for the attempts `HF_VQGAN_TEST_NONFINITE_AT_STEPS` lists.

    `attempt` counts the failed attempts at `step` so far (`TrainingState.consecutive_nonfinite`), which keeps the
    hook stateless. Multiplying keeps the autograd graph: a guard that failed to skip the step would write NaN into
    the weights.
    """
    spec = os.environ.get("HF_VQGAN_TEST_NONFINITE_AT_STEPS")
    if spec and [s.strip() for s in spec.split(",")].count(str(step)) > attempt:
        return loss * float(os.environ.get("HF_VQGAN_TEST_NONFINITE_VALUE", "nan"))
    return loss
