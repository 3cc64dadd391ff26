"""Speed-ups for training and running the VQGAN tokenizer that leave the results unchanged.

Each one is exact up to floating-point reordering (tests/test_performance_equivalence.py compares it with the
plain path on CPU):

- `prepare_vqgan_for_training`: channels-last memory (cuDNN runs bf16 convolutions in NHWC, so NCHW inputs cost
  a transpose around every convolution), gradient checkpointing (`VQGANModel.enable_gradient_checkpointing`) and
  `torch.compile` of the convolution stacks (fuses GroupNorm + SiLU and the elementwise tails).
- `generator_backward`: the generator step of `VQGANLoss` with one backward pass through LPIPS and the
  discriminator instead of two. The plain step calls `autograd.grad` of the reconstruction and GAN losses for the
  adaptive weight and then `backward()` of the total, which runs the VGG and discriminator backward a second
  time. Here both losses are differentiated once, with respect to the reconstruction; the chain rule then gives
  their gradients at the decoder's last layer and the total gradient at the reconstruction.
- `prepare_vqgan_for_inference`, `tokenize_images`, `reconstruct_images`: eval mode, channels-last,
  `torch.inference_mode`, batching, and optional autocast (bf16 on GPU) for tokenising a dataset or
  reconstructing images.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..losses.adversarial import adaptive_gan_weight
from ..losses.vqgan_loss import VQGANGeneratorLossOutput, VQGANLoss

__all__ = [
    "generator_backward",
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


def generator_backward(
    loss_fn: VQGANLoss,
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    quantizer_loss: torch.Tensor,
    global_step: int,
    last_layer: torch.Tensor,
    loss_scale: float = 1.0,
) -> VQGANGeneratorLossOutput:
    """
    `loss_fn.generator_loss(...)` followed by `backward()` of its total, with a single backward pass through the
    perceptual network and the discriminator. Gradients of the autoencoder's parameters equal the plain path's up
    to floating-point reordering; unlike the plain path, no gradient is left on the discriminator's parameters.

    Args:
        loss_fn ([`VQGANLoss`]): the loss composer (its `discriminator`, `perceptual` and weights are used).
        inputs (`torch.Tensor` of shape `(batch_size, channels, height, width)`): real images in [-1, 1].
        reconstructions (`torch.Tensor` of the same shape): the model's reconstructions (with their graph).
        quantizer_loss (`torch.Tensor`): the model output's `quantizer_loss`.
        global_step (`int`): the optimizer step, for the discriminator warm-up.
        last_layer (`torch.Tensor`): `model.last_layer_weight`, for the adaptive GAN weight.
        loss_scale (`float`, defaults to 1.0): multiplies the gradients (e.g. `1 / gradient_accumulation_steps`).

    Returns:
        `VQGANGeneratorLossOutput`, the same terms `loss_fn.generator_loss` reports; `total` is detached (its
        gradients are already accumulated).
    """
    if inputs.shape != reconstructions.shape:
        raise ValueError(
            f"`inputs` and `reconstructions` must have the same shape, got {tuple(inputs.shape)} and "
            f"{tuple(reconstructions.shape)}."
        )
    if not reconstructions.requires_grad:
        raise ValueError("`reconstructions` must carry the model's graph (call this with gradients enabled).")
    # Cut the graph at the reconstruction: the loss terms below are differentiated only down to it, once each.
    leaf = reconstructions.detach().requires_grad_(True)
    zero = leaf.new_zeros(())
    pixel = loss_fn._pixel_loss(inputs, leaf)
    perceptual = loss_fn.perceptual(inputs, leaf).mean() if loss_fn.perceptual is not None else zero
    reconstruction = loss_fn.pixel_weight * pixel + loss_fn.perceptual_weight * perceptual
    quantizer = quantizer_loss.mean()

    gan, adaptive_weight, disc_factor = zero, zero, 0.0
    if loss_fn.should_update_discriminator(global_step):
        disc_factor = 1.0
        gan = loss_fn.gen_loss_fn(loss_fn.discriminator(leaf))
        rec_grad, gan_grad = (torch.autograd.grad(loss, leaf)[0] for loss in (reconstruction, gan))  # (B, C, H, W)
        # d loss / d last_layer = (d loss / d reconstruction) pulled back through the last convolution only.
        rec_weight_grad, gan_weight_grad = (
            torch.autograd.grad(reconstructions, last_layer, grad, retain_graph=True)[0]
            for grad in (rec_grad, gan_grad)
        )
        adaptive_weight = loss_fn.disc_weight * _adaptive_weight_from_grads(rec_weight_grad, gan_weight_grad)
        output_grad = rec_grad + (adaptive_weight * disc_factor) * gan_grad
    else:
        output_grad = torch.autograd.grad(reconstruction, leaf)[0] if reconstruction.requires_grad else None

    roots, grads = [loss_fn.codebook_weight * quantizer], [torch.full_like(quantizer, loss_scale)]
    if output_grad is not None:
        roots.append(reconstructions)
        grads.append((output_grad * loss_scale).to(reconstructions.dtype))
    with torch.autocast(leaf.device.type, enabled=False):  # backward passes take the forward's dtypes anyway
        torch.autograd.backward(roots, grads)

    total = reconstruction + adaptive_weight * disc_factor * gan + loss_fn.codebook_weight * quantizer
    return VQGANGeneratorLossOutput(
        total=total.detach(),
        pixel=pixel.detach(),
        perceptual=perceptual.detach(),
        reconstruction=reconstruction.detach(),
        gan=gan.detach(),
        adaptive_weight=adaptive_weight,
        disc_factor=disc_factor,
        quantizer=quantizer.detach(),
    )


def _adaptive_weight_from_grads(rec_grad: torch.Tensor, gan_grad: torch.Tensor) -> torch.Tensor:
    # `adaptive_gan_weight` differentiates two losses itself; handing it two linear "losses" whose gradients are the
    # given ones keeps the formula (norm ratio, eps, clamp) in one place.
    probe = torch.zeros_like(rec_grad, requires_grad=True)
    return adaptive_gan_weight((probe * rec_grad).sum(), (probe * gan_grad).sum(), probe)


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
