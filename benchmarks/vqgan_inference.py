"""Batched, channels-last inference helpers the benchmarks time against the plain `VQGANModel` verbs.

`prepare_vqgan_for_inference`, `tokenize_images` and `reconstruct_images`: eval mode, channels-last weights,
`torch.inference_mode`, batching, and optional autocast (bf16 on GPU). They give the verbs' results (checked by
tests/test_performance_equivalence.py); library users call `VQGANModel.tokenize` / `decode_indices` directly.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def prepare_vqgan_for_inference(model: torch.nn.Module, channels_last: bool = True) -> torch.nn.Module:
    """Eval mode, no gradients and (by default) channels-last weights, in place; returns the model."""
    model.eval().requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.inference_mode()
def tokenize_images(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> torch.LongTensor:
    """
    Codes of images of shape `(num_images, channels, height, width)` in [-1, 1], of shape `(num_images, h, w)`,
    computed in batches of `batch_size` on the model's device (use `prepare_vqgan_for_inference` first).
    `autocast_dtype=torch.bfloat16` runs the encoder in bf16 on GPU; the nearest-code search stays float32, but
    codes whose distances tie to within bf16 precision may differ from the float32 ones.
    """
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, pixel_values.shape[0], batch_size):
        pixels = pixel_values[start : start + batch_size].to(device, non_blocking=True)  # (b, C, H, W)
        with _autocast(device, autocast_dtype):
            chunks.append(model.tokenize(pixels))  # (b, h, w)
    return torch.cat(chunks)


@torch.inference_mode()
def reconstruct_images(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Encode, quantize and decode images of shape `(num_images, channels, height, width)` in [-1, 1], in batches;
    returns float32 reconstructions of the same shape on the model's device."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, pixel_values.shape[0], batch_size):
        pixels = pixel_values[start : start + batch_size].to(device, non_blocking=True)
        with _autocast(device, autocast_dtype):
            quantized = model.quantize(model.encode(pixels).latents).quantized
            chunks.append(model.decode(quantized).sample.float())  # (b, C, H, W)
    return torch.cat(chunks)
