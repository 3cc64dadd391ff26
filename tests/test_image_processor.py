"""`VQGANImageProcessor`: preprocess / postprocess round trips, the inference crop equal to the training transform's,
condition maps, saving as a pipeline component, and the pipeline features a non-module component must not break."""

from __future__ import annotations

import json
import pickle

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch

from hf_vqgan import (
    SchedulerMixin,
    VQGANImageProcessor,
    VQGANTransformerPipeline,
)
from hf_vqgan.image_utils import ImageTooLargeError
from testing_utils import header_only_png, random_image, small_vqgan_config, tiny_pipeline, tiny_prior, tiny_vqgan

SIZE = 16


def photo(width: int = 24, height: int = 20, seed: int = 0, mode: str = "RGB") -> PIL.Image.Image:
    return random_image(seed, (height, width)).convert(mode)


def test_preprocess_accepts_pil_arrays_and_tensors_alike():
    processor = VQGANImageProcessor(resolution=SIZE, channels=3)
    images = [photo(SIZE, SIZE, 0), photo(SIZE, SIZE, 1)]
    from_pil = processor.preprocess(images)
    array = np.stack([np.asarray(image) for image in images])  # (B, H, W, C) uint8
    assert from_pil.shape == (2, 3, SIZE, SIZE) and from_pil.dtype == torch.float32
    assert -1 <= from_pil.min() and from_pil.max() <= 1
    assert torch.equal(processor.preprocess(array), from_pil)
    assert torch.equal(processor.preprocess(torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1), from_pil)
    assert torch.equal(processor.preprocess(images[1]), from_pil[1:])
    with pytest.raises(TypeError, match="PIL image"):
        processor.preprocess("image.png")
    with pytest.raises(ValueError, match=r"shape \(batch, 3, height, width\)"):
        processor.preprocess(torch.zeros(1, 1, SIZE, SIZE))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_inference_crop_is_the_training_transform(mode):
    """`preprocess` resizes the shorter side and crops the centre exactly as the training transform does."""
    image = photo(37, 23, seed=3, mode=mode)
    channels = 1 if mode == "L" else 3
    training = VQGANImageProcessor(resolution=SIZE, channels=channels, center_crop=True)
    pixels, geometry = training.transform(image)
    assert geometry.box[0] > 0 and geometry.size[1] == SIZE  # a crop of the wide image, not a stretch
    inference = VQGANImageProcessor(resolution=SIZE, channels=channels, center_crop=False, random_flip=True)
    assert torch.equal(inference.preprocess(image)[0], pixels)  # centred and unflipped, whatever the training crop
    assert torch.equal(training(image), pixels)


def test_tensors_are_resized_and_cropped_like_images():
    processor = VQGANImageProcessor(resolution=SIZE, channels=3)
    big = torch.rand(2, 3, 40, 32) * 2 - 1  # (B, C, H, W)
    pixels = processor.preprocess(big)
    assert pixels.shape == (2, 3, SIZE, SIZE) and pixels.abs().max() <= 1
    assert processor.preprocess(big, resize=False).shape == (2, 3, 40, 32)
    assert VQGANImageProcessor().preprocess(big).shape == (2, 3, 40, 32)  # no resolution: the size is kept


