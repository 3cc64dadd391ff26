"""`VQGANTransformerPipeline(condition_tokens=...)` and the `"coordinates"` condition processor (issue 17): condition
tokens given as they are sample what the same tokens made from a condition image sample, and the processor that
tokenizes coordinate maps itself saves, loads and refuses what it cannot read. Converted taming pipelines with these
conditions are tested against the original in tests/convert/test_taming_conditions.py."""

from __future__ import annotations

import pytest
import torch

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.conditions import coordinate_map
from testing_utils import small_vqgan_config, tiny_pipeline, tiny_prior, tiny_vqgan

NUM_LABELS = 3


def segmentation_pipeline():
    """16x16 images and label maps, each tokenized by an f=2 VQGAN into 8x8 codes."""
    processor = VQGANImageProcessor(resolution=16, channels=3, condition_type="segmentation", num_labels=NUM_LABELS)
    cond_vqgan = tiny_vqgan(1, **small_vqgan_config(NUM_LABELS))
    prior = tiny_prior(2, cond_codebook_size=cond_vqgan.config.codebook_size, cond_length=64)
    return tiny_pipeline(tiny_vqgan(0, **small_vqgan_config(3)), prior, cond_vqgan=cond_vqgan,
                         condition_processor=processor)  # fmt: skip


def test_condition_tokens_sample_what_their_condition_image_samples():
    pipe = segmentation_pipeline()
    labels = torch.randint(0, NUM_LABELS, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    tokens = pipe._condition_tokens(labels, batch_size=2)  # (2, 64), from the condition VQGAN
    assert tokens.shape == (2, 64)
    from_image = pipe(condition_image=labels, batch_size=2, generator=torch.Generator().manual_seed(1),
                      output_type="latent").images  # fmt: skip
    from_tokens = pipe(condition_tokens=tokens, batch_size=2, generator=torch.Generator().manual_seed(1),
                       output_type="latent").images  # fmt: skip
    assert torch.equal(from_image, from_tokens)
    past_the_codebook = tokens.index_fill(1, torch.tensor([0]), 16)
    with pytest.raises(ValueError, match=r"`condition_tokens` must lie in \[0, 16\) .*, got values from \d+ to 16"):
        pipe(condition_tokens=past_the_codebook, batch_size=2, output_type="latent")


def test_condition_tokens_for_a_prior_without_a_condition_are_refused():
    pipe = tiny_pipeline(tiny_vqgan(0, **small_vqgan_config(3)), tiny_prior(None))
    with pytest.raises(ValueError, match="`condition_tokens` were given, but this pipeline's prior has no condition"):
        pipe(condition_tokens=torch.zeros(1, 4, dtype=torch.long), output_type="latent")


def test_coordinates_processor_tokenizes_saves_and_loads(tmp_path):
    processor = VQGANImageProcessor(resolution=16, channels=3, condition_type="coordinates", lowres_factor=4,
                                    coordinate_levels=1024)  # fmt: skip
    processor.save_pretrained(tmp_path)
    loaded = VQGANImageProcessor.from_pretrained(tmp_path)
    assert (loaded.config.coordinate_levels, loaded.config.lowres_factor) == (1024, 4)
    maps = coordinate_map(16, 16)
    tokens = loaded.condition_tokens(maps[0, 0])  # an (H, W) map is one condition
    # Box means of the raster index over 256 pixels, times 1024, rounded: the top-left box averages index 25.5.
    assert tokens.shape == (1, 16) and tokens[0, 0] == round(25.5 / 256 * 1024)
    assert torch.equal(loaded.preprocess_condition(maps), maps) and loaded.condition_shape() == (1, 16, 16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(condition_type="coordinates"), r"`coordinate_levels` >= 1, got None"),
        (dict(condition_type="coordinates", coordinate_levels=0), r"`coordinate_levels` >= 1, got 0"),
        (dict(condition_type="coordinatez", coordinate_levels=8), r"Unknown condition type 'coordinatez'"),
    ],
)
def test_bad_coordinates_processors_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQGANImageProcessor(resolution=16, **kwargs)


def test_only_coordinates_are_tokenized_by_the_processor():
    processor = VQGANImageProcessor(resolution=16, condition_type="segmentation", num_labels=NUM_LABELS)
    with pytest.raises(ValueError, match="`segmentation` conditions are tokenized by the condition VQGAN"):
        processor.condition_tokens(torch.zeros(16, 16, dtype=torch.long))
    coordinates = VQGANImageProcessor(resolution=16, condition_type="coordinates", coordinate_levels=8)
    with pytest.raises(ValueError, match="not a training condition"):
        coordinates.condition_map(condition=torch.zeros(16, 16))
