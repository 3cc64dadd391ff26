"""Condition maps (`hf_vqgan.conditions`): labels, depth, lowres boxes, the torch Canny detector checked against
scikit-image's, and the training-side per-example condition transform built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.conditions import (
    canny_edges,
    condition_channels,
    condition_to_pixels,
    derive_condition,
    labels_from_logits,
    lowres_condition,
    normalize_depth,
    one_hot_labels,
    read_label_map,
    upsample_lowres,
)
from hf_vqgan.training.data import collate_fn, load_image_dataset, preprocess_batch, with_image_transform


def test_condition_channels():
    assert condition_channels("segmentation", num_labels=5) == 5
    assert condition_channels("depth") == 1
    assert condition_channels("edges", image_channels=3) == 1
    assert condition_channels("lowres", image_channels=1) == 1
    assert condition_channels("lowres", image_channels=3) == 3
    with pytest.raises(ValueError, match="num_labels"):
        condition_channels("segmentation")
    with pytest.raises(ValueError, match="'normals'"):
        condition_channels("normals")


# ------------------------------------------------------------------------------------------ segmentation
def _label_map(height: int = 6, width: int = 6) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[:, width // 2 :] = 2
    labels[height // 2 :, : width // 2] = 3
    return labels


@pytest.mark.parametrize("resolution", [3, 12, 13])
def test_segmentation_resizes_with_nearest_and_one_hot_round_trips(resolution):
    labels = _label_map()
    transform = VQGANImageProcessor(resolution, channels=1)
    geometry = transform.sample_geometry(6, 6)
    condition = VQGANImageProcessor(condition_type="segmentation", num_labels=4).condition_map(
        condition=Image.fromarray(labels), geometry=geometry
    )

    assert condition.shape == (4, resolution, resolution)
    assert set(condition.unique().tolist()) == {-1.0, 1.0}
    assert torch.all((condition == 1).sum(dim=0) == 1)  # exactly one class per pixel
    decoded = labels_from_logits(condition)
    expected = np.asarray(Image.fromarray(labels).resize(geometry.size, Image.NEAREST).crop(geometry.box))
    np.testing.assert_array_equal(decoded.numpy(), expected)
    assert set(decoded.unique().tolist()) <= {0, 2, 3}  # no interpolated label appears
    if resolution >= 6:
        assert set(decoded.unique().tolist()) == {0, 2, 3}


def test_palette_png_is_read_as_indices(tmp_path):
    image = Image.fromarray(_label_map(), mode="L").convert("P")
    image.putpalette([0, 0, 0] + [0] * 3 + [255, 0, 0] + [0, 255, 0] + [0] * 756)  # class 2 red, class 3 green
    path = tmp_path / "labels.png"
    image.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_label_map(str(path)), _label_map())
    condition = VQGANImageProcessor(condition_type="segmentation", num_labels=4).condition_map(
        condition={"bytes": None, "path": str(path)}
    )
    np.testing.assert_array_equal(labels_from_logits(condition).numpy(), _label_map())


def test_labels_out_of_range_name_the_maximum():
    labels = _label_map()
    labels[0, 0] = 7
    with pytest.raises(ValueError, match="max 7"):
        VQGANImageProcessor(condition_type="segmentation", num_labels=5).condition_map(
            condition=Image.fromarray(labels)
        )
    with pytest.raises(ValueError, match="mode 'RGB'"):
        read_label_map(Image.new("RGB", (2, 2)))


def test_one_hot_and_argmax_on_batches():
    labels = torch.randint(0, 6, (2, 5, 7))
    one_hot = one_hot_labels(labels, 6)
    assert one_hot.shape == (2, 6, 5, 7)
    assert torch.equal(labels_from_logits(one_hot), labels)
    assert torch.equal(labels_from_logits(one_hot + 0.1 * torch.randn_like(one_hot)), labels)


def test_paired_segmentation_follows_the_image_crop_and_flip():
    # The image encodes each pixel's label as its gray level, so pixels and condition must agree after any crop/flip.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (8, 12)).astype(np.uint8)  # height 8, width 12: no resize at resolution 8
    batch = {"image": [Image.fromarray(labels * 60)] * 20, "segmentation": [Image.fromarray(labels)] * 20}
    transform = VQGANImageProcessor(8, channels=1, center_crop=False, random_flip=True)
    torch.manual_seed(0)
    outputs = preprocess_batch(
        batch,
        transform,
        condition_transform=VQGANImageProcessor(condition_type="segmentation", num_labels=4),
        condition_column="segmentation",
    )
    pixel_values = torch.stack(outputs["pixel_values"])
    decoded = labels_from_logits(torch.stack(outputs["condition_values"]))
    assert torch.equal(((pixel_values[:, 0] + 1) * 127.5 / 60).round().long(), decoded)
    assert len({tuple(row.tolist()) for row in pixel_values[:, 0, 0]}) > 2  # the crops and flips did vary


def test_condition_map_of_another_size_is_rejected():
    geometry = VQGANImageProcessor(4).sample_geometry(8, 8)
    with pytest.raises(ValueError, match="does not match"):
        VQGANImageProcessor(condition_type="segmentation", num_labels=4).condition_map(
            condition=Image.fromarray(_label_map()), geometry=geometry
        )


# ------------------------------------------------------------------------------------------------- depth
def test_depth_is_normalised_per_image_or_by_range():
    depth = Image.fromarray(np.array([[2.0, 4.0], [6.0, 10.0]], dtype=np.float32))
    per_image = VQGANImageProcessor(condition_type="depth").condition_map(condition=depth)
    torch.testing.assert_close(per_image, torch.tensor([[[-1.0, -0.5], [0.0, 1.0]]]))
    fixed = VQGANImageProcessor(condition_type="depth", depth_range=(0.0, 8.0)).condition_map(condition=depth)
    torch.testing.assert_close(fixed, torch.tensor([[[-0.5, 0.0], [0.5, 1.0]]]))  # 10 is clipped to 8
    torch.testing.assert_close(normalize_depth(torch.full((3, 3), 5.0)), torch.zeros(3, 3))


def test_sixteen_bit_depth_is_read_in_its_own_units():
    depth = Image.fromarray(np.array([[0, 1000], [30000, 60000]], dtype=np.uint16))
    condition = VQGANImageProcessor(condition_type="depth", depth_range=(0.0, 60000.0)).condition_map(condition=depth)
    torch.testing.assert_close(condition, torch.tensor([[[-1.0, -1 + 2 / 60], [0.0, 1.0]]]))


def test_depth_resized_bilinearly_stays_in_range():
    rng = np.random.default_rng(0)
    depth = Image.fromarray(rng.random((6, 9), dtype=np.float32) * 50)
    condition = VQGANImageProcessor(condition_type="depth").condition_map(
        condition=depth, image_processor=VQGANImageProcessor(12)
    )
    assert condition.shape == (1, 12, 12)
    assert condition.min() == -1.0 and condition.max() == 1.0


# ------------------------------------------------------------------------------------------------ derived
def test_edges_of_a_square():
    image = -torch.ones(3, 32, 32)
    image[:, 8:24, 8:24] = 1.0
    edges = derive_condition("edges", image)
    assert edges.shape == (1, 32, 32)
    assert set(edges.unique().tolist()) == {-1.0, 1.0}
    assert edges[0, 16, 16] == -1 and edges[0, 0, 0] == -1  # flat regions
    assert (edges[0, 6:10, 16] == 1).any() and (edges[0, 16, 22:26] == 1).any()  # the square's borders


def test_lowres_is_box_average_and_upsamples_by_repetition():
    image = torch.arange(16, dtype=torch.float32).view(1, 4, 4) / 15 * 2 - 1
    lowres = lowres_condition(image, 2)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 15 * 2 - 1
    torch.testing.assert_close(lowres[0], expected)
    full = derive_condition("lowres", image, lowres_factor=2, lowres_full_size=True)
    assert full.shape == (1, 4, 4)
    torch.testing.assert_close(full, upsample_lowres(lowres, 2))
    assert torch.equal(full[0, :2, :2], torch.full((2, 2), expected[0, 0].item()))
    with pytest.raises(ValueError, match="divide"):
        lowres_condition(torch.zeros(1, 30, 30), 8)


@pytest.mark.parametrize(
    "condition_transform",
    [
        VQGANImageProcessor(condition_type="edges"),
        VQGANImageProcessor(condition_type="lowres", lowres_factor=8),
        VQGANImageProcessor(condition_type="lowres", num_labels=4, lowres_factor=8, lowres_full_size=True),
    ],
    ids=["edges", "lowres", "lowres-full"],
)
def test_derived_condition_identical_at_training_and_sampling(condition_transform):
    dataset = load_image_dataset(max_train_samples=6)
    transform = VQGANImageProcessor(32, channels=1)
    training = with_image_transform(dataset["train"], transform, condition_transform=condition_transform)
    batch = collate_fn([training[i] for i in range(6)])
    expected_shape = condition_transform.condition_shape(1, 32)
    assert batch["condition_values"].shape == (6, *expected_shape)
    assert batch["condition_values"].std() > 0.1  # a real map, not a placeholder
    # At sampling time the condition comes from the same function, on a batch of images.
    sampled = derive_condition(
        condition_transform.condition_type,
        batch["pixel_values"],
        lowres_factor=condition_transform.config.lowres_factor,
        lowres_full_size=condition_transform.config.lowres_full_size,
    )
    assert torch.equal(sampled, batch["condition_values"])
    assert torch.equal(condition_transform.derive(batch["pixel_values"][2]), batch["condition_values"][2])
    if condition_transform.condition_type == "lowres" and not condition_transform.config.lowres_full_size:
        assert expected_shape == (1, 4, 4)  # 32x32 digits at factor 8


def test_transform_needs_its_inputs():
    with pytest.raises(ValueError, match="derived"):
        VQGANImageProcessor(condition_type="edges").condition_map(None)
    with pytest.raises(ValueError, match="paired"):
        VQGANImageProcessor(condition_type="depth").condition_map(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="not derived"):
        derive_condition("segmentation", torch.zeros(1, 4, 4))


def test_condition_to_pixels_shapes():
    one_hot = one_hot_labels(torch.randint(0, 5, (2, 8, 8)), 5)
    rendered = condition_to_pixels(one_hot, "segmentation")
    assert rendered.shape == (2, 3, 8, 8) and rendered.abs().max() <= 1
    lowres = torch.rand(2, 1, 4, 4) * 2 - 1
    assert condition_to_pixels(lowres, "lowres", size=32).shape == (2, 1, 32, 32)


# ---------------------------------------------------------------------------------------------------- canny
def _f1(ours: np.ndarray, reference: np.ndarray) -> float:
    return 2 * (ours & reference).sum() / max(ours.sum() + reference.sum(), 1)


def _skimage_photos() -> dict[str, np.ndarray]:
    data = pytest.importorskip("skimage.data")
    return {"camera": data.camera() / 255.0, "coins": data.coins() / 255.0,
            "astronaut": data.astronaut().mean(axis=-1) / 255.0}  # fmt: skip


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_canny_agrees_with_scikit_image_on_photos(sigma):
    """Reported agreement: F1 over edge pixels 1.000 on camera, coins, astronaut at sigma 1 and 2 (identical maps)."""
    canny = pytest.importorskip("skimage.feature").canny
    for name, photo in _skimage_photos().items():
        photo = photo[:256, :256]  # a corner keeps the test fast; edges of every kind are in it
        reference = canny(photo, sigma=sigma)
        ours = canny_edges(torch.from_numpy(photo)[None, None], sigma=sigma)[0, 0].numpy()
        f1 = _f1(ours, reference)
        print(f"canny F1 {name} sigma={sigma}: {f1:.4f} ({reference.sum()} reference edge pixels)")
        assert reference.sum() > 500 and f1 >= 0.95, (name, f1)


def test_canny_agrees_with_scikit_image_on_digits_and_thresholds():
    canny = pytest.importorskip("skimage.feature").canny
    digits = pytest.importorskip("sklearn.datasets").load_digits().images[:30]
    scores = []
    for digit in digits:
        image = np.asarray(Image.fromarray(np.uint8(digit * 255 / 16)).resize((32, 32), Image.BICUBIC)) / 255.0
        for low, high in [(None, None), (0.05, 0.3)]:
            reference = canny(image, low_threshold=low, high_threshold=high)
            ours = canny_edges(torch.from_numpy(image)[None, None], low_threshold=low, high_threshold=high)
            scores.append(_f1(ours[0, 0].numpy(), reference))
    print(f"canny F1 on 30 digits x 2 threshold pairs: mean {np.mean(scores):.4f}, min {np.min(scores):.4f}")
    assert np.mean(scores) >= 0.95


def test_canny_properties_on_a_step():
    step = torch.zeros(1, 1, 24, 24, dtype=torch.float64)
    step[..., :, 12] = 0.5  # a vertical step centred on column 12 (a sharp step would tie columns 11 and 12)
    step[..., :, 13:] = 1.0
    edges = canny_edges(step)
    assert edges.dtype == torch.bool and edges.shape == step.shape
    assert edges[0, 0, 1:-1, 12].all()  # a line along the whole step
    assert not edges[0, 0, 2:-2, :12].any() and not edges[0, 0, 2:-2, 13:].any()  # one pixel thin
    assert not edges[0, 0, [0, -1]].any() and not edges[0, 0, :, [0, -1]].any()  # the border is never an edge
    assert not canny_edges(torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)).any()  # no edges in a flat image
    with pytest.raises(ValueError, match="low_threshold"):
        canny_edges(step, low_threshold=0.5, high_threshold=0.2)
