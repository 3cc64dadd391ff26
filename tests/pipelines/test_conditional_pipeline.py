"""Image-conditional sampling with `VQGANTransformerPipeline` (issue 6): each condition type through
`prepare_condition` and the condition tokenizer into the prior's prefix, class labels combined with a condition,
the segmentation round trip, derived conditions identical at training and sampling time, and every bad input."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vqgan import (
    VQGANImageProcessor,
    VQGANModel,
    VQGANPriorConfig,
    VQGANPriorForCausalLM,
    VQGANTransformerPipeline,
)
from hf_vqgan.conditions import (
    condition_channels,
    derive_condition,
    labels_from_logits,
    lowres_condition,
    one_hot_labels,
)
from hf_vqgan.losses import VQGANLoss
from hf_vqgan.training.data import preprocess_batch
from hf_vqgan.training.tokenize import tokenize_split
from testing_utils import random_image, small_vqgan_config, tiny_pipeline, tiny_prior, tiny_vqgan

SIZE = 16  # output pixels; the image tokenizer (f=2) gives an 8x8 grid of codes
GRID = 8
NUM_LABELS = 3
LOWRES_FACTOR = 4  # 16x16 images -> 4x4 lowres conditions


def make_pipeline(condition_type: str | None, num_classes: int = 0, image_channels: int = 3, seed: int = 0):
    """Random tiny components; the condition tokenizer is f=2 for full-size maps and f=1 for 4x4 lowres maps."""
    vqgan = tiny_vqgan(seed, **small_vqgan_config(image_channels))
    if condition_type is None:
        return tiny_pipeline(vqgan, tiny_prior(None, num_classes=num_classes))
    condition_processor = VQGANImageProcessor(
        resolution=SIZE, channels=image_channels, condition_type=condition_type, lowres_factor=LOWRES_FACTOR,
        num_labels=NUM_LABELS if condition_type == "segmentation" else None,
    )  # fmt: skip
    _, height, width = condition_processor.condition_shape(image_channels, SIZE)
    channels = condition_channels(condition_type, NUM_LABELS, image_channels)
    multipliers = (1,) if condition_type == "lowres" else (1, 2)
    cond_vqgan = tiny_vqgan(None, **small_vqgan_config(channels, channel_multipliers=multipliers, sample_size=height))
    cond_length = math.prod(cond_vqgan.latent_shape(height, width))
    prior = tiny_prior(None, num_classes=num_classes, cond_codebook_size=cond_vqgan.config.codebook_size,
                       cond_length=cond_length)  # fmt: skip
    return tiny_pipeline(vqgan, prior, cond_vqgan=cond_vqgan, condition_processor=condition_processor)


def blocky_image(seed: int, size: int = SIZE, mode: str = "RGB") -> PIL.Image.Image:
    # Smooth blocks with sharp borders: the edge detector finds edges and the lowres boxes differ.
    return random_image(seed, size, mode, block=4)


def label_map(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int64)
    labels[:, rng.integers(3, size - 3) :] = 1
    labels[rng.integers(3, size - 3) :, : rng.integers(3, size - 3)] = 2
    return labels


def example_condition(condition_type: str, seed: int = 0):
    if condition_type == "segmentation":
        return label_map(seed)
    if condition_type == "depth":
        return np.random.default_rng(seed).random((SIZE, SIZE)).astype(np.float32) * 10
    return blocky_image(seed)


def record_sample_calls(pipe, monkeypatch) -> list[dict]:
    """Record the keyword arguments the pipeline hands to `transformer.sample`."""
    calls, original = [], pipe.transformer.sample

    def sample(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(pipe.transformer, "sample", sample)
    return calls


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("condition_type", ["segmentation", "depth", "edges", "lowres"])
def test_each_condition_type_samples_from_its_condition_tokens(condition_type, monkeypatch):
    pipe = make_pipeline(condition_type)
    config = pipe.transformer.config
    calls = record_sample_calls(pipe, monkeypatch)
    condition = example_condition(condition_type)

    images = pipe(condition_image=condition, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (1, 3, SIZE, SIZE) and 0 <= images.min() and images.max() <= 1
    # The prior got exactly the condition tokenizer's codes of the preprocessed condition.
    prepared = pipe.prepare_condition(condition)
    expected_channels = NUM_LABELS if condition_type == "segmentation" else 3 if condition_type == "lowres" else 1
    expected_size = SIZE // LOWRES_FACTOR if condition_type == "lowres" else SIZE
    assert prepared.shape == (1, expected_channels, expected_size, expected_size)
    assert prepared.min() >= -1 and prepared.max() <= 1
    tokens = pipe.cond_vqgan.tokenize(prepared).flatten(1)  # (1, cond_length)
    assert tokens.shape == (1, config.cond_length)
    assert torch.equal(calls[0]["cond_indices"], tokens) and calls[0]["class_labels"] is None

    # One condition for several images, and one condition per image; "latent" gives the token grids.
    latent = pipe(condition_image=condition, num_images_per_prompt=2, output_type="latent").images
    assert latent.shape == (2, GRID, GRID) and latent.dtype == torch.long
    assert torch.equal(calls[1]["cond_indices"], tokens.expand(2, -1))
    if condition_type in ("edges", "lowres"):
        batch = [blocky_image(1), blocky_image(2), blocky_image(3)]
    else:
        batch = np.stack([example_condition(condition_type, seed) for seed in (1, 2, 3)])
    latent = pipe(condition_image=batch, batch_size=3, num_images_per_prompt=2, output_type="latent").images
    assert latent.shape == (6, GRID, GRID)
    per_image = calls[2]["cond_indices"]
    assert per_image.shape == (6, config.cond_length)
    for i in range(3):  # images 2i and 2i + 1 come from condition i
        expected = pipe.cond_vqgan.tokenize(pipe.prepare_condition(batch[i])).flatten()
        assert torch.equal(per_image[2 * i], expected) and torch.equal(per_image[2 * i + 1], expected)


def test_class_labels_and_condition_combined_with_guidance(monkeypatch):
    pipe = make_pipeline("edges", num_classes=3)
    calls = record_sample_calls(pipe, monkeypatch)
    conditions = [blocky_image(0), blocky_image(1)]
    images = pipe(class_labels=[0, 2], condition_image=conditions, num_images_per_prompt=2, guidance_scale=2.0,
                  generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    assert images.shape == (4, SIZE, SIZE, 3)
    assert calls[0]["class_labels"].tolist() == [0, 0, 2, 2]
    # Condition i goes with class label i: both are repeated for the prompt's images.
    first, second = (pipe.cond_vqgan.tokenize(pipe.prepare_condition(c)).flatten() for c in conditions)
    assert torch.equal(calls[0]["cond_indices"], torch.stack([first, first, second, second]))
    assert not torch.equal(first, second)
    assert calls[0]["guidance_scale"] == 2.0
    # The class token follows the condition tokens in the prefix.
    config = pipe.transformer.config
    ids = pipe.transformer.build_input_ids(
        class_labels=calls[0]["class_labels"], cond_indices=calls[0]["cond_indices"]
    )
    assert ids.shape == (4, config.prefix_length) and config.prefix_length == config.cond_length + 1
    assert torch.equal(ids[:, -1], config.class_token_offset + calls[0]["class_labels"])
    assert torch.equal(ids[:, :-1], calls[0]["cond_indices"] + config.cond_token_offset)


def test_grayscale_pipeline_with_lowres_conditions_of_the_digits_kind():
    pipe = make_pipeline("lowres", image_channels=1)
    digit = blocky_image(0, mode="L")
    condition = pipe.prepare_condition(digit)
    assert condition.shape == (1, 1, 4, 4)
    # An already downsampled 4x4 map is taken as it is, and gives the same condition.
    lowres = lowres_condition(VQGANImageProcessor.to_tensor(digit), LOWRES_FACTOR)  # (1, 4, 4)
    torch.testing.assert_close(pipe.prepare_condition(lowres), condition)
    assert pipe(condition_image=lowres, output_type="pt").images.shape == (1, 1, SIZE, SIZE)


# ------------------------------------------------------------------------------------ segmentation round trip
def train_label_tokenizer(maps: torch.Tensor, max_steps: int = 400) -> VQGANModel:
    """A tiny f=1 segmentation tokenizer trained with cross-entropy until it reconstructs `maps` exactly."""
    torch.manual_seed(0)
    model = VQGANModel(**small_vqgan_config(NUM_LABELS, channel_multipliers=(1,), base_channels=16, norm_num_groups=8))
    loss_fn = VQGANLoss(pixel_loss="cross_entropy", perceptual_weight=0.0, disc_weight=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = one_hot_labels(maps, NUM_LABELS)
    for step in range(max_steps):
        out = model(x)
        loss = loss_fn.generator_loss(x, out.sample, out.quantizer_loss, step, last_layer=model.last_layer_weight)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        if step % 25 == 24:
            with torch.no_grad():
                model.eval()
                if torch.equal(labels_from_logits(model.decode_indices(model.tokenize(x)).sample), maps):
                    return model
                model.train()
    raise AssertionError(f"the tiny label tokenizer did not reconstruct its maps within {max_steps} steps")


def test_segmentation_round_trip_keeps_labels_exact(tmp_path):
    maps = torch.from_numpy(np.stack([label_map(seed) for seed in range(6)]))  # (6, H, W)
    pipe = make_pipeline("segmentation")
    pipe.cond_vqgan = train_label_tokenizer(maps).eval()

    # A palette PNG (colours chosen unlike the indices) goes in; the decoded codes give back its labels exactly.
    palette_image = PIL.Image.fromarray(maps[4].numpy().astype(np.uint8), mode="L").convert("P")
    palette_image.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [0] * 759)
    path = tmp_path / "labels.png"
    palette_image.save(path)
    loaded = PIL.Image.open(path)
    assert loaded.mode == "P"
    for condition, expected in [(loaded, maps[4]), (maps, maps), (maps.numpy().astype(np.uint8), maps)]:
        tokens = pipe.cond_vqgan.tokenize(pipe.prepare_condition(condition))  # (B, H, W) at f=1
        decoded = labels_from_logits(pipe.cond_vqgan.decode_indices(tokens).sample)
        assert torch.equal(decoded, expected.expand_as(decoded))
    # Float maps holding whole numbers are labels too.
    assert torch.equal(pipe.prepare_condition(maps.float()), pipe.prepare_condition(maps))


# --------------------------------------------------------------------------- training and sampling agree
@pytest.mark.parametrize("condition_type", ["edges", "lowres"])
def test_derived_conditions_identical_at_training_and_sampling(condition_type):
    import datasets

    pipe = make_pipeline(condition_type)
    config = pipe.condition_processor.config
    # PNG round trips keep pixels; RGBA and grayscale images go through the same mode conversion on both sides.
    images = [
        blocky_image(0),
        blocky_image(1, mode="RGBA"),
        blocky_image(2, mode="L"),
        blocky_image(3),
    ]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    transform = VQGANImageProcessor(SIZE, 3, center_crop=True)
    condition_transform = VQGANImageProcessor(condition_type=condition_type, lowres_factor=config.lowres_factor)

    training_maps = torch.stack(preprocess_batch(dataset[:], transform, condition_transform=condition_transform)
                                ["condition_values"])  # fmt: skip
    tokens = tokenize_split(dataset, pipe.vqgan, transform, "image", condition_transform=condition_transform,
                            cond_vqgan=pipe.cond_vqgan)  # fmt: skip
    training_tokens = torch.tensor(tokens["cond_indices"])  # (4, cond_length)

    sampling_maps = pipe.prepare_condition(images)
    assert torch.equal(sampling_maps, training_maps)
    assert training_maps.std() > 0.1  # real maps, not constants
    assert torch.equal(pipe._condition_tokens(images, len(images)), training_tokens)
    # Pixel tensors (as `VQGANImageProcessor` gives them) derive the same maps.
    pixels = torch.stack([transform(image) for image in images])
    assert torch.equal(pipe.prepare_condition(pixels), derive_condition(condition_type, pixels, config.lowres_factor))


# ----------------------------------------------------------------------------------------------- errors
def _float_pixels_0_255() -> torch.Tensor:
    return torch.full((1, 3, SIZE, SIZE), 200.0)


BAD_CONDITIONS = [
    ("edges", blocky_image(0, size=12), ValueError, "must be 16x16 pixels, got 12x12"),
    ("lowres", blocky_image(0, size=8), ValueError, r"16x16 \(or 4x4\) pixels, got 8x8"),
    ("edges", torch.zeros(1, 2, SIZE, SIZE), ValueError, r"shape \(batch, 3, height, width\)"),
    ("lowres", np.zeros((SIZE, SIZE), dtype=np.uint8), ValueError, r"shape \(batch, 3, height, width\)"),
    ("edges", _float_pixels_0_255(), ValueError, r"pixels in \[-1, 1\]"),
    ("edges", "not an image", TypeError, "must be a PIL image"),
    ("segmentation", np.zeros((12, 12), dtype=np.int64), ValueError, r"shape \(16, 16\) or \(batch, 16, 16\)"),
    ("segmentation", torch.zeros(1, NUM_LABELS, SIZE, SIZE), ValueError, r"got \(1, 3, 16, 16\)"),
    ("segmentation", blocky_image(0), ValueError, "mode 'RGB'"),
    ("segmentation", np.full((SIZE, SIZE), NUM_LABELS), ValueError, r"\[0, 3\); found min 3 and max 3"),
    ("segmentation", np.full((SIZE, SIZE), -1), ValueError, "found min -1"),
    ("segmentation", np.full((SIZE, SIZE), 0.5, dtype=np.float32), ValueError, "fractional"),
    ("depth", np.zeros((1, 3, SIZE, SIZE), dtype=np.float32), ValueError, r"got \(1, 3, 16, 16\)"),
    ("depth", np.zeros((SIZE, 8), dtype=np.float32), ValueError, r"shape \(16, 16\)"),
    ("depth", blocky_image(0), ValueError, "single-channel"),
]


@pytest.mark.parametrize(
    "condition_type, condition, error, match",
    BAD_CONDITIONS,
    ids=[f"{c}-{i}" for i, (c, *_) in enumerate(BAD_CONDITIONS)],
)
def test_bad_conditions_raise_clear_errors(condition_type, condition, error, match):
    pipe = make_pipeline(condition_type)
    with pytest.raises(error, match=match):
        pipe(condition_image=condition, output_type="latent")


def test_condition_and_model_must_agree():
    with pytest.raises(ValueError, match="no condition tokenizer"):
        make_pipeline(None)(condition_image=blocky_image(0), output_type="latent")
    with pytest.raises(ValueError, match="no condition tokenizer"):
        make_pipeline(None, num_classes=3)(class_labels=1, condition_image=blocky_image(0), output_type="latent")
    for condition_type in ("segmentation", "edges"):
        with pytest.raises(ValueError, match=f"trained with `{condition_type}` conditions: pass `condition_image`"):
            make_pipeline(condition_type)(output_type="latent")
    with pytest.raises(ValueError, match="Got 2 condition images for a batch of 3 images"):
        make_pipeline("edges")(condition_image=[blocky_image(0), blocky_image(1)], batch_size=3, output_type="latent")


# ------------------------------------------------------------------------------------------ legacy folders
def test_legacy_prior_condition_attributes_build_the_condition_processor(tmp_path):
    """Folders saved before the condition processor existed carry the condition settings in the prior's config."""
    pipe = make_pipeline("lowres", image_channels=1)
    config = pipe.transformer.config.to_dict()
    config.update(condition_type="lowres", lowres_factor=LOWRES_FACTOR)
    legacy = VQGANTransformerPipeline(vqgan=pipe.vqgan, transformer=VQGANPriorForCausalLM(
        VQGANPriorConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    ).eval(), cond_vqgan=pipe.cond_vqgan)  # fmt: skip
    processor = legacy.condition_processor.config
    assert (processor.condition_type, processor.lowres_factor, processor.resolution, processor.channels) == (
        "lowres", LOWRES_FACTOR, SIZE, 1,
    )  # fmt: skip
    legacy.save_pretrained(tmp_path)
    (tmp_path / "condition_processor" / "preprocessor_config.json").unlink()  # as an old folder has none
    index = (tmp_path / "model_index.json").read_text().replace('"VQGANImageProcessor"', "null")
    (tmp_path / "model_index.json").write_text(index.replace('"hf_vqgan.image_processor"', "null"))
    loaded = VQGANTransformerPipeline.from_pretrained(tmp_path)
    digit = blocky_image(0, mode="L")
    torch.testing.assert_close(loaded.prepare_condition(digit), pipe.prepare_condition(digit))
