"""The stage-1 VQGAN objective (Esser et al. 2021, Sec. 3.1): reconstruction, quantizer and adaptive GAN terms.

Generator step (encoder, quantizer, decoder):

    total = reconstruction + adaptive_weight * disc_factor * gan + codebook_weight * quantizer
    reconstruction = pixel_weight * pixel + perceptual_weight * perceptual

with `pixel` the mean L1 (or L2) error, `perceptual` the mean LPIPS distance, `quantizer` the codebook and
commitment terms the model returns, `gan` the generator's adversarial loss on the discriminator's logits, and
`adaptive_weight = disc_weight * ||grad reconstruction|| / (||grad gan|| + 1e-4)` at the decoder's last layer.

Discriminator step: the discriminator loss on real images and detached reconstructions.

Before `disc_start` steps `disc_factor` is 0: the discriminator is neither run in the generator step nor updated
(`should_update_discriminator`), as in the reference, which lets the autoencoder settle first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import PatchGANDiscriminator
from .adversarial import adaptive_gan_weight, adaptive_weight_from_grads, get_discriminator_loss, get_generator_loss
from .perceptual import LPIPSLoss

PIXEL_LOSSES = ("l1", "l2", "cross_entropy")


class _LossOutput:
    def to_log_dict(self, prefix: str = "") -> dict[str, float]:
        """Every term as a Python float, keyed by `prefix + field name`, for loggers (terms that are None left out)."""
        return {f"{prefix}{f.name}": float(torch.as_tensor(getattr(self, f.name)).detach()) for f in fields(self)
                if getattr(self, f.name) is not None}  # fmt: skip


@dataclass
class VQGANGeneratorLossOutput(_LossOutput):
    """
    Args:
        total (`torch.Tensor`): The loss to backpropagate through the autoencoder.
        pixel (`torch.Tensor`): Mean L1 or L2 pixel error (unweighted).
        perceptual (`torch.Tensor`): Mean LPIPS distance (unweighted; 0 when `perceptual_weight` is 0).
        reconstruction (`torch.Tensor`): `pixel_weight * pixel + perceptual_weight * perceptual` (taming's "nll").
        gan (`torch.Tensor`): Generator adversarial loss (unweighted; 0 before `disc_start`).
        adaptive_weight (`torch.Tensor`): The detached GAN weight, already multiplied by `disc_weight` (0 before
            `disc_start` and when gradients are disabled).
        disc_factor (`float`): 1.0 once the GAN terms are on, else 0.0.
        quantizer (`torch.Tensor`): The quantizer's codebook + commitment loss (unweighted).
        kl (`torch.Tensor`, *optional*): The Gumbel quantizer's KL-to-uniform term (unweighted, already inside
            `quantizer` with its weight); logged as `kl`, None for other quantizers.
    """

    total: torch.Tensor
    pixel: torch.Tensor
    perceptual: torch.Tensor
    reconstruction: torch.Tensor
    gan: torch.Tensor
    adaptive_weight: torch.Tensor
    disc_factor: float
    quantizer: torch.Tensor
    # --- gumbel: the KL term, logged (engineer gumbel) ---
    kl: torch.Tensor | None = None


@dataclass
class VQGANDiscriminatorLossOutput(_LossOutput):
    """
    Args:
        loss (`torch.Tensor`): The loss to backpropagate through the discriminator (0 before `disc_start`).
        logits_real (`torch.Tensor`): Mean discriminator logit on real images (detached).
        logits_fake (`torch.Tensor`): Mean discriminator logit on reconstructions (detached).
    """

    loss: torch.Tensor
    logits_real: torch.Tensor
    logits_fake: torch.Tensor


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")


class VQGANLoss(nn.Module):
    r"""
    Composes VQGAN's stage-1 losses and owns the modules they need: the frozen LPIPS network (only when
    `perceptual_weight > 0`) and the PatchGAN discriminator (only when `disc_weight > 0`).

    `perceptual_weight=0, disc_weight=0, pixel_loss="l2"` gives the plain VQ-VAE objective.

    Args:
        pixel_loss (`str`, defaults to `"l1"`): `"l1"` (the reference), `"l2"`, or `"cross_entropy"` for
            segmentation tokenizers (one-hot label maps in, per-label logits out).
        pixel_weight (`float`, defaults to 1.0): Weight of the pixel term.
        perceptual_weight (`float`, defaults to 1.0): Weight of the LPIPS term; 0 skips building the network.
        lpips_vgg_weights_path (`str` or `os.PathLike`, *optional*): Local torchvision VGG16 weights for LPIPS
            (see `LPIPSLoss`).
        codebook_weight (`float`, defaults to 1.0): Weight of the quantizer's codebook + commitment loss.
        disc_weight (`float`, defaults to 0.8): Factor on the adaptive GAN weight; 0 removes the discriminator.
            taming's class default is 1.0, but every released taming VQGAN config trains with 0.8.
        disc_start (`int`, defaults to 10000): First global step with GAN terms and discriminator updates
            (taming's custom-data config uses 10000; its ImageNet model used 250001).
        disc_loss (`str`, defaults to `"hinge"`): Discriminator loss, see `hf_vqgan.losses.adversarial`.
        gen_loss (`str`, *optional*): Generator loss; defaults to the one named like `disc_loss`.
        disc_in_channels, disc_base_channels, disc_num_layers, disc_norm_type, disc_norm_num_groups: The
            `PatchGANDiscriminator` config (defaults 3, 64, 3, `"batch"`, 32, as in the reference).
    """

    def __init__(
        self,
        pixel_loss: str = "l1",
        pixel_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        lpips_vgg_weights_path: str | os.PathLike | None = None,
        codebook_weight: float = 1.0,
        disc_weight: float = 0.8,
        disc_start: int = 10_000,
        disc_loss: str = "hinge",
        gen_loss: str | None = None,
        disc_in_channels: int = 3,
        disc_base_channels: int = 64,
        disc_num_layers: int = 3,
        disc_norm_type: str = "batch",
        disc_norm_num_groups: int = 32,
    ):
        super().__init__()
        if pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"`pixel_loss` must be one of {list(PIXEL_LOSSES)}, got {pixel_loss!r}.")
        for name, value in [
            ("pixel_weight", pixel_weight),
            ("perceptual_weight", perceptual_weight),
            ("codebook_weight", codebook_weight),
            ("disc_weight", disc_weight),
        ]:
            _check_non_negative(name, value)
        if isinstance(disc_start, bool) or not isinstance(disc_start, int) or disc_start < 0:
            raise ValueError(f"`disc_start` must be a non-negative int, got {disc_start!r}.")
        self.pixel_loss = pixel_loss
        self.pixel_weight = float(pixel_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.codebook_weight = float(codebook_weight)
        self.disc_weight = float(disc_weight)
        self.disc_start = disc_start
        self.disc_loss_name = disc_loss
        self.gen_loss_name = disc_loss if gen_loss is None else gen_loss
        # Look the names up now so that a typo fails at start-up, even when the discriminator is disabled.
        self.disc_loss_fn = get_discriminator_loss(self.disc_loss_name)
        self.gen_loss_fn = get_generator_loss(self.gen_loss_name)

        self.perceptual = LPIPSLoss(vgg_weights_path=lpips_vgg_weights_path) if self.perceptual_weight > 0 else None
        self.discriminator = (
            PatchGANDiscriminator(
                in_channels=disc_in_channels,
                base_channels=disc_base_channels,
                num_layers=disc_num_layers,
                norm_type=disc_norm_type,
                norm_num_groups=disc_norm_num_groups,
            )
            if self.disc_weight > 0
            else None
        )

    def should_update_discriminator(self, global_step: int) -> bool:
        """Whether the training loop should run a discriminator step at `global_step` (also: GAN terms are on)."""
        return self.discriminator is not None and global_step >= self.disc_start

    def _pixel_loss(self, inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        if self.pixel_loss == "l1":
            return F.l1_loss(reconstructions, inputs)
        if self.pixel_loss == "cross_entropy":
            # Segmentation tokenizers: inputs are one-hot label maps, reconstructions are per-label logits.
            return F.cross_entropy(reconstructions.float(), inputs.argmax(dim=1))
        return F.mse_loss(reconstructions, inputs)

    def generator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        quantizer_loss: torch.Tensor,
        global_step: int,
        last_layer: torch.Tensor | None = None,
        single_backward: bool = False,
        kl_loss: torch.Tensor | None = None,
    ) -> VQGANGeneratorLossOutput:
        """
        The autoencoder's loss.

        Args:
            inputs (`torch.Tensor` of shape `(batch_size, channels, height, width)`): Real images in [-1, 1].
            reconstructions (`torch.Tensor` of the same shape): The model's reconstructions (not detached).
            quantizer_loss (`torch.Tensor`): The model output's `quantizer_loss`.
            global_step (`int`): The current optimizer step, for the discriminator warm-up.
            last_layer (`torch.Tensor`, *optional*): `model.last_layer_weight`; required once the GAN term is on and
                gradients are enabled. With gradients disabled (evaluation) the adaptive weight is 0, as in taming.
            single_backward (`bool`, defaults to `False`): Run the backward pass of LPIPS and the discriminator once
                instead of twice. The plain loss differentiates the reconstruction and GAN terms at the last layer
                for the adaptive weight, and `total.backward()` then runs the VGG and discriminator backward again.
                Here both terms are differentiated once, with respect to the reconstruction, inside this call; the
                chain rule gives their gradients at the last layer and the gradient of the total at the
                reconstruction. `total` has the same value, and backpropagating it gives the autoencoder the same
                gradients up to floating-point reordering, through the autoencoder only: the discriminator's
                parameters get none, and `total` cannot be differentiated a second time. Ignored with gradients
                disabled. Under fp16 mixed precision prefer the plain loss: the gradients taken here are not loss
                scaled.
            kl_loss (`torch.Tensor`, *optional*): The output's `kl_loss` (Gumbel), reported (in `quantizer_loss`).

        Returns:
            `VQGANGeneratorLossOutput`. Backpropagating `total` of the plain loss also leaves gradients on the
            discriminator's parameters; zero them before the discriminator's own step.
        """
        if inputs.shape != reconstructions.shape:
            raise ValueError(
                f"`inputs` and `reconstructions` must have the same shape, got {tuple(inputs.shape)} and "
                f"{tuple(reconstructions.shape)}."
            )
        gan_on = self.should_update_discriminator(global_step)
        if gan_on and torch.is_grad_enabled() and last_layer is None:
            raise ValueError(
                "`last_layer` (model.last_layer_weight) is required for the adaptive GAN weight once "
                f"global_step >= disc_start ({global_step} >= {self.disc_start})."
            )
        single_backward = single_backward and torch.is_grad_enabled() and reconstructions.requires_grad
        # The single-backward loss cuts the graph at the reconstruction, so that its terms are differentiated down to
        # there only, once each.
        outputs = reconstructions.detach().requires_grad_(True) if single_backward else reconstructions
        pixel, perceptual, gan = self._terms(inputs, outputs, gan_on)
        reconstruction = self.pixel_weight * pixel + self.perceptual_weight * perceptual
        quantizer = quantizer_loss.mean()
        disc_factor = 1.0 if gan_on else 0.0

        adaptive_weight = outputs.new_zeros(())
        if single_backward:
            adaptive_weight, output_grad = self._single_backward_grads(
                reconstructions, outputs, reconstruction, gan if gan_on else None, last_layer
            )
        elif gan_on and torch.is_grad_enabled():
            adaptive_weight = self.disc_weight * adaptive_gan_weight(reconstruction, gan, last_layer)

        total = reconstruction + adaptive_weight * disc_factor * gan + self.codebook_weight * quantizer
        if single_backward:
            # The same value; its gradient is `output_grad` pulled back through the autoencoder, plus the quantizer's.
            surrogate = (reconstructions * output_grad).sum() + self.codebook_weight * quantizer
            total = total.detach() + (surrogate - surrogate.detach())
        return VQGANGeneratorLossOutput(
            total=total,
            pixel=pixel.detach(),
            perceptual=perceptual.detach(),
            reconstruction=reconstruction.detach(),
            gan=gan.detach(),
            adaptive_weight=adaptive_weight,
            disc_factor=disc_factor,
            quantizer=quantizer.detach(),
            kl=None if kl_loss is None else kl_loss.detach().mean(),
        )

    def _terms(
        self, inputs: torch.Tensor, outputs: torch.Tensor, gan_on: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unweighted pixel, perceptual and generator-GAN losses (0 for the switched-off ones)."""
        zero = outputs.new_zeros(())
        pixel = self._pixel_loss(inputs, outputs)
        # One LPIPS call per step; in the plain loss its graph serves both the adaptive weight and the final backward.
        perceptual = self.perceptual(inputs, outputs).mean() if self.perceptual is not None else zero
        gan = self.gen_loss_fn(self.discriminator(outputs)) if gan_on else zero
        return pixel, perceptual, gan

    def _single_backward_grads(
        self,
        reconstructions: torch.Tensor,
        outputs: torch.Tensor,
        reconstruction: torch.Tensor,
        gan: torch.Tensor | None,
        last_layer: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The adaptive weight and the gradient of the total loss at `outputs` (the detached reconstructions)."""
        rec_grad = torch.autograd.grad(reconstruction, outputs)[0]  # (B, C, H, W)
        if gan is None:
            return outputs.new_zeros(()), rec_grad
        gan_grad = torch.autograd.grad(gan, outputs)[0]  # (B, C, H, W)
        # d loss / d last_layer = (d loss / d reconstructions) pulled back through the decoder's last layer only.
        rec_weight_grad, gan_weight_grad = (
            torch.autograd.grad(reconstructions, last_layer, grad.to(reconstructions.dtype), retain_graph=True)[0]
            for grad in (rec_grad, gan_grad)
        )
        adaptive_weight = self.disc_weight * adaptive_weight_from_grads(rec_weight_grad, gan_weight_grad)
        return adaptive_weight, rec_grad + adaptive_weight * gan_grad

    def discriminator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: int,
        discriminator: nn.Module | None = None,
    ) -> VQGANDiscriminatorLossOutput:
        """
        The discriminator's loss on real `inputs` and `reconstructions`, both of shape
        `(batch_size, channels, height, width)` in [-1, 1]. Both are detached here, so no gradient reaches the
        autoencoder. Before `disc_start` the loss is multiplied by 0; skip the step altogether there
        (`should_update_discriminator`), since weight decay would still move the weights.

        `discriminator` runs in place of `self.discriminator` when given: the same network as wrapped for data
        parallelism (`accelerator.prepare`), so that its gradients are synchronised, while the generator's GAN term
        runs the bare `self.discriminator`, whose gradients are not needed.
        """
        if self.discriminator is None:
            raise ValueError("This VQGANLoss has no discriminator (disc_weight=0); there is no discriminator loss.")
        # Two calls rather than one concatenated batch, so that BatchNorm sees real and fake statistics apart, as in
        # the reference.
        discriminator = self.discriminator if discriminator is None else discriminator
        logits_real = discriminator(inputs.detach())  # (B, 1, h, w)
        logits_fake = discriminator(reconstructions.detach())  # (B, 1, h, w)
        disc_factor = 1.0 if global_step >= self.disc_start else 0.0
        loss = disc_factor * self.disc_loss_fn(logits_real, logits_fake)
        return VQGANDiscriminatorLossOutput(
            loss=loss, logits_real=logits_real.detach().mean(), logits_fake=logits_fake.detach().mean()
        )
