"""The parts of the training loop both stages share: set-up helpers and `TrainingRun`, the code around each step.

A stage script owns its step (forward, loss, backward); `TrainingRun` owns what surrounds it, written once: resuming,
the batches of each epoch, skipping non-finite steps, and the post-step sequence (step counter, EMA, logging,
checkpoint, validation), then the final validation.

A skipped step changes nothing: the check comes after the backward pass and before clipping and the optimizer step,
covers the losses and the gradients, and puts back what the forward pass wrote in place (`ForwardSnapshot`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from ..models.quantizer import VectorQuantizer
from .checkpointing import CheckpointError, CheckpointManager
from .curves import CURVES_DATA, CURVES_FILE, TrainingCurves
from .data import DatasetConfigError
from .state import TrainingState, log_step_jsonl, record_nonfinite
from .trackers import log_images

logger = logging.getLogger(__name__)

# Keys of the per-step logs shown on the progress bar.
_PROGRESS_KEYS = ("loss", "total", "nll", "d_loss")


# ---------------------------------------------------------------------------------------------------- set-up
def make_accelerator(args: argparse.Namespace):
    """An `Accelerator` for the run: accumulation, precision, trackers, seedable sampler; logging and seeds set."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    # "tensorboard,wandb" names several trackers; images go to each of them too (`trackers.log_images`).
    report_to = None if args.report_to in (None, "none") else [name.strip() for name in args.report_to.split(",")]
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
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        logger.warning(
            "--mixed_precision fp16 runs in fp32 on a CPU (accelerate enables fp16 autocast on accelerators only); "
            "pass --mixed_precision bf16 for mixed precision on a CPU."
        )
    set_seed(args.seed, device_specific=False)
    return accelerator


def make_loader(dataset, batch_size: int, shuffle: bool, args: argparse.Namespace, collate_fn=None):
    """A `DataLoader` whose shuffling and worker seeds come from its own generator, seeded with `args.seed`."""
    # Each new iterator draws a worker seed from `generator`; from the global RNG instead, a mid-epoch resume (or a
    # validation pass) would shift the random flips, crops and codebook restarts that follow, and no resume would be
    # exact. (Exact resumes also need --dataloader_num_workers 0: workers' RNG states are not checkpointed.)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_fn,
        num_workers=args.dataloader_num_workers,
        drop_last=shuffle,
        generator=torch.Generator().manual_seed(args.seed),
    )


def check_batch_size(num_examples: int, args: argparse.Namespace, num_processes: int) -> None:
    """
    Refuse a training split smaller than one batch on every process: the loader drops incomplete batches, so an
    epoch would hold no batch at all. Raises `DatasetConfigError` naming the sizes and the largest batch that fits.
    """
    needed = args.train_batch_size * num_processes
    if num_examples < needed:
        fits = num_examples // num_processes
        fix = f"pass --train_batch_size {fits} or less" if fits else "add training examples"
        raise DatasetConfigError(
            f"--train_batch_size {args.train_batch_size} on {num_processes} process(es) needs at least {needed} "
            f"training examples, but the training split has {num_examples}: {fix} (or --validation_split fewer)."
        )


def num_update_steps(args: argparse.Namespace, batches_per_epoch: int | None) -> tuple[int, int]:
    """(max_train_steps, num_epochs) from either `--max_train_steps` or `--num_train_epochs`."""
    if args.max_train_steps is not None:
        steps = args.max_train_steps
        if batches_per_epoch:
            per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
            return steps, math.ceil(steps / per_epoch)
        return steps, 10**9
    per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
    return per_epoch * args.num_train_epochs, args.num_train_epochs


def scaled_learning_rate(args: argparse.Namespace, num_processes: int) -> float:
    """`--learning_rate`, times the global batch size with `--scale_lr`."""
    return args.learning_rate * (args.train_batch_size * num_processes if args.scale_lr else 1)


