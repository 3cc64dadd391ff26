"""The shared test harness: tiny configs and seeded builders that run in milliseconds on a CPU.

Every test file builds its models from here, passing as overrides the values its assertions depend on, so a tiny
config is declared once. Configs are plain keyword dicts (they also go to `--model_config` JSON files); builders
seed torch's global RNG first (`seed=None` continues the current stream) and return modules in eval mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from hf_vqgan import VQGANModel, VQGANPriorConfig, VQGANPriorForCausalLM, VQGANTransformerPipeline


def seeded(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with `seed`, for reproducible draws that leave the global RNG alone."""
    return torch.Generator().manual_seed(seed)


def random_image(
    seed: int = 0, size: int | tuple[int, int] = 16, mode: str = "RGB", block: int = 1
) -> PIL.Image.Image:
    """Uniform random pixels of `size` (an int, or (height, width)) in `mode` ("RGB", "RGBA" or "L"). With `block`
    > 1, constant blocks of `block` x `block` pixels: smooth areas with sharp borders (edge maps find edges)."""
    height, width = (size, size) if isinstance(size, int) else size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    if block > 1:
        pixels = np.kron(pixels[::block, ::block], np.ones((block, block, 1), dtype=np.uint8))
    return PIL.Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)


FILE_FAULTS = ("missing", "empty", "truncated", "bit-flipped")


def corrupt_file(path: str | os.PathLike, fault: str) -> None:
    """Damage a file as disks and kills do (`FILE_FAULTS`): delete it, empty it, cut it to half its length, or flip
    one bit (0x10) of its middle byte."""
    path = Path(path)
    data = path.read_bytes()
    middle = len(data) // 2
    if fault == "missing":
        path.unlink()
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "truncated":
        path.write_bytes(data[:middle])
    elif fault == "bit-flipped":
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :])
    else:
        raise ValueError(f"fault must be one of {FILE_FAULTS}, got {fault!r}")


# ---------------------------------------------------------------------------------------------------- configs
def vqgan_config(**overrides) -> dict:
    """`VQGANModel` kwargs: RGB, 32 px, f=2 (a 16x16 grid), attention at 16 px (level 1), 64 codes of 8 dims."""
    config = dict(base_channels=32, channel_multipliers=(1, 2), attention_resolutions=(16,), sample_size=32,
                  latent_channels=16, code_dim=8, codebook_size=64, norm_num_groups=8)  # fmt: skip
    return {**config, **overrides}


def small_vqgan_config(channels: int = 1, **overrides) -> dict:
    """`VQGANModel` kwargs: `channels` in and out, 16 px, f=2 (an 8x8 grid), no attention, one res block per level,
    16 codes of 4 dims; a short training run of examples/train.py takes about a second."""
    config = dict(in_channels=channels, out_channels=channels, base_channels=8, channel_multipliers=(1, 2),
                  num_res_blocks=1, attention_resolutions=(), sample_size=16, latent_channels=8, code_dim=4,
                  codebook_size=16, norm_num_groups=4)  # fmt: skip
    return {**config, **overrides}


def restarting_vqgan_config(channels: int = 1, **overrides) -> dict:
    """`small_vqgan_config()` with everything in the quantizer that has state or draws random numbers: an EMA
    codebook of 32 codes whose unused ones restart after 2 steps (from the global RNG), usage over 4 steps."""
    restarts = dict(codebook_size=32, use_ema=True, dead_code_steps=2, usage_window=4)
    return small_vqgan_config(channels, **{**restarts, **overrides})


def grid_vqgan_config(quantizer_type: str, channels: int = 1, **overrides) -> dict:
    """`small_vqgan_config()` with a fixed-grid quantizer of about the same 16 codes: FSQ levels [4, 4] (16 codes
    of 2 dims) or LFQ 2^4 (4 dims); `code_dim` and `codebook_size` are left for the model to derive."""
    grid = {"fsq": dict(fsq_levels=[4, 4]), "lfq": dict(codebook_size=16)}[quantizer_type]
    config = small_vqgan_config(channels, quantizer_type=quantizer_type, **grid)
    config.pop("code_dim")
    if quantizer_type == "fsq":
        config.pop("codebook_size")
    return {**config, **overrides}


def prior_size(**overrides) -> dict:
    """The size kwargs of a one-layer prior (what `--model_config` of the transformer stage takes)."""
    return {**dict(n_layer=1, n_embd=32, n_head=2), **overrides}


