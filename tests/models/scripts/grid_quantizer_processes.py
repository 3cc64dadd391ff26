"""Two gloo processes quantize halves of a batch with FSQ and LFQ; run by tests/models/test_fsq_lfq.py as
`python grid_quantizer_processes.py` (it starts the processes itself). Rank 0 prints `OK <type>` per quantizer.

What must agree with one process holding the whole batch (computed here before spawning): the usage history and
step, the batch's perplexity and usage, the losses averaged over the processes (what DDP's gradient averaging
optimises), and the gradients of the latents, which are the world size times the single-process ones (DDP divides
by it). LFQ's codebook entropy is taken over both processes, so its value and gradient match only if the batch
average is all-reduced, differentiably.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_vqgan.models.fsq import FiniteScalarQuantizer
from hf_vqgan.models.lfq import LookupFreeQuantizer

WORLD = 2


def build(quantizer_type: str):
    if quantizer_type == "fsq":
        return FiniteScalarQuantizer([4, 3, 3], usage_window=4).train()
    return LookupFreeQuantizer(16, entropy_weight=0.5, entropy_temperature=0.5, usage_window=4).train()


def run(quantizer_type: str, latents: torch.Tensor) -> dict[str, torch.Tensor]:
    quantizer = build(quantizer_type)
    latents = latents.clone().requires_grad_()
    out = quantizer(latents)
    out.loss.backward() if out.loss.requires_grad else None
    out.quantized.mean().backward()  # the straight-through path too (a mean, as the losses are)
    result = {"perplexity": out.perplexity, "usage": out.usage, "loss": out.loss.detach(), "grad": latents.grad,
              **quantizer.statistics_state_dict()}  # fmt: skip
    if out.entropy_loss is not None:
        result["entropy_loss"] = out.entropy_loss.detach()
    return result


def worker(rank: int, port: int, batches: dict, references: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    for quantizer_type, latents in batches.items():
        half = latents.shape[0] // WORLD
        mine = run(quantizer_type, latents[rank * half : (rank + 1) * half])
        expected = references[quantizer_type]
        for name in ("perplexity", "usage", "usage_history", "usage_step"):
            assert torch.allclose(mine[name].float(), expected[name].float(), atol=1e-5), (quantizer_type, name)
        for name in ("loss", "entropy_loss"):
            if name in mine:  # the processes' mean, as DDP averages their gradients
                mean = mine[name].clone()
                dist.all_reduce(mean)
                assert torch.allclose(mean / WORLD, expected[name], atol=1e-5), (quantizer_type, name, mean, expected)
        grad = expected["grad"][rank * half : (rank + 1) * half] * WORLD
        assert torch.allclose(mine["grad"], grad, atol=1e-5), (quantizer_type, (mine["grad"] - grad).abs().max())
        if rank == 0:
            print("OK", quantizer_type, flush=True)
    dist.destroy_process_group()


def main() -> None:
    torch.manual_seed(0)
    batches = {name: torch.randn(8, build(name).code_dim, 3, 3) * 1.5 for name in ("fsq", "lfq")}
    references = {name: run(name, latents) for name, latents in batches.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children start with hf_vqgan already imported (a spawned one would import diffusers again).
    mp.start_processes(worker, args=(port, batches, references), nprocs=WORLD, start_method="fork")


if __name__ == "__main__":
    main()
