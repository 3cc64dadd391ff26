"""The condition tokens of a `VQGANTransformerPipeline` call: the prior's prefix for a conditional prior.

They come from one of three places:

- a condition image tokenized by the condition VQGAN (`cond_vqgan`), made into its input by `condition_processor`
  (segmentation, depth, edges, low-resolution maps);
- a coordinate map tokenized by the `"coordinates"` condition processor itself (taming's `CoordStage`: no weights,
  so no `cond_vqgan`);
- the tokens themselves, `condition_tokens` (taming's `DummyCondStage`: scene layouts that taming's data code turns
  into token sequences), checked for shape and range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..conditions import COORDINATES

if TYPE_CHECKING:
    from .pipeline_vqgan_transformer import VQGANTransformerPipeline


def check_condition_tokens(
    condition_tokens: Any, cond_length: int, cond_codebook_size: int, name: str = "condition_tokens"
) -> torch.LongTensor:
    """
    `condition_tokens` (a tensor, array or nested list of ints of shape `(cond_length,)` or `(batch, cond_length)`)
    as a `torch.LongTensor` of shape `(batch, cond_length)`; a `TypeError` or `ValueError` names what is wrong (as
    `name`).
    """
    if isinstance(condition_tokens, (list, tuple, np.ndarray)):
        condition_tokens = torch.as_tensor(np.asarray(condition_tokens))
    if not isinstance(condition_tokens, torch.Tensor):
        raise TypeError(f"`{name}` must be a LongTensor, got {type(condition_tokens).__name__}.")
    if condition_tokens.is_floating_point() or condition_tokens.is_complex() or condition_tokens.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integers, got {condition_tokens.dtype}.")
    tokens = condition_tokens[None] if condition_tokens.ndim == 1 else condition_tokens
    if tokens.ndim != 2 or tokens.shape[1] != cond_length or tokens.shape[0] == 0:
        raise ValueError(
            f"`{name}` must have shape (batch, {cond_length}) or ({cond_length},), got "
            f"{tuple(condition_tokens.shape)}."
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= cond_codebook_size:
        raise ValueError(
            f"`{name}` must lie in [0, {cond_codebook_size}) (the prior's condition vocabulary), got values "
            f"from {low} to {high}."
        )
    return tokens.long()


def _tokenize_condition_image(pipe: VQGANTransformerPipeline, condition_image: Any) -> torch.LongTensor:
    """Condition tokens `(count, cond_length)` of condition images, through the condition VQGAN or the processor."""
    processor = pipe.condition_processor
    if processor is not None and processor.config.condition_type == COORDINATES:
        tokens = processor.condition_tokens(condition_image)  # (count, cond_length)
    elif pipe.cond_vqgan is not None:
        condition = pipe.prepare_condition(condition_image)  # (count, C, H, W)
        tokens = pipe.cond_vqgan.tokenize(condition.to(pipe.cond_vqgan.device, pipe.cond_vqgan.dtype)).flatten(1)
    else:
        raise ValueError(
            "`condition_image` was given, but this pipeline has no condition tokenizer (`cond_vqgan`): its prior "
            "reads condition tokens as they are; pass `condition_tokens`."
        )
    config = pipe.transformer.config
    if tokens.shape[1] != config.cond_length:
        raise ValueError(
            f"The condition gives {tokens.shape[1]} tokens; the prior reads {config.cond_length}: give the condition "
            "at the size the condition processor says (`pipe.condition_processor.config.resolution`)."
        )
    return check_condition_tokens(
        tokens, config.cond_length, config.cond_codebook_size, "the tokens of condition_image"
    )


def condition_tokens_for(
    pipe: VQGANTransformerPipeline, condition_image: Any, condition_tokens: Any, batch_size: int
) -> torch.LongTensor | None:
    """
    The condition tokens of a pipeline call, `(batch_size, cond_length)` on the execution device, or `None` for a
    prior without a condition. One condition serves all `batch_size` images, or `count` conditions serve
    `batch_size / count` consecutive images each (as class labels do).
    """
    config = pipe.transformer.config
    if condition_image is not None and condition_tokens is not None:
        raise ValueError("Pass either `condition_image` or `condition_tokens`, not both.")
    if not config.cond_length:
        if condition_tokens is not None:
            raise ValueError("`condition_tokens` were given, but this pipeline's prior has no condition.")
        if condition_image is not None:
            raise ValueError(
                "`condition_image` was given, but this pipeline has no condition tokenizer (`cond_vqgan`)."
            )
        return None
    if condition_tokens is not None:
        tokens = check_condition_tokens(condition_tokens, config.cond_length, config.cond_codebook_size)
    elif condition_image is not None:
        tokens = _tokenize_condition_image(pipe, condition_image)
    elif pipe.cond_vqgan is None and pipe.condition_processor is None:
        raise ValueError(
            f"This pipeline's prior reads {config.cond_length} condition tokens as they are (in [0, "
            f"{config.cond_codebook_size})): pass `condition_tokens` of shape (batch, {config.cond_length})."
        )
    else:
        condition_type = pipe.condition_processor.config.condition_type if pipe.condition_processor else None
        raise ValueError(f"This pipeline was trained with `{condition_type}` conditions: pass `condition_image`.")
    count = tokens.shape[0]
    if batch_size % count:
        what = "condition images" if condition_tokens is None else "condition token rows"
        raise ValueError(
            f"Got {count} {what} for a batch of {batch_size} images: give one condition for all, or "
            f"one per prompt (`batch_size={count}`, or one class label per condition), each of which then gives "
            "`num_images_per_prompt` images."
        )
    # Consecutive images share a condition, as they share a class label (`repeat_interleave` there too).
    return tokens.to(pipe._execution_device).repeat_interleave(batch_size // count, dim=0)  # (batch_size, cond_length)