def prior_config(**overrides) -> dict:
    """`VQGANPriorConfig` kwargs: a one-layer unconditional prior over 16 codes on an 8x8 grid."""
    return {**dict(codebook_size=16, latent_height=8, latent_width=8), **prior_size(), **overrides}


def error_vqgan_config(**overrides) -> dict:
    """`vqgan_config()` at 8 px (a 4x4 grid), one res block per level, no attention: the tokenizer of the bad-input
    tables, whose expected messages name its sizes (3 channels, factor 2, 64 codes of 8 dims, width 32)."""
    return vqgan_config(**{**dict(num_res_blocks=1, attention_resolutions=(), sample_size=8), **overrides})


def error_prior_config(**overrides) -> dict:
    """`prior_config()` over the 64 codes of `error_vqgan_config()` on its 4x4 grid, 16 wide: the prior of the
    bad-input tables (a vocabulary of 65, 17 positions without classes)."""
    return prior_config(**{**dict(codebook_size=64, latent_height=4, latent_width=4, n_embd=16), **overrides})


# --------------------------------------------------------------------------------------------------- builders
def tiny_vqgan(seed: int | None = 0, **config) -> VQGANModel:
    """`VQGANModel(**config)` in eval mode (`vqgan_config()` when no kwargs are given), built after seeding."""
    if seed is not None:
        torch.manual_seed(seed)
    return VQGANModel(**(config or vqgan_config())).eval()


def tiny_prior(seed: int | None = 0, **overrides) -> VQGANPriorForCausalLM:
    """`VQGANPriorForCausalLM` of `prior_config(**overrides)` in eval mode, built after seeding."""
    if seed is not None:
        torch.manual_seed(seed)
    return VQGANPriorForCausalLM(VQGANPriorConfig(**prior_config(**overrides))).eval()


def peaked(prior: VQGANPriorForCausalLM, std: float = 0.3) -> VQGANPriorForCausalLM:
    """Redraw the prior's matrices from N(0, std) (from the global RNG). GPT-2's N(0, 0.02) start gives
    near-uniform logits that ignore the class; larger weights make the class, the context and the sampling options
    change what is sampled."""
    with torch.no_grad():
        for weight in prior.parameters():
            if weight.ndim == 2:
                weight.normal_(std=std)
    return prior


def tiny_pipeline(vqgan: VQGANModel, transformer: VQGANPriorForCausalLM, **components) -> VQGANTransformerPipeline:
    """`VQGANTransformerPipeline` of the given components, its progress bar off."""
    pipe = VQGANTransformerPipeline(vqgan=vqgan, transformer=transformer, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(path: str | os.PathLike, **kwargs) -> VQGANTransformerPipeline:
    """`VQGANTransformerPipeline.from_pretrained(path, **kwargs)`, its progress bar off."""
    pipe = VQGANTransformerPipeline.from_pretrained(path, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sampling_pipeline(num_classes: int = 3, channels: int = 3, seed: int = 0) -> VQGANTransformerPipeline:
    """A 16 px pipeline whose sampling options visibly matter: `channels`-channel tokenizer with 32 codes (f=2, an
    8x8 grid) and a two-layer `peaked` prior with `num_classes` classes, all drawn after one seeding."""
    vqgan = tiny_vqgan(seed, **vqgan_config(in_channels=channels, out_channels=channels, attention_resolutions=(),
                                            sample_size=16, codebook_size=32))  # fmt: skip
    prior = tiny_prior(None, codebook_size=32, num_classes=num_classes, n_layer=2)
    return tiny_pipeline(vqgan, peaked(prior))


def write_random_vgg16_features(path: str | os.PathLike, seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a seeded, randomly initialised torchvision VGG16's `features.*` state dict to `path`; returns it.

    Tests of code that runs LPIPS cannot download the pretrained backbone; they pass this file as local weights
    (`LPIPSLoss(vgg_weights_path=...)`, `train.py vqgan --lpips_vgg_weights`). Only the `features.*` tensors (what
    LPIPS uses) are saved: 59 MB instead of 528 MB. Distances computed with it are not a perceptual measure.
    """
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.vgg16(weights=None)
    state_dict = {f"features.{name}": tensor for name, tensor in model.features.state_dict().items()}
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    torch.save(state_dict, tmp)
    os.replace(tmp, path)
    return state_dict


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` 8-bit RGB pixels and which holds no pixel data: the smallest
    decompression bomb (57 bytes), refused from its header or failing to decode."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
