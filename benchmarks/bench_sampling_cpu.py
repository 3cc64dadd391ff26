"""Sampling speed of the VQGAN prior on CPU: the KV cache versus taming's original sampler.

taming-transformers samples by re-running the whole sequence through the GPT for every new token, so a 16x16 grid
costs 256 forward passes over ever longer sequences. `VQGANPriorForCausalLM.sample()` keeps keys and values in
transformers' cache and feeds one token per step. Both run here, side by side, from the same random prior and the
same generator seed; `NoCacheDecodeStep` is the original algorithm.

    python benchmarks/bench_sampling_cpu.py                      # 8 layers, width 512, 16x16 grid, batch 4
    python benchmarks/bench_sampling_cpu.py --n-layer 2 --n-embd 64 --n-head 4 --latent-size 4   # seconds
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_vqgan.models.prior import VQGANPriorConfig, VQGANPriorForCausalLM
from hf_vqgan.models.sampling import DecodeStep, KVCacheDecodeStep, NoCacheDecodeStep


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-head", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--latent-size", type=int, default=16, help="side of the square latent grid")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=0, help="0 for an unconditional prior")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def timed_sample(
    model: VQGANPriorForCausalLM, decode_step: DecodeStep, args: argparse.Namespace
) -> tuple[float, torch.Tensor]:
    kwargs = {"batch_size": args.batch_size}
    if args.num_classes > 0:
        kwargs = {"class_labels": torch.arange(args.batch_size) % args.num_classes}
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    samples = model.sample(**kwargs, generator=generator, decode_step=decode_step)
    return time.perf_counter() - start, samples


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = VQGANPriorConfig(
        codebook_size=args.codebook_size,
        latent_height=args.latent_size,
        latent_width=args.latent_size,
        num_classes=args.num_classes,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
    )
    model = VQGANPriorForCausalLM(config).eval()
    parameters = sum(p.numel() for p in model.parameters())
    dtype = next(model.parameters()).dtype

    # Warm-up: a short completion (most of the grid given) so one-time costs do not land on either timed run.
    warmup_prefix = torch.zeros(args.batch_size, config.num_image_tokens - 4, dtype=torch.long)
    warmup = {"class_labels": torch.zeros(args.batch_size, dtype=torch.long)} if args.num_classes > 0 else {}
    model.sample(**warmup, prefix_indices=warmup_prefix)

    cached_seconds, cached = timed_sample(model, KVCacheDecodeStep(), args=args)
    recomputed_seconds, recomputed = timed_sample(model, NoCacheDecodeStep(), args=args)

    print(
        f"prior: n_layer={config.n_layer} n_embd={config.n_embd} n_head={config.n_head} "
        f"codebook_size={config.codebook_size} num_classes={config.num_classes} ({parameters / 1e6:.1f}M parameters)"
    )
    print(
        f"sampling {config.num_image_tokens} tokens ({config.latent_height}x{config.latent_width} grid), "
        f"batch {args.batch_size}, device {model.device}, dtype {dtype}, torch threads {torch.get_num_threads()}, "
        f"attention {config._attn_implementation}, torch {torch.__version__}"
    )
    print(f"KV cache (sample(), KVCacheDecodeStep):       {cached_seconds:8.2f} s")
    print(f"recompute prefix (taming, NoCacheDecodeStep): {recomputed_seconds:8.2f} s")
    print(f"speed-up: {recomputed_seconds / cached_seconds:.1f}x")
    print(f"identical samples from the same seed: {torch.equal(cached, recomputed)}")


if __name__ == "__main__":
    main()
