"""Speed-ups for training and running the VQGAN tokenizer that leave the results unchanged.

Each one is exact up to floating-point reordering (tests/test_performance_equivalence.py compares it with the
plain path on CPU):

- `prepare_vqgan_for_training`: channels-last memory (cuDNN runs bf16 convolutions in NHWC, so NCHW inputs cost
  a transpose around every convolution), gradient checkpointing (`VQGANModel.enable_gradient_checkpointing`) and
  `torch.compile` of the convolution stacks (fuses GroupNorm + SiLU and the elementwise tails).
- the single-backward generator loss lives in the loss itself: `VQGANLoss.generator_loss(..., single_backward=True)`
  (the default of `examples/train.py vqgan`, `--generator_backward`).
- `prepare_vqgan_for_inference`, `tokenize_images`, `reconstruct_images`: eval mode, channels-last,
  `torch.inference_mode`, batching, and optional autocast (bf16 on GPU) for tokenising a dataset or
  reconstructing images.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..losses.vqgan_loss import VQGANLoss

__all__ = [
    "prepare_vqgan_for_inference",
    "prepare_vqgan_for_training",
    "reconstruct_images",
    "tokenize_images",
]


def prepare_vqgan_for_training(
    model: torch.nn.Module,
    loss_fn: VQGANLoss | None = None,
    *,
    channels_last: bool = False,
    gradient_checkpointing: bool = False,
    compile: bool = False,
) -> None:
    """
    Switch on result-preserving speed-ups of a `VQGANModel` (and of its loss's networks), in place, before
    `accelerator.prepare`.

    Args:
        model (`VQGANModel`): the tokenizer being trained.
        loss_fn ([`VQGANLoss`], *optional*): its LPIPS network and discriminator get the same memory format, and
            the discriminator is compiled with the model.
        channels_last (`bool`): store weights (and so activations) in NHWC.
        gradient_checkpointing (`bool`): recompute encoder/decoder blocks in the backward pass (memory for time).
        compile (`bool`): `torch.compile` the encoder, the decoder and the discriminator. The quantizer stays
            eager: its code-usage statistics and dead-code restarts are Python-side bookkeeping.
    """
    if gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if channels_last:
        for module in (model, loss_fn):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if compile:
        model.encoder.compile()
        model.decoder.compile()
        if loss_fn is not None and loss_fn.discriminator is not None:
            loss_fn.discriminator.compile()


# ---------------------------------------------------------------------------------------------------- inference
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
