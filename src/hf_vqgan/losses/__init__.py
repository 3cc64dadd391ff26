"""Stage-1 training losses: pixel, LPIPS perceptual, adversarial, and the VQGAN composer."""

from .adversarial import (
    adaptive_gan_weight,
    adaptive_weight_from_grads,
    get_discriminator_loss,
    get_generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    non_saturating_generator_loss,
    vanilla_discriminator_loss,
    vanilla_generator_loss,
)
from .perceptual import LPIPSLoss, LPIPSWeightsUnavailableError
from .vqgan_loss import VQGANDiscriminatorLossOutput, VQGANGeneratorLossOutput, VQGANLoss

__all__ = [
    "LPIPSLoss",
    "LPIPSWeightsUnavailableError",
    "VQGANDiscriminatorLossOutput",
    "VQGANGeneratorLossOutput",
    "VQGANLoss",
    "adaptive_gan_weight",
    "adaptive_weight_from_grads",
    "get_discriminator_loss",
    "get_generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "non_saturating_generator_loss",
    "vanilla_discriminator_loss",
    "vanilla_generator_loss",
]
