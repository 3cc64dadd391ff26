"""Speed-ups for training the VQGAN tokenizer that leave the results unchanged.

Each one is exact up to floating-point reordering (tests/training/test_speedups.py compares it with the
plain path on CPU):

- `prepare_vqgan_for_training`: channels-last memory (cuDNN runs bf16 convolutions in NHWC, so NCHW inputs cost
  a transpose around every convolution), gradient checkpointing (`VQGANModel.enable_gradient_checkpointing`) and
  `torch.compile` of the convolution stacks (fuses GroupNorm + SiLU and the elementwise tails).
- the single-backward generator loss lives in the loss itself: `VQGANLoss.generator_loss(..., single_backward=True)`
  (the default of `examples/train.py vqgan`, `--generator_backward`).
"""

from __future__ import annotations

import torch

from ..losses.vqgan_loss import VQGANLoss

__all__ = ["prepare_vqgan_for_training"]


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
