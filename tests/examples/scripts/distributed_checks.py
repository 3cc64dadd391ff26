"""Checks that need several processes; run by tests/examples/test_train_multi_process.py as

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/examples/scripts/distributed_checks.py

(real gloo processes on the CPU). Every check raises on failure; the main process prints one `OK <check>` line each.

1. Sharding: the training stages' loader (`hf_vqgan.training.loop.make_loader`), prepared by accelerate, gives
   every process disjoint examples whose union is exactly the global batches of one process, in every epoch and after a mid-epoch resume.
2. Quantizer statistics: a `VectorQuantizer` with EMA updates and dead-code restarts, fed different data (and
   different batch sizes) on each process and with a different global RNG on each, holds the same codebook,
   EMA sums, usage counters and restart bookkeeping on every process after every step, equal to what one
   process holding the whole global batch computes.
3. Model replicas: a `VQGANModel` trained through `accelerator.prepare` (DDP, gradient-trained codebook with
   restarts) has identical parameters and buffers on every process after every step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist

from hf_vqgan import VQGANModel
from hf_vqgan.models import quantizer as quantizer_module
from hf_vqgan.models.quantizer import VectorQuantizer
from hf_vqgan.training.loop import make_accelerator, make_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for the shared harness
from testing_utils import small_vqgan_config  # noqa: E402


def gather_objects(value):
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def assert_same_on_every_rank(tensors: dict[str, torch.Tensor], where: str) -> None:
    for name, tensor in tensors.items():
        copies = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(copies, tensor.contiguous())
        for rank, copy in enumerate(copies[1:], start=1):
            if not torch.equal(copies[0], copy):
                raise AssertionError(f"{where}: {name} differs between rank 0 and rank {rank}")


def check_sharding(accelerator) -> None:
    args = argparse.Namespace(dataloader_num_workers=0, seed=0)
    num_examples, batch_size = 50, 4  # per process; 50 // 8 = 6 global batches, 2 examples dropped per epoch
    loader = accelerator.prepare(make_loader(list(range(num_examples)), batch_size, True, args, None))
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        mine = [batch.tolist() for batch in loader]
        everyone = gather_objects(mine)
        flat = [i for rank_batches in everyone for batch in rank_batches for i in batch]
        if len(flat) != len(set(flat)):
            raise AssertionError(f"epoch {epoch}: processes share examples: {everyone}")
        if (
            len(flat)
            != (num_examples // (batch_size * accelerator.num_processes)) * batch_size * accelerator.num_processes
        ):
            raise AssertionError(f"epoch {epoch}: {len(flat)} examples read, expected whole global batches")
        global_batches = [sorted(sum((everyone[r][k] for r in range(len(everyone))), [])) for k in range(len(mine))]
        orders.append(global_batches)
        # After a resume at batch 2 of this epoch each process reads exactly the rest of its own batches.
        loader.set_epoch(epoch)
        rest = [batch.tolist() for batch in accelerator.skip_first_batches(loader, 2)]
        if rest != mine[2:]:
            raise AssertionError(f"epoch {epoch}: a resume at batch 2 reads {rest}, the epoch read {mine[2:]}")
    if orders[0] == orders[1]:
        raise AssertionError("both epochs read the same batches: the sampler ignores set_epoch")
    # Step k of all processes together reads the k-th batch of one process with the global batch size.
    single = single_process_batches(num_examples, batch_size * accelerator.num_processes)
    if [sorted(b) for b in single] != orders[0]:
        raise AssertionError(f"global batches {orders[0]} differ from one process's {single}")
    if accelerator.is_main_process:
        print("OK sharding", flush=True)


def single_process_batches(num_examples: int, batch_size: int) -> list[list[int]]:
    """Epoch 0 of the same loader as one process reads it (accelerate's seedable sampler, seed 0)."""
    from accelerate.data_loader import SeedableRandomSampler

    args = argparse.Namespace(dataloader_num_workers=0, seed=0)
    loader = make_loader(list(range(num_examples)), batch_size, True, args, None)
    sampler = SeedableRandomSampler(data_source=loader.dataset, generator=loader.generator, data_seed=0)
    order = list(sampler)
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def quantizer_state(quantizer: VectorQuantizer) -> dict[str, torch.Tensor]:
    return {**quantizer.state_dict(), **quantizer.statistics_state_dict()}


def check_quantizer(accelerator) -> None:
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(0)
    kwargs = dict(codebook_size=24, code_dim=4, use_ema=True, ema_decay=0.9, dead_code_steps=1, usage_window=3)
    quantizer = VectorQuantizer(**kwargs).train()
    reference = VectorQuantizer(**kwargs).train()  # one process holding the global batch (on every rank)
    reference.load_state_dict(quantizer.state_dict())
    sizes = [2 + r for r in range(world)]  # uneven per-process batches: 18 and 27 latent vectors
    restarts = 0
    restart = quantizer._restart_dead_codes

    def counting_restart(z):
        nonlocal restarts
        restarts += int((quantizer.steps_since_used >= quantizer.dead_code_steps).sum())
        return restart(z)

    quantizer._restart_dead_codes = counting_restart
    for step in range(6):
        data = torch.Generator().manual_seed(step)
        batches = [torch.randn(size, 4, 3, 3, generator=data) * (1 + r) for r, size in enumerate(sizes)]
        torch.manual_seed(1000 * (rank + 1) + step)  # a different global RNG on every rank: rank 0's draw must win
        quantizer(batches[rank])
        assert_same_on_every_rank(quantizer_state(quantizer), f"quantizer step {step}")
        # One process with the whole batch, drawing its restarts from rank 0's RNG.
        torch.manual_seed(1000 + step)
        with mock.patch.object(quantizer_module, "_distributed", return_value=False):
            reference(torch.cat(batches))
        for name, value in quantizer_state(reference).items():
            if not torch.allclose(value.float(), quantizer_state(quantizer)[name].float(), atol=1e-5, rtol=1e-5):
                raise AssertionError(f"step {step}: {name} differs from one process with the global batch")
    if restarts == 0:
        raise AssertionError("no dead-code restart happened; the check did not exercise them")
    if accelerator.is_main_process:
        print("OK quantizer", flush=True)


def check_model_replicas(accelerator) -> None:
    torch.manual_seed(accelerator.process_index)  # different initialisations: prepare() must make them equal
    model = VQGANModel(**small_vqgan_config(sample_size=8, dead_code_steps=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    for step in range(3):
        data = torch.Generator().manual_seed(100 * step + accelerator.process_index)
        pixels = torch.rand(2, 1, 8, 8, generator=data) * 2 - 1
        out = model(pixels)
        loss = (out.sample - pixels).abs().mean() + out.quantizer_loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = {**unwrapped.state_dict(), **unwrapped.quantizer.statistics_state_dict()}
        assert_same_on_every_rank(state, f"model step {step}")
    if accelerator.is_main_process:
        print("OK model replicas", flush=True)


def main() -> int:
    args = argparse.Namespace(gradient_accumulation_steps=1, mixed_precision="no", report_to="none",
                              output_dir=str(Path(sys.argv[1]) if len(sys.argv) > 1 else "."), seed=0)  # fmt: skip
    accelerator = make_accelerator(args)
    if accelerator.num_processes < 2 or not dist.is_initialized():
        raise SystemExit(f"expected several processes, got {accelerator.num_processes}")
    check_sharding(accelerator)
    check_quantizer(accelerator)
    check_model_replicas(accelerator)
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
