"""Encode + quantize + decode throughput of `VQGANModel` against diffusers' `VQModel` with the same architecture.

The default is taming-transformers' ImageNet f16 tokenizer (128 base channels, multipliers 1,1,2,2,4, two ResNet
blocks, attention at 16x16 and in the middle blocks, 256 latent channels, 1024 codes of dimension 256, 256 px).
Both models run in one process, under `torch.inference_mode`, in float32, on random weights and the same random
input; their repeats are interleaved (and the order alternates) so that load from other processes on the machine
falls on both alike. The figure reported is the median over repeats of wall-clock time; the process CPU time of
each run (all threads) is printed too, as it moves less than wall time when other processes share the cores.

    python benchmarks/bench_vqgan_encode_decode.py --batch-size 2 --repeats 5
    python benchmarks/bench_vqgan_encode_decode.py --tiny  # a few seconds, to check the script runs
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from diffusers import VQModel

from hf_vqgan import VQGANModel
from hf_vqgan.training.presets import vqgan_preset

TAMING_F16 = {**vqgan_preset("taming-imagenet-f16-1024"), "norm_num_groups": 32}
TINY = dict(
    base_channels=32,
    channel_multipliers=(1, 2, 2),
    num_res_blocks=1,
    attention_resolutions=(16,),
    sample_size=32,
    latent_channels=16,
    code_dim=16,
    codebook_size=64,
    norm_num_groups=8,
)


def diffusers_equivalent(config: dict) -> VQModel:
    """A diffusers `VQModel` with the same layers as `VQGANModel(**config)`.

    diffusers places attention by block type rather than by resolution: level `i` (resolution `sample_size / 2**i`)
    gets an `Attn...Block2D` when that resolution is in `attention_resolutions`. Up blocks run coarsest first, so
    their types are the down types reversed. Both models always have attention in the middle blocks.
    """
    widths = [config["base_channels"] * m for m in config["channel_multipliers"]]
    attention = [config["sample_size"] // 2**i in config["attention_resolutions"] for i in range(len(widths))]
    down_types = ["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attention]
    up_types = ["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attention)]
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=tuple(down_types),
        up_block_types=tuple(up_types),
        block_out_channels=tuple(widths),
        layers_per_block=config["num_res_blocks"],
        act_fn="silu",
        latent_channels=config["latent_channels"],
        sample_size=config["sample_size"],
        num_vq_embeddings=config["codebook_size"],
        norm_num_groups=config["norm_num_groups"],
        vq_embed_dim=config["code_dim"],
        mid_block_add_attention=True,
    )


def ours_round_trip(model: VQGANModel, pixels: torch.Tensor) -> torch.Tensor:
    quantized = model.quantize(model.encode(pixels).latents).quantized
    return model.decode(quantized).sample


def diffusers_round_trip(model: VQModel, pixels: torch.Tensor) -> torch.Tensor:
    # `VQModel.decode` quantizes its input before decoding, so this is the same encode + quantize + decode.
    return model.decode(model.encode(pixels).latents).sample


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=None, help="Image side in pixels (default: sample_size).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats per model (the median is reported).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed repeats per model before timing.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--tiny", action="store_true", help="A tiny configuration, to check the script quickly.")
    parser.add_argument(
        "--channels-last", action="store_true", help="Weights and input of both models in channels-last layout."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = TINY if args.tiny else TAMING_F16
    resolution = args.resolution or config["sample_size"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    torch.manual_seed(args.seed)
    ours = VQGANModel(**config).to(device).eval()
    theirs = diffusers_equivalent(config).to(device).eval()
    if num_parameters(ours) != num_parameters(theirs):
        raise RuntimeError(
            f"The two models differ in size ({num_parameters(ours)} vs {num_parameters(theirs)} parameters); "
            "the diffusers configuration does not mirror ours."
        )
    pixels = torch.rand(args.batch_size, 3, resolution, resolution, device=device) * 2 - 1  # (B, 3, H, W)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    ours, theirs = ours.to(memory_format=layout), theirs.to(memory_format=layout)
    pixels = pixels.contiguous(memory_format=layout)

    runs = {"hf_vqgan VQGANModel": (ours_round_trip, ours), "diffusers VQModel": (diffusers_round_trip, theirs)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu_times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for repeat in range(args.warmup + args.repeats):
            # Alternate which model goes first, so neither always follows the other's cache state or load spike.
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                fn, model = runs[name]
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, cpu_start = time.perf_counter(), time.process_time()
                sample = fn(model, pixels)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
                assert sample.shape == pixels.shape, sample.shape
                if repeat >= args.warmup:
                    times[name].append(elapsed)
                    cpu_times[name].append(cpu_elapsed)

    print(
        f"device: {device} ({platform.processor() or platform.machine()}), dtype: float32, torch {torch.__version__}"
    )
    print(
        f"torch threads: {torch.get_num_threads()}, inference_mode, batch {args.batch_size}, {resolution}px, "
        f"{'channels-last' if args.channels_last else 'contiguous (NCHW)'} layout"
    )
    print(f"config: {config}")
    print(f"parameters: {num_parameters(ours):,} each; {args.warmup} warm-up + {args.repeats} timed repeats")
    ips, cpu = {}, {}
    for name, values in times.items():
        median = statistics.median(values)
        ips[name] = args.batch_size / median
        cpu[name] = statistics.median(cpu_times[name])
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{name:>22}: {ips[name]:8.3f} images/s  (median {median:.3f} s per batch, runs: {spread}; "
            f"median CPU time {cpu[name]:.3f} s)"
        )
    ours_name, theirs_name = list(runs)
    print(f"ratio hf_vqgan / diffusers, images/s (wall): {ips[ours_name] / ips[theirs_name]:.3f}")
    print(f"ratio diffusers / hf_vqgan, CPU time per batch: {cpu[theirs_name] / cpu[ours_name]:.3f}")


if __name__ == "__main__":
    main()
