"""Model cards and Hub uploads of a `VQGANTransformerPipeline` (its `model_card` and `push_to_hub` methods)."""

from __future__ import annotations

import os
import shutil
import tempfile

import PIL.Image

from .. import hub


def _usage_call(config, condition_type: str | None) -> str:
    seed = "generator=torch.Generator().manual_seed(0)"
    if config.num_classes:
        indent = " " * len("images = pipe(")
        return (
            f"images = pipe(class_labels=[3, 7], num_images_per_prompt=4, guidance_scale=2.0,\n{indent}{seed}).images"
        )
    if config.cond_length:
        return f"images = pipe(condition_image=condition, {seed}).images  # a {condition_type} condition"
    return f"images = pipe(batch_size=4, {seed}).images"


def pipeline_model_card(pipe, repo_id: str = "path/to/this/folder", metrics: dict | None = None, **fields):
    """A model card for `pipe` rendered from `model_cards/pipeline.md`."""
    config = pipe.transformer.config
    condition_type = pipe.condition_processor.config.condition_type if pipe.condition_processor else None
    prior = (
        f"A GPT with {config.n_layer} layers, width {config.n_embd} and {config.n_head} heads "
        f"({pipe.transformer.num_parameters():,} parameters) over {config.codebook_size} image codes"
        + (
            f", {config.num_classes} classes and a null class for classifier-free guidance"
            if config.num_classes
            else ""
        )
        + (f", and {config.cond_length} `{condition_type}` condition tokens" if config.cond_length else "")
        + ". "
        + fields.pop("training_description", "")
    )
    defaults = dict(
        model_name=fields.pop("model_name", repo_id.rstrip("/").split("/")[-1]),
        latent_height=config.latent_height,
        latent_width=config.latent_width,
        resolution=config.latent_height * pipe.vqgan.downsample_factor,
        has_condition=bool(config.cond_length),
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


def _card_text(pipe, folder: str, source: str | None, repo_id: str, model_card, card_fields: dict) -> str:
    if model_card is not None:
        return str(model_card)
    if source and os.path.isfile(os.path.join(source, "README.md")):
        with open(os.path.join(source, "README.md"), encoding="utf-8") as f:
            return f.read()
    if os.path.isfile(os.path.join(folder, "samples.png")):
        card_fields.setdefault("grid_file", "samples.png")
    return str(pipeline_model_card(pipe, repo_id=repo_id, **card_fields))


def push_pipeline_to_hub(
    pipe,
    repo_id: str,
    *,
    commit_message: str,
    private: bool,
    token: str | None,
    model_card,
    sample_grid: PIL.Image.Image | None,
    **card_fields,
) -> str:
    """Save `pipe` into a temporary folder with its card (and sample grid) and upload it; see `push_to_hub`."""
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        source = getattr(pipe.config, "_name_or_path", None)
        source = source if source and os.path.isdir(source) else None
        # A card copied from the source folder links to that folder's sample grid: the image must go along.
        for name in os.listdir(source) if source else []:
            if name.lower().endswith((".png", ".jpg", ".jpeg")):
                shutil.copy(os.path.join(source, name), os.path.join(folder, name))
        if sample_grid is not None:
            sample_grid.save(os.path.join(folder, "samples.png"))
        card_text = _card_text(pipe, folder, source, repo_id, model_card, card_fields)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
            f.write(card_text)
        return hub.push_folder_to_hub(folder, repo_id, private=private, token=token, commit_message=commit_message)
