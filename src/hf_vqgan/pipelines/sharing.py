"""Model cards and Hub uploads of a `VQGANTransformerPipeline` (its `model_card` and `push_to_hub` methods)."""

from __future__ import annotations

import io
import os

import PIL.Image

from .. import hub

MAX_LISTED_CLASSES = 20
"""Class names a card lists; the rest are in `transformer/config.json` (`id2label`)."""

SAMPLES_FILE = "samples.png"
# Arguments of `pipeline_model_card` that are not template fields (they go into the prior's description).
_CARD_ARGUMENTS = ("training_description",)


def example_class_labels(config) -> list[str | int]:
    """Up to two labels this prior has, for usage examples: names when its classes have them, else ids."""
    count = min(config.num_classes, 2)
    return config.class_names[:count] if config.class_names else list(range(count))


def _usage_call(config, condition_type: str | None) -> str:
    seed = "generator=torch.Generator().manual_seed(0)"
    if config.num_classes:
        indent = " " * len("images = pipe(")
        labels = example_class_labels(config)
        return (
            f"images = pipe(class_labels={labels!r}, num_images_per_prompt=4, guidance_scale=2.0,\n{indent}{seed})"
            ".images"
        )
    if config.cond_length and condition_type is None:  # a converted taming DummyCondStage: the tokens themselves
        return (
            f"images = pipe(condition_tokens=tokens, {seed}).images  # (batch, {config.cond_length}) condition tokens"
        )
    if config.cond_length:
        return f"images = pipe(condition_image=condition, {seed}).images  # a {condition_type} condition"
    return f"images = pipe(batch_size=4, {seed}).images"


def _classes_description(config) -> str:
    if not config.num_classes:
        return ""
    text = f", {config.num_classes} classes and a null class for classifier-free guidance"
    names = config.class_names
    if names:
        listed = ", ".join(f"`{name}` ({index})" for index, name in enumerate(names[:MAX_LISTED_CLASSES]))
        more = len(names) - MAX_LISTED_CLASSES
        text += f" (classes: {listed}" + (f" and {more} more, named in `id2label`)" if more > 0 else ")")
    return text


def _condition_description(config, condition_type: str | None) -> str:
    if not config.cond_length:
        return ""
    if condition_type is None:
        return f", and {config.cond_length} condition tokens given as they are (`condition_tokens`)"
    return f", and {config.cond_length} `{condition_type}` condition tokens"


def pipeline_model_card(pipe, repo_id: str = "path/to/this/folder", metrics: dict | None = None, **fields):
    """A model card for `pipe` rendered from `model_cards/pipeline.md`."""
    config = pipe.transformer.config
    condition_type = pipe.condition_processor.config.condition_type if pipe.condition_processor else None
    prior = (
        f"A GPT with {config.n_layer} layers, width {config.n_embd} and {config.n_head} heads "
        f"({pipe.transformer.num_parameters():,} parameters) over {config.codebook_size} image codes"
        + _classes_description(config)
        + _condition_description(config, condition_type)
        + ". "
        + fields.pop("training_description", "")
    )
    defaults = dict(
        model_name=fields.pop("model_name", repo_id.rstrip("/").split("/")[-1]),
        latent_height=config.latent_height,
        latent_width=config.latent_width,
        resolution=config.latent_height * pipe.vqgan.downsample_factor,
        has_condition=pipe.cond_vqgan is not None,  # the card's condition text is about `cond_vqgan`
        condition_type=condition_type,
        usage_call=_usage_call(config, condition_type),
        prior_description=prior,
        dataset_description=fields.pop("dataset_description", "Not recorded."),
    )
    tags = ["image-generation", "autoregressive"] + (["class-conditional"] if config.num_classes else [])
    pipeline_tag = "unconditional-image-generation" if not config.num_classes else None
    return hub.render_model_card(
        "pipeline", repo_id=repo_id, metrics=metrics, tags=tags, pipeline_tag=pipeline_tag, **defaults, **fields
    )


def _png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def push_pipeline_to_hub(
    pipe,
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None,
    token: str | None,
    create_pr: bool,
    revision: str | None,
    variant: str | None,
    model_card,
    sample_grid: PIL.Image.Image | None,
    **card_fields,
) -> str:
    """Upload what `pipe.save_pretrained` writes, the card and the images it shows; see `push_to_hub`."""
    hub.check_card_fields("pipeline", card_fields, also=_CARD_ARGUMENTS)
    source = hub.source_folder(pipe)
    images: dict = {}
    if sample_grid is not None:
        images[SAMPLES_FILE] = _png_bytes(sample_grid)
    elif source and os.path.isfile(os.path.join(source, SAMPLES_FILE)):
        images[SAMPLES_FILE] = os.path.join(source, SAMPLES_FILE)
    card_fields.setdefault("grid_file", SAMPLES_FILE if images else None)
    card = hub.card_files(pipe, model_card, lambda: pipeline_model_card(pipe, repo_id=repo_id, **card_fields))
    return hub.push_saved_to_hub(
        repo_id, lambda folder: pipe.save_pretrained(folder, variant=variant), extra_files={**card, **images},
        commit_message=commit_message, private=private, token=token, create_pr=create_pr, revision=revision,
    )  # fmt: skip