def test_postprocess_round_trips_uint8_pixels():
    processor = VQGANImageProcessor(resolution=SIZE, channels=3)
    images = [photo(SIZE, SIZE, 0), photo(SIZE, SIZE, 1)]
    pixels = processor.preprocess(images)
    back = processor.postprocess(pixels, "pil")
    assert [np.asarray(b).tolist() for b in back] == [np.asarray(i).tolist() for i in images]
    as_np = processor.postprocess(pixels, "np")
    assert as_np.shape == (2, SIZE, SIZE, 3) and 0 <= as_np.min() and as_np.max() <= 1
    assert torch.equal(processor.postprocess(pixels, "pt"), torch.from_numpy(as_np).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="'latent'"):
        processor.postprocess(pixels, "latent")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resolution=0), "resolution"),
        (dict(channels=2), "channels"),
        (dict(condition_type="normals"), "normals"),
        (dict(condition_type="sketch"), r"Unknown condition type 'sketch'; expected one of"),
        (dict(condition_type="segmentation"), "num_labels"),
        (dict(condition_type="depth", depth_range=[3.0, 1.0]), "depth_range"),
        (dict(condition_type="lowres", lowres_factor=0), "lowres_factor"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQGANImageProcessor(**kwargs)


def test_depth_range_of_the_config_is_used_at_sampling_time():
    depth = np.array([[0.0, 2.0], [4.0, 8.0]], dtype=np.float32)
    fixed = VQGANImageProcessor(resolution=2, condition_type="depth", depth_range=[0.0, 16.0])
    torch.testing.assert_close(fixed.preprocess_condition(depth)[0, 0], torch.from_numpy(depth) / 8 - 1)
    per_image = VQGANImageProcessor(resolution=2, condition_type="depth")
    torch.testing.assert_close(per_image.preprocess_condition(depth)[0, 0], torch.from_numpy(depth) / 4 - 1)
    # The training-side map of one example uses the same setting.
    torch.testing.assert_close(fixed.condition_map(condition=depth), fixed.preprocess_condition(depth)[0])


def test_save_load_and_pickle(tmp_path):
    processor = VQGANImageProcessor(resolution=SIZE, channels=1, condition_type="lowres", lowres_factor=4)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["_class_name"] == "VQGANImageProcessor" and config["lowres_factor"] == 4
    loaded = VQGANImageProcessor.from_pretrained(tmp_path)
    settings = {k: v for k, v in processor.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == settings
    assert isinstance(loaded, SchedulerMixin)  # the loadable base diffusers' pipeline loader looks for
    copy = pickle.loads(pickle.dumps(loaded))  # DataLoader workers receive the transform pickled
    assert {k: v for k, v in copy.config.items() if not k.startswith("_")} == settings and copy.resolution == SIZE


def test_pipeline_features_are_unaffected_by_the_processor_component(tmp_path):
    pipe = tiny_pipeline(tiny_vqgan(**small_vqgan_config(3)), tiny_prior(None, num_classes=2, n_embd=16))
    assert pipe.image_processor.config.resolution == SIZE and pipe.condition_processor is None
    assert isinstance(pipe.components["image_processor"], VQGANImageProcessor)
    assert pipe.to("cpu", torch.float32) is pipe and pipe.image_processor.config.resolution == SIZE
    expected = pipe(class_labels=1, generator=torch.Generator().manual_seed(0), output_type="latent").images
    other = VQGANTransformerPipeline.from_pipe(pipe)
    assert other.image_processor is pipe.image_processor and other.transformer is pipe.transformer
    assert torch.equal(other(class_labels=1, generator=torch.Generator().manual_seed(0), output_type="latent").images,
                       expected)  # fmt: skip
    custom = VQGANImageProcessor(resolution=SIZE, channels=3, random_flip=True)
    pipe.register_modules(image_processor=custom)
    pipe.save_pretrained(tmp_path)
    loaded = VQGANTransformerPipeline.from_pretrained(tmp_path)
    assert loaded.image_processor.config.random_flip is True


@pytest.mark.parametrize("off_value", [-1.0, 0.0])
def test_segmentation_one_hot_off_value(off_value):
    """-1 by default (the models' range); 0 for converted taming segmentation models, whose maps were one-hot 0/1."""
    processor = VQGANImageProcessor(
        resolution=4, condition_type="segmentation", num_labels=3, one_hot_off_value=off_value
    )
    labels = torch.tensor([[0, 1, 2, 1]] * 4)
    maps = processor.preprocess_condition(labels)  # (1, 3, 4, 4)
    assert set(maps.unique().tolist()) == {off_value, 1.0}
    assert torch.equal(maps[0].argmax(0), labels)
    assert torch.equal(maps[0, 1] == 1.0, labels == 1)


# -------------------------------------------------------------------------------------------- pixel budget
@pytest.fixture
def bomb_file(tmp_path):
    """A 10,000 x 10,000 PNG that holds a header and no pixels (57 bytes)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(header_only_png(10_000, 10_000))
    return path


def test_preprocess_refuses_images_over_the_budget_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    photo(64, 48).save(path)
    image = PIL.Image.open(path)  # lazy: nothing decoded yet

    def fail(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", fail)
    processor = VQGANImageProcessor(resolution=SIZE, channels=3)
    processor.max_image_pixels = 3_000
    with pytest.raises(ImageTooLargeError, match=rf"`image` 1 \({path}\) is 64x48 = 3,072 pixels, over the budget"):
        processor.preprocess([photo(SIZE, SIZE), image])
    with pytest.raises(ImageTooLargeError, match="`image` is 64x48 = 3,072 pixels"):
        processor.preprocess(np.zeros((48, 64, 3), dtype=np.uint8))  # channels last
    with pytest.raises(ImageTooLargeError, match="`image` is 64x48 = 3,072 pixels"):
        processor.preprocess(torch.zeros(2, 3, 48, 64))  # channels first
    assert processor.preprocess(torch.zeros(2, 3, 40, 40)).shape == (2, 3, SIZE, SIZE)  # 1,600 pixels: fine


def test_the_pipeline_refuses_an_oversized_image(bomb_file):
    pipe = tiny_pipeline(tiny_vqgan(**small_vqgan_config(3)), tiny_prior())
    with PIL.Image.open(bomb_file) as bomb, pytest.raises(ImageTooLargeError, match="10000x10000 = 100,000,000"):
        pipe.encode_images(bomb)  # the default budget, 40 Mpx


def test_the_command_line_refuses_an_oversized_image(tmp_path, bomb_file, capsys):
    from hf_vqgan.cli import main

    tiny_vqgan(**small_vqgan_config(3)).save_pretrained(tmp_path / "vqgan")
    argv = ["reconstruct", "--model", str(tmp_path / "vqgan"), "--input", str(bomb_file), "--output", "out.png"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"error: {bomb_file} is 10000x10000 = 100,000,000 pixels, over the budget of 40,000,000" in error
    assert "--max-image-pixels on the hf-vqgan command line" in error and "Traceback" not in error
    small = tmp_path / "small.png"
    PIL.Image.new("RGB", (16, 16)).save(small)
    argv = [
        "reconstruct",
        "--model",
        str(tmp_path / "vqgan"),
        "--input",
        str(small),
        "--output",
        str(tmp_path / "o.png"),
    ]
    assert main([*argv, "--max-image-pixels", "200"]) == 2  # the flag reaches the check: 256 pixels is over 200
    assert "small.png is 16x16 = 256 pixels, over the budget of 200" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    assert main(argv) == 0 and (tmp_path / "o.png").is_file()


@pytest.mark.parametrize("condition_type", ["segmentation", "depth"])
def test_a_paired_map_file_over_the_budget_is_refused_before_decoding(tmp_path, condition_type, monkeypatch):
    """Paired condition maps read in training follow the processor's `max_image_pixels`, not only the default."""
    path = tmp_path / "map.png"
    PIL.Image.fromarray(np.zeros((20, 30), dtype=np.uint8), mode="L").save(path)
    processor = VQGANImageProcessor(condition_type=condition_type, num_labels=3)
    processor.max_image_pixels = 500
    monkeypatch.setattr(PIL.Image.Image, "load", lambda self: pytest.fail("decoded a map over the budget"))
    with pytest.raises(ImageTooLargeError, match=r"map.png is 30x20 = 600 pixels, over the budget of 500"):
        processor.condition_map(condition=str(path))