def adam(params, args: argparse.Namespace, lr: float | None = None, weight_decay: float = 0.0):
    """Adam(W) with the run's betas, fused on CUDA where available."""
    kwargs = dict(lr=lr or args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=weight_decay)
    if torch.cuda.is_available():
        kwargs["fused"] = True
    return torch.optim.AdamW(params, **kwargs)


def make_scheduler(args: argparse.Namespace, optimizer, max_steps: int, num_processes: int):
    """The `--lr_scheduler` schedule; accelerate steps a prepared scheduler once per process, hence the factor."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_steps * num_processes,
    )


def make_ema(args: argparse.Namespace, model: torch.nn.Module):
    """An EMA of `model`'s weights with `--use_ema`, else None."""
    if not args.use_ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=args.ema_decay)


# -------------------------------------------------------------------------------------------------- one step
def step_optimizer(accelerator, args: argparse.Namespace, optimizer, scheduler, parameters) -> None:
    """Clip (on the micro-step that synchronises gradients), step, schedule and clear one optimizer."""
    if accelerator.sync_gradients and args.max_grad_norm > 0:
        accelerator.clip_grad_norm_(parameters, args.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class ForwardSnapshot:
    """
    Copies of what a training-mode forward pass of `modules` writes in place, taken before it, to put back with
    `restore` when the step is then skipped.

    That is every buffer (BatchNorm statistics; a quantizer's EMA cluster sizes and sums, usage history and dead-code
    counters) and every quantizer's codebook (rewritten by EMA updates and dead-code restarts). The copies stay on the
    device: no host sync. `None` entries of `modules` are ignored.
    """

    def __init__(self, *modules: torch.nn.Module | None):
        tensors: dict[int, torch.Tensor] = {}
        for module in modules:
            if module is None:
                continue
            tensors.update((id(buffer), buffer) for buffer in module.buffers())
            for child in module.modules():
                if isinstance(child, VectorQuantizer):
                    tensors[id(child.embedding.weight)] = child.embedding.weight
        self.tensors = list(tensors.values())
        with torch.no_grad():
            self.copies = [tensor.detach().clone() for tensor in self.tensors]

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, copy in zip(self.tensors, self.copies):
            tensor.copy_(copy)


def finite_on_every_process(
    accelerator, losses: Iterable[torch.Tensor], gradients: list[torch.Tensor]
) -> tuple[bool, torch.Tensor | None]:
    """
    (whether every loss and gradient is finite on every process, the gradients' total norm or None without any).

    One all-reduce of one number and one read of it on the host: all processes then take the same branch.
    """
    checks = [torch.isfinite(loss.detach()).all() for loss in losses]
    norm = None
    if gradients:
        norm = torch.nn.utils.get_total_norm(gradients)  # NaN or Inf when any gradient is
        checks.append(torch.isfinite(norm))
    bad = (~torch.stack(checks)).sum().float().reshape(1)
    return float(accelerator.reduce(bad, reduction="sum")) == 0.0, norm


@contextlib.contextmanager
def frozen(module: torch.nn.Module | None):
    """No parameter gradients for `module` from what runs inside (its inputs' gradients still flow)."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


# ------------------------------------------------------------------------------------------ around each step
class TrainingRun:
    """
    The bookkeeping around a stage's own step, the same for both stages.

    On the main process it also keeps the run's curves (the logged losses and the validation metrics against the
    step): `output_dir/training_curves.png`, redrawn at each validation and at the end, and sent to the trackers with
    the validation images; its points go to `output_dir/logs/training_curves.jsonl`, so a resumed run draws the whole
    run.

    Args:
        accelerator: the run's `Accelerator`.
        args: the parsed flags (checkpoints, logging, validation and non-finite settings are read from them).
        max_steps (`int`): optimizer steps of the whole run.
        ema (`EMAModel`, *optional*): EMA weights to step, checkpoint, validate with and save.
        quantizer (*optional*): a quantizer whose usage statistics are checkpointed (`statistics_state_dict`).
    """

    def __init__(self, accelerator, args: argparse.Namespace, max_steps: int, *, ema=None, quantizer=None):
        self.accelerator, self.args, self.max_steps = accelerator, args, max_steps
        self.ema, self.quantizer = ema, quantizer
        self.state = TrainingState()  # saved as JSON + safetensors, not pickled by accelerate
        self.checkpoints = CheckpointManager(Path(args.output_dir) / "checkpoints", args.checkpoints_total_limit)
        self.metrics: dict = {}
        self.progress = None
        self.curves = TrainingCurves()

    def resume(self) -> None:
        """
        Call after `accelerator.prepare`: drop interrupted saves, then load `--resume_from_checkpoint` if any.

        The main process picks and verifies the checkpoint (`CheckpointManager.resolve`: every file against the
        manifest) and tells the others, so that every process loads the same one or all raise the same
        `CheckpointError`.
        """
        path = self._resolve_checkpoint()
        if path is not None:
            try:
                self.accelerator.load_state(str(path))
            except Exception as error:  # the files are intact (verified): they do not fit this run's models
                raise CheckpointError(
                    f"Checkpoint {path} does not fit this run ({type(error).__name__}: {str(error).splitlines()[0]}). "
                    "Resume with the model config and flags it was saved with."
                ) from error
            self.state.load(path, self.ema)
            if self.quantizer is not None and "quantizer" in self.state.extras:
                self.quantizer.load_statistics_state_dict(self.state.extras["quantizer"])
            state = self.state
            logger.info(
                "Resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch, state.batch_in_epoch
            )
        if self.ema is not None:  # after loading: the checkpoint's EMA weights arrive on the CPU
            self.ema.to(self.accelerator.device)

    def _resolve_checkpoint(self) -> Path | None:
        """`--resume_from_checkpoint` resolved and verified on the main process, the answer shared with all."""
        from accelerate.utils import broadcast_object_list

        answer: list = [None, None]  # [checkpoint path, error message]
        if self.accelerator.is_main_process:
            self.checkpoints.clean_incomplete()
            try:
                path = self.checkpoints.resolve(self.args.resume_from_checkpoint, self.accelerator.num_processes)
                answer[0] = None if path is None else str(path)
            except CheckpointError as error:
                answer[1] = str(error)
        answer = broadcast_object_list(answer, from_process=0)
        if answer[1] is not None:
            raise CheckpointError(answer[1])
        return None if answer[0] is None else Path(answer[0])

    def start(self, project: str) -> None:
        """Open the trackers (main process) and the progress bar."""
        from tqdm.auto import tqdm

        if self.accelerator.is_main_process:
            config = {k: v for k, v in vars(self.args).items() if isinstance(v, int | float | str | bool)}
            self.accelerator.init_trackers(project, config=config)
            # Resumed: the points up to the checkpoint (the later ones are logged again); else a fresh file.
            self.curves = TrainingCurves.open(Path(self.args.output_dir, CURVES_DATA), resume_step=self.state.step)
        self.progress = tqdm(
            total=self.max_steps,
            initial=self.state.step,
            desc=project.removeprefix("hf_vqgan-"),
            disable=not self.accelerator.is_local_main_process,
        )

    def batches(self, loader) -> Iterator:
        """Batches until `max_steps` optimizer steps, resuming mid-epoch where a checkpoint left off."""
        state = self.state
        while state.step < self.max_steps:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(state.epoch)
            if hasattr(loader.dataset, "set_epoch"):  # a SeededDataset (accelerate skips it for a seedable sampler)
                loader.dataset.set_epoch(state.epoch)
            skip = state.batch_in_epoch
            epoch_loader = self.accelerator.skip_first_batches(loader, skip) if skip else loader
            empty = True
            for batch in epoch_loader:
                empty = False
                state.batch_in_epoch += 1
                yield batch
                if state.step >= self.max_steps:
                    return
            if empty and not skip:  # a new iterator would be empty too: stop instead of looping forever
                raise RuntimeError(
                    f"An epoch of the training data gave no batch (--train_batch_size {self.args.train_batch_size}); "
                    "the training split is empty or smaller than one batch on every process."
                )
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0

    def skip_nonfinite(
        self,
        losses: dict[str, torch.Tensor],
        parameters: Iterable[torch.nn.Parameter],
        *optimizers,
        forward_snapshot: ForwardSnapshot | None = None,
    ) -> bool:
        """
        Call after the backward pass, before clipping and the optimizer step. True when a loss, or a gradient of
        `parameters`, is NaN or Inf on any process: the caller then skips the update. The optimizers' gradients are
        cleared, `forward_snapshot` (taken before the forward pass) is restored, and the skip is counted once per
        optimizer step; too many in a row raise `NonFiniteLossError`.

        Under fp16 mixed precision the gradients are left to accelerate's gradient scaler, which skips the steps
        whose scaled gradients overflow (and lowers its scale); only the losses are checked here.
        """
        parameters = list(parameters)
        check_gradients = self.accelerator.scaler is None
        gradients = [p.grad for p in parameters if p.grad is not None] if check_gradients else []
        finite, gradient_norm = finite_on_every_process(self.accelerator, losses.values(), gradients)
        if finite:
            return False
        for optimizer in optimizers:
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
        if forward_snapshot is not None:
            forward_snapshot.restore()
        if self.accelerator.sync_gradients:
            values = {name: float(loss.detach()) for name, loss in losses.items()}
            if all(math.isfinite(value) for value in values.values()) and gradient_norm is not None:
                values["gradient_norm"] = float(gradient_norm)  # the losses are finite: the gradients are not
            record_nonfinite(self.state, values, self.args.max_nonfinite_steps, self.checkpoints.latest())
        return True

    def end_step(self, model: torch.nn.Module, logs: dict[str, float], validate: Callable[[], dict]) -> None:
        """After an optimizer step: count it, step the EMA, log, checkpoint and validate when due."""
        state, args = self.state, self.args
        state.step += 1
        state.consecutive_nonfinite = 0
        if self.ema is not None:
            self.ema.step(model.parameters())
        self.progress.update(1)
        if args.log_jsonl:
            log_step_jsonl(self.accelerator, args.log_jsonl, state.step, logs)
        main = self.accelerator.is_main_process
        if state.step % args.logging_steps == 0 or state.step == 1:
            self.progress.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in _PROGRESS_KEYS})
            self.accelerator.log(logs, step=state.step)
            if main:
                self.curves.record(state.step, logs)
        last = state.step == self.max_steps
        if state.step % args.checkpointing_steps == 0 or last:
            self.save_checkpoint()
        if main and (state.step % args.validation_steps == 0 or last):
            self._record_validation(validate())
            model.train()

    def save_checkpoint(self) -> None:
        """`checkpoint-{step}`: accelerate's state plus this run's counters, EMA and quantizer statistics."""
        if self.quantizer is not None:
            self.state.extras["quantizer"] = self.quantizer.statistics_state_dict()
        path = self.checkpoints.save(
            self.accelerator, self.state.step, write_extra=lambda folder: self.state.save(folder, self.ema)
        )
        logger.info("Saved %s", path)

    def finish(self, model: torch.nn.Module, validate: Callable[[], dict]) -> dict | None:
        """
        End of the loop: the final metrics on the main process (validating if no step ran, e.g. a resume at
        `max_steps`), with the EMA weights copied into `model`; None on the other processes.
        """
        self.progress.close()
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        if not self.metrics:
            self._record_validation(validate())
        metrics = self.metrics
        if self.ema is not None:
            self.ema.copy_to(model.parameters())
        metrics["skipped_nonfinite_steps"] = self.state.skipped_nonfinite
        return metrics

    def _record_validation(self, metrics: dict) -> None:
        """Keep a validation's `metrics` (main process); add them to the curves, redraw the figure, send it on."""
        self.metrics = metrics
        step = self.state.step
        self.curves.record(step, {f"val/{k.removeprefix('val_')}": v for k, v in metrics.items() if k != "step"})
        figure = self.curves.plot()
        figure.save(Path(self.args.output_dir, CURVES_FILE))
        log_images(self.accelerator, {"training_curves": figure}, step)
