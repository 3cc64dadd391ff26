"""Adversarial losses on discriminator logits, and VQGAN's adaptive weight for the generator's GAN term.

Logits are raw discriminator outputs of any shape (for PatchGAN, `(B, 1, h, w)`), positive meaning "real";
every loss averages over all of them.

Discriminator losses take `(logits_real, logits_fake)`, generator losses take `logits_fake`:

- `"hinge"` (Lim & Ye 2017; VQGAN's default): the discriminator pushes real logits above +1 and fake ones below
  -1; the generator raises the fake logits.
- `"vanilla"` (Goodfellow et al. 2014): the discriminator is a binary classifier (cross-entropy); the generator
  minimizes log(1 - D(G(z))), the original minimax objective, which saturates when the discriminator wins.
- `"non_saturating"` (Goodfellow et al. 2014, Sec. 3): the same discriminator as `"vanilla"`, but the generator
  maximizes log D(G(z)) instead, which keeps its gradients alive early in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------- discriminator


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """`0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake)))`."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with real = 1, fake = 0, halved like the hinge loss:
    `0.5 * (mean(-log sigmoid(logits_real)) + mean(-log(1 - sigmoid(logits_fake))))`."""
    # softplus(-x) = -log sigmoid(x) and softplus(x) = -log(1 - sigmoid(x)), computed stably for large |x|.
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


# ----------------------------------------------------------------------------------------------- generator


def hinge_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """`-mean(logits_fake)`: the generator side of the hinge GAN (what taming uses for every `disc_loss`)."""
    return -logits_fake.mean()


def vanilla_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """`mean(log(1 - sigmoid(logits_fake)))`: the saturating minimax objective, kept for completeness."""
    return -F.softplus(logits_fake).mean()


def non_saturating_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """`mean(-log sigmoid(logits_fake))`: cross-entropy of the fakes against the "real" label."""
    return F.softplus(-logits_fake).mean()


DISCRIMINATOR_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_discriminator_loss,
    "vanilla": vanilla_discriminator_loss,
    # The non-saturating GAN changes only the generator's objective; its discriminator is the vanilla one.
    "non_saturating": vanilla_discriminator_loss,
}

GENERATOR_LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hinge": hinge_generator_loss,
    "vanilla": vanilla_generator_loss,
    "non_saturating": non_saturating_generator_loss,
}


def get_discriminator_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The discriminator loss called `name` (`"hinge"`, `"vanilla"` or `"non_saturating"`)."""
    if name not in DISCRIMINATOR_LOSSES:
        raise ValueError(f"Unknown discriminator loss {name!r}; expected one of {sorted(DISCRIMINATOR_LOSSES)}.")
    return DISCRIMINATOR_LOSSES[name]


def get_generator_loss(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The generator loss called `name` (`"hinge"`, `"vanilla"` or `"non_saturating"`)."""
    if name not in GENERATOR_LOSSES:
        raise ValueError(f"Unknown generator loss {name!r}; expected one of {sorted(GENERATOR_LOSSES)}.")
    return GENERATOR_LOSSES[name]


# ----------------------------------------------------------------------------------------- adaptive weight


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """
    VQGAN's adaptive weight (Esser et al. 2021, Sec. 3.1): `||grad L_rec|| / (||grad L_GAN|| + eps)`, both gradients
    taken with respect to the decoder's last layer, clamped to `[0, max_weight]` and detached.

    It scales the GAN term so that its gradient at the output layer is as large as the reconstruction term's.
    Multiply the result by the user's `disc_weight`. The graphs of both losses are kept (`retain_graph=True`) so
    that the caller can still backpropagate the total loss.

    Args:
        reconstruction_loss (`torch.Tensor`): Scalar reconstruction (pixel + perceptual) loss.
        gan_loss (`torch.Tensor`): Scalar generator adversarial loss.
        last_layer (`torch.Tensor`): The decoder's last weight (`VQGANModel.last_layer_weight`).
        max_weight (`float`, defaults to 1e4): Upper clamp.
        eps (`float`, defaults to 1e-4): Keeps the ratio finite when the GAN gradient vanishes.

    Returns:
        A detached scalar tensor.
    """
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return adaptive_weight_from_grads(rec_grad, gan_grad, max_weight=max_weight, eps=eps)


def adaptive_weight_from_grads(
    rec_grad: torch.Tensor, gan_grad: torch.Tensor, max_weight: float = 1e4, eps: float = 1e-4
) -> torch.Tensor:
    """
    `adaptive_gan_weight` from the two gradients at the decoder's last layer, already computed: the ratio of their
    norms (of their means over processes under data parallelism), clamped to `[0, max_weight]`, detached.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # Under data parallelism each process holds the gradients of its own shard's losses; the weight for the global
        # batch (what one process with the whole batch computes) takes the norms of their means. Every process gets
        # the same weight, so the replicas stay identical.
        grads = torch.stack([rec_grad, gan_grad])
        dist.all_reduce(grads, op=dist.ReduceOp.SUM)
        rec_grad, gan_grad = grads / dist.get_world_size()
    weight = rec_grad.norm() / (gan_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
