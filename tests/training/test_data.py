from __future__ import annotations

import io
import json
import logging

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from sklearn.datasets import load_digits

from hf_vqgan import VQGANImageProcessor
from hf_vqgan.image_utils import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    check_image_size,
    convert_image_mode,
    decode_image,
)
from hf_vqgan.training.data import (
    DIGITS_NUM_VALIDATION,
    BadImageCounter,
    DatasetConfigError,
    collate_fn,
    digits_split_indices,
    load_digits_dataset,
    load_image_dataset,
    preprocess_batch,
    with_image_transform,
)
from hf_vqgan.training.sources import parse_data_files
from testing_utils import header_only_png

BAD_FILES = ("corrupt.png", "truncated.png", "empty.png")


# ------------------------------------------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


def test_digits_sizes_features_and_values(digits):
    assert set(digits) == {"train", "validation"}
    assert len(digits["validation"]) == DIGITS_NUM_VALIDATION == 180
    assert len(digits["train"]) == 1797 - 180
    assert isinstance(digits["train"].features["image"], datasets.Image)
    assert digits["train"].features["label"].names == [str(d) for d in range(10)]
    image = digits["train"][0]["image"]
    assert image.mode == "L" and image.size == (8, 8)

    # Each image is sklearn's 0..16 digit scaled to 0..255, and its label is sklearn's label.
    raw = load_digits()
    train_indices, _ = digits_split_indices()
    for position in (0, 1, 500):
        example = digits["train"][position]
        expected = np.rint(raw.images[train_indices[position]] * 255 / 16).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(example["image"]), expected)
        assert example["label"] == raw.target[train_indices[position]]
    pixels = np.stack([np.asarray(image) for image in digits["validation"]["image"]])
    assert pixels.min() == 0 and pixels.max() == 255


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    again = load_digits_dataset()
    for split in ("train", "validation"):
        assert digits[split]["label"] == again[split]["label"]
        first = [np.asarray(image) for image in digits[split]["image"][:50]]
        second = [np.asarray(image) for image in again[split]["image"][:50]]
        assert all(np.array_equal(a, b) for a, b in zip(first, second))
    train, validation = digits_split_indices()
    assert len(np.intersect1d(train, validation)) == 0
    assert len(np.union1d(train, validation)) == 1797
    for split in ("train", "validation"):
        assert set(digits[split]["label"]) == set(range(10))
    assert np.bincount(digits["validation"]["label"]).tolist() == [18] * 10  # stratified


def test_load_image_dataset_defaults_to_digits():
    dataset = load_image_dataset(label_column="label")
    assert (len(dataset["train"]), len(dataset["validation"])) == (1617, 180)
    # The image column is cast to undecoded values so that preprocess_batch can skip unreadable files.
    assert dataset["train"].features["image"].decode is False
    assert isinstance(dataset["train"][0]["image"], dict)


def test_max_train_samples_and_seeded_subset():
    dataset = load_image_dataset(max_train_samples=100, seed=3)
    assert (len(dataset["train"]), len(dataset["validation"])) == (100, 180)
    again = load_image_dataset(max_train_samples=100, seed=3)
    assert dataset["train"]["label"] == again["train"]["label"]


def test_validation_split_by_name_and_missing_split():
    dataset = load_image_dataset(validation_split="validation")
    assert len(dataset["validation"]) == 180
    with pytest.raises(ValueError, match=r"'test'.*\['train', 'validation'\]"):
        load_image_dataset(validation_split="test")


def test_missing_columns_name_the_column_and_available_ones():
    with pytest.raises(ValueError, match=r"'pixels'.*\['image', 'label'\]"):
        load_image_dataset(image_column="pixels")
    with pytest.raises(ValueError, match=r"'class'.*\['image', 'label'\]"):
        load_image_dataset(label_column="class")
    with pytest.raises(ValueError, match=r"'segmentation'"):
        load_image_dataset(condition_column="segmentation")


@pytest.mark.parametrize("validation_split", [0.0, 1.5, 0, True, None])
def test_bad_validation_split_is_rejected(validation_split):
    with pytest.raises((ValueError, TypeError)):
        load_image_dataset(validation_split=validation_split)


def test_streaming_digits_take_first_examples():
    dataset = load_image_dataset(streaming=True, validation_split=5, max_train_samples=7)
    assert isinstance(dataset, datasets.IterableDatasetDict)
    assert sum(1 for _ in dataset["validation"]) == 180  # the digits have a validation split: it is used
    assert sum(1 for _ in dataset["train"]) == 7


# ----------------------------------------------------------------------------------------- imagefolder
def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    """Six good RGB images in two class folders, and three unreadable files in the first class."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"good_{i}.png").write_bytes(_png_bytes(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)))
    (root / "cat" / "corrupt.png").write_bytes(b"this is not a png file")
    full = _png_bytes(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (root / "cat" / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / "cat" / "empty.png").write_bytes(b"")
    return root


def _iterate(dataset, batch_size: int = 4) -> list[dict]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn)
    return list(loader)


def test_imagefolder_with_bad_files_skips_counts_and_names_them(image_folder, tmp_path, caplog):
    dataset = load_image_dataset(
        train_data_dir=image_folder, label_column="label", validation_split=0.3, cache_dir=tmp_path / "cache"
    )
    assert len(dataset["train"]) + len(dataset["validation"]) == 9
    counter = BadImageCounter()
    transform = VQGANImageProcessor(8, channels=3, center_crop=False, random_flip=True)
    dataset = with_image_transform(dataset, transform, label_column="label", counter=counter)
    with caplog.at_level(logging.WARNING, logger="hf_vqgan.training.data"):
        batches = _iterate(dataset["train"]) + _iterate(dataset["validation"])
    assert sum(batch["pixel_values"].shape[0] for batch in batches) == 6
    assert counter.skipped == 3 and counter.last_file is not None and counter.last_error is not None
    for name in BAD_FILES:
        assert name in caplog.text
    for batch in batches:
        assert batch["pixel_values"].shape[1:] == (3, 8, 8)
        assert batch["labels"].shape == batch["pixel_values"].shape[:1]
        assert torch.all(batch["pixel_values"].abs() <= 1)
    labels = torch.cat([batch["labels"] for batch in batches])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_imagefolder_fraction_split_is_seeded(image_folder, tmp_path):
    def paths(seed):
        dataset = load_image_dataset(
            train_data_dir=image_folder, validation_split=0.3, seed=seed, cache_dir=tmp_path / "cache"
        )
        return sorted(example["path"] for example in dataset["validation"]["image"])

    first = paths(0)
    assert len(first) == 3  # ceil(0.3 * 9)
    assert first == paths(0)


def test_dataset_name_as_local_folder(image_folder, tmp_path):
    dataset = load_image_dataset(dataset_name=str(image_folder), validation_split=2, cache_dir=tmp_path / "cache")
    assert (len(dataset["train"]), len(dataset["validation"])) == (7, 2)
    with pytest.raises(ValueError, match="not both"):
        load_image_dataset(dataset_name=str(image_folder), train_data_dir=image_folder)


def test_streaming_imagefolder(image_folder, tmp_path, caplog):
    dataset = load_image_dataset(
        train_data_dir=image_folder, streaming=True, validation_split=2, cache_dir=tmp_path / "cache"
    )
    assert isinstance(dataset["train"], datasets.IterableDataset)
    validation = [example["image"]["path"] for example in dataset["validation"]]
    train = [example["image"]["path"] for example in dataset["train"]]
    assert len(validation) == 2 and len(train) == 7 and not set(validation) & set(train)

    counter = BadImageCounter()
    transformed = with_image_transform(dataset, VQGANImageProcessor(8), counter=counter)
    with caplog.at_level(logging.WARNING, logger="hf_vqgan.training.data"):
        batches = _iterate(transformed["train"], batch_size=3) + _iterate(transformed["validation"], batch_size=3)
    assert sum(batch["pixel_values"].shape[0] for batch in batches) == 6
    assert counter.skipped == 3

    # The first examples of a stream of unknown length cannot be a fraction of it.
    with pytest.raises(ValueError, match="unknown size"):
        load_image_dataset(
            train_data_dir=image_folder, streaming=True, validation_split=0.1, cache_dir=tmp_path / "cache"
        )


# ---------------------------------------------------------------------------- data files and saved datasets
@pytest.fixture
def data_files(tmp_path):
    """Eight labelled 10x12 images as each kind of data file, in `tmp_path / "data"`: csv of paths relative to it,
    jsonl of absolute paths, parquet and arrow of embedded images."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"images/{i}.png" for i in range(8)]
    for name in names:
        (root / name).write_bytes(_png_bytes(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)))
    labels = [i % 2 for i in range(8)]
    (root / "train.csv").write_text("image,label\n" + "".join(f"{n},{y}\n" for n, y in zip(names, labels)))
    rows = [json.dumps({"image": str(root / n), "label": y}) for n, y in zip(names, labels)]
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    table = datasets.Dataset.from_dict({"image": [str(root / n) for n in names], "label": labels}, features=features)
    table = table.map(lambda example: example)  # embeds nothing yet: paths become bytes on save below
    table.to_parquet(str(root / "train.parquet"))
    table.save_to_disk(str(root / "saved"))
    (root / "train.arrow").write_bytes(next((root / "saved").glob("*.arrow")).read_bytes())
    return root


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
@pytest.mark.parametrize("name", ["train.csv", "train.jsonl", "train.parquet", "train.arrow"])
def test_data_files_of_each_format_train_from_any_directory(name, streaming, data_files, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative image paths are read from the data file's folder, not the working one
    dataset = load_image_dataset(data_files=str(data_files / name), label_column="label", validation_split=2,
                                 streaming=streaming, cache_dir=tmp_path / "cache")  # fmt: skip
    counter = BadImageCounter()
    transformed = with_image_transform(dataset, VQGANImageProcessor(8, channels=3), label_column="label",
                                       counter=counter)  # fmt: skip
    batches = _iterate(transformed["train"]) + _iterate(transformed["validation"])
    assert counter.skipped == 0
    assert sum(batch["pixel_values"].shape[0] for batch in batches) == 8
    assert sorted(torch.cat([batch["labels"] for batch in batches]).tolist()) == [0] * 4 + [1] * 4


def test_data_files_name_their_splits(data_files, tmp_path):
    (data_files / "val.parquet").write_bytes((data_files / "train.parquet").read_bytes())
    files = [str(data_files / "train.parquet"), f"validation={data_files / 'val.parquet'}"]
    assert parse_data_files(files) == {"train": [files[0]], "validation": [str(data_files / "val.parquet")]}
    assert parse_data_files({"train": "a.csv"}) == {"train": ["a.csv"]}
    dataset = load_image_dataset(data_files=files, cache_dir=tmp_path / "cache")
    assert (len(dataset["train"]), len(dataset["validation"])) == (8, 8)  # the named split is used, not held out


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["train.txt"], r"'.*train\.txt' is not a data file this loader reads; use one of \.parquet"),
        (["missing.parquet"], r"the train file '.*missing\.parquet' does not exist"),
        (["train.csv", "validation=train.parquet"], r"mixes formats \(\['csv', 'parquet'\]\)"),
    ],
)
def test_bad_data_files_are_named(files, message, data_files, tmp_path):
    (data_files / "train.txt").write_text("not data")
    files = [f"{f.split('=')[0]}={data_files / f.split('=')[1]}" if "=" in f else str(data_files / f) for f in files]
    with pytest.raises(DatasetConfigError, match=message):
        load_image_dataset(data_files=files, cache_dir=tmp_path / "cache")


def test_a_missing_image_of_a_data_file_names_the_path_and_folder(data_files, tmp_path):
    (data_files / "moved.csv").write_text("image,label\nimages/gone.png,0\nimages/0.png,1\n")
    with pytest.raises(DatasetConfigError, match=r"gone\.png.*column 'image' of .*moved\.csv.*data file's folder"):
        load_image_dataset(data_files=str(data_files / "moved.csv"), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_save_to_disk_folder_as_dataset_name(streaming, data_files, tmp_path):
    dataset = load_image_dataset(dataset_name=str(data_files / "saved"), label_column="label", validation_split=3,
                                 streaming=streaming, cache_dir=tmp_path / "cache")  # fmt: skip
    assert sum(1 for _ in dataset["train"]) == 5 and sum(1 for _ in dataset["validation"]) == 3
    # A saved DatasetDict keeps its own splits.
    saved = load_from_disk_dict(data_files / "saved")
    saved.save_to_disk(str(tmp_path / "saved_dict"))
    dataset = load_image_dataset(dataset_name=str(tmp_path / "saved_dict"), streaming=streaming)
    assert sum(1 for _ in dataset["validation"]) == 2


def load_from_disk_dict(path) -> datasets.DatasetDict:
    table = datasets.load_from_disk(str(path))
    return datasets.DatasetDict({"train": table.select(range(6)), "validation": table.select(range(6, 8))})


EMPTY_VALIDATION = r"validation split \('validation'\) has no examples.*--validation_split"


def test_an_empty_validation_split_is_refused(data_files, tmp_path, monkeypatch):
    # A streamed csv without rows; map-style, datasets itself refuses such a file, so a dataset with an empty
    # validation split (a Hub dataset, say) is what `load_dataset` returns here.
    (data_files / "empty.csv").write_text("image,label\n")
    files = [str(data_files / "train.csv"), f"validation={data_files / 'empty.csv'}"]
    with pytest.raises(DatasetConfigError, match=EMPTY_VALIDATION):
        load_image_dataset(data_files=files, streaming=True, cache_dir=tmp_path / "cache")

    saved = load_from_disk_dict(data_files / "saved")
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=saved["train"].features)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: datasets.DatasetDict(
        {"train": saved["train"], "validation": empty}))  # fmt: skip
    with pytest.raises(DatasetConfigError, match=EMPTY_VALIDATION):
        load_image_dataset(dataset_name="user/empty-validation")


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
@pytest.mark.parametrize(("labels", "found"), [(["cat", "dog"], "str"), ([0.5, 1.5], "float")])
def test_a_class_column_that_is_not_integer_is_refused(labels, found, streaming, data_files, tmp_path):
    rows = "".join(f"images/{i}.png,{labels[i % 2]}\n" for i in range(8))
    (data_files / "named.csv").write_text("image,species\n" + rows)
    with pytest.raises(
        DatasetConfigError,
        match=rf"Class column 'species' of split 'train' is of type .*{found}.*ClassLabel.*class_encode_column",
    ):
        load_image_dataset(data_files=str(data_files / "named.csv"), label_column="species", validation_split=2,
                           streaming=streaming, cache_dir=tmp_path / "cache")  # fmt: skip


def test_collate_puts_a_tensor_first_for_accelerates_batch_size():
    from accelerate.utils import find_batch_size

    batch = {"image": [{"bytes": _png_bytes(np.zeros((4, 4, 3), np.uint8))}] * 3, "label": [1, 0, 1]}
    columns = preprocess_batch(batch, VQGANImageProcessor(4), label_column="label")
    collated = collate_fn([dict(zip(columns, values)) for values in zip(*columns.values())])
    assert find_batch_size(collated) == 3
    assert all(isinstance(value, torch.Tensor) for value in collated.values())  # accelerate concatenates them


def test_collate_of_an_all_bad_batch_is_empty_but_well_shaped():
    counter = BadImageCounter()
    batch = {"image": [{"bytes": b"junk", "path": "a.png"}, {"bytes": b"", "path": "b.png"}], "label": [1, 2]}
    outputs = preprocess_batch(batch, VQGANImageProcessor(4, channels=1), label_column="label", counter=counter)
    examples = [{key: values[i] for key, values in outputs.items()} for i in range(2)]
    collated = collate_fn(examples)
    assert collated["pixel_values"].shape == (0, 1, 4, 4)
    assert collated["labels"].shape == (0,)
    assert counter.skipped == 2 and counter.last_file == "b.png"


def test_counter_raises_after_too_many_failures_in_a_row():
    counter = BadImageCounter(max_consecutive=3)
    batch = {"image": [{"bytes": b"junk", "path": f"{i}.png"} for i in range(3)]}
    with pytest.raises(RuntimeError, match="3 images in a row"):
        preprocess_batch(batch, VQGANImageProcessor(4), counter=counter)


# -------------------------------------------------------------------------------------------- transforms
def _image(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (12, 16), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, (12, 16)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((12, 16), dtype=np.float32))
    if mode == "P":
        return rgb.quantize(colors=8)
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "I", "F", "CMYK", "LA", "1", "YCbCr"])
@pytest.mark.parametrize("channels", [1, 3])
def test_transform_any_mode_to_model_channels(mode, channels):
    image = _image(mode)
    assert image.mode == mode
    pixel_values = VQGANImageProcessor(8, channels=channels)(image)
    assert pixel_values.shape == (channels, 8, 8) and pixel_values.dtype == torch.float32
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1
    assert pixel_values.std() > 0.05  # not a blank image


def test_sixteen_bit_images_are_rescaled_not_clipped():
    values = np.array([[0, 256], [65535, 32768]], dtype=np.uint16)
    reopened = Image.open(io.BytesIO(_png_bytes(values)))  # how a 16-bit PNG arrives from disk
    for image in (Image.fromarray(values), reopened):
        assert np.asarray(convert_image_mode(image, 1)).tolist() == [[0, 1], [255, 128]]
        pixel_values = VQGANImageProcessor(2, channels=1)(image)
        torch.testing.assert_close(pixel_values[0], torch.tensor([[0, 1], [255, 128]]) / 127.5 - 1)


def test_float_images_in_unit_range_are_scaled():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(convert_image_mode(image, 1)).tolist() == [[0, 128, 255]]


def test_transparency_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest fully transparent black
    pixel_values = VQGANImageProcessor(2, channels=3)(Image.fromarray(rgba, mode="RGBA"))
    torch.testing.assert_close(pixel_values[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(pixel_values[:, 1, 1], torch.ones(3))
    gray = VQGANImageProcessor(2, channels=1)(Image.fromarray(rgba, mode="RGBA").convert("LA"))
    assert gray[0, 1, 1] == 1.0


def test_palette_image_keeps_its_colours():
    palette_image = Image.new("P", (2, 2))
    palette_image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    rgb = VQGANImageProcessor(2, channels=3)(palette_image)
    torch.testing.assert_close(rgb[:, 0, 1], torch.tensor([1.0, -1.0, -1.0]))
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))


def test_center_crop_of_a_wide_image_is_its_middle():
    array = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8) * 7  # height 4, width 8: no resize at resolution 4
    pixel_values = VQGANImageProcessor(4, channels=1)(Image.fromarray(array))
    expected = torch.from_numpy(array[:, 2:6].astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(pixel_values[0], expected)


def test_random_crop_and_flip_are_windows_of_the_image():
    array = np.arange(4 * 8, dtype=np.uint8).reshape(4, 8) * 7
    transform = VQGANImageProcessor(4, channels=1, center_crop=False, random_flip=True)
    generator = torch.Generator().manual_seed(0)
    offsets, flips = set(), set()
    for _ in range(40):
        pixel_values, geometry = transform.transform(Image.fromarray(array), generator=generator)
        left = geometry.box[0]
        window = array[:, left : left + 4]
        if geometry.flip:
            window = window[:, ::-1]
        torch.testing.assert_close(pixel_values[0], torch.from_numpy(window.astype(np.float32)) / 127.5 - 1)
        offsets.add(left)
        flips.add(geometry.flip)
    assert offsets == {0, 1, 2, 3, 4} and flips == {False, True}


def test_upsampling_tiny_digits_keeps_range_and_constant_images():
    transform = VQGANImageProcessor(32, channels=1)
    constant = transform(Image.new("L", (8, 8), 200))
    torch.testing.assert_close(constant, torch.full((1, 32, 32), 200 / 127.5 - 1))
    resized = transform(Image.fromarray(np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)))
    assert resized.shape == (1, 32, 32) and resized.min() >= -1 and resized.max() <= 1


def test_decode_image_rejects_empty_and_zero_sized_images():
    with pytest.raises(ValueError, match="zero size"):
        decode_image(Image.new("L", (0, 5)))
    with pytest.raises(OSError):
        decode_image({"bytes": b"\x89PNG\r\n\x1a\n", "path": None})  # a PNG signature and nothing else


@pytest.mark.parametrize("kwargs", [{"resolution": 0}, {"resolution": 8, "channels": 2}])
def test_transform_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        VQGANImageProcessor(**kwargs)


# -------------------------------------------------------------------------------------------- pixel budget
@pytest.fixture
def no_decoding(monkeypatch):
    """Make decoding any image file fail loudly: a check that must run from the header alone is then proven to."""

    def fail(self):
        raise AssertionError(f"{self.filename or 'an image'} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)


def test_decode_image_refuses_an_image_over_the_budget_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "photo.png"
    Image.new("RGB", (100, 80)).save(path)
    with pytest.raises(ImageTooLargeError, match=rf"{path} is 100x80 = 8,000 pixels, over the budget of 5,000"):
        decode_image(path, max_pixels=5_000)
    bomb = {"bytes": header_only_png(10_000, 10_000), "path": "bomb.png"}
    with pytest.raises(ImageTooLargeError, match=r"bomb.png is 10000x10000 = 100,000,000 pixels.*--max_image_pixels"):
        decode_image(bomb)  # the default budget, 40 Mpx
    assert DEFAULT_MAX_IMAGE_PIXELS == 40_000_000


def test_decode_image_within_the_budget_or_without_one_decodes(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (100, 80), (10, 20, 30)).save(path)
    for budget in (8_000, None):
        assert decode_image(path, max_pixels=budget).getpixel((0, 0)) == (10, 20, 30)


def test_check_image_size_reads_the_header_only(tmp_path, no_decoding):
    path = tmp_path / "photo.png"
    Image.new("L", (30, 20)).save(path)
    assert check_image_size(path) == (30, 20)
    with pytest.raises(ImageTooLargeError, match="30x20 = 600 pixels, over the budget of 599"):
        check_image_size(path, max_pixels=599)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        check_image_size(tmp_path / "missing.png")


def test_a_skipped_file_is_counted_and_logged_once_per_run(caplog):
    counter = BadImageCounter()
    batch = {
        "image": [
            {"bytes": header_only_png(10_000, 10_000), "path": "bomb.png"},
            {"bytes": b"junk", "path": "corrupt.png"},
            {"bytes": _png_bytes(np.full((6, 6), 128, dtype=np.uint8)), "path": "good.png"},
        ]
    }
    with caplog.at_level(logging.WARNING, logger="hf_vqgan.training.data"):
        for _epoch in range(3):
            outputs = preprocess_batch(batch, VQGANImageProcessor(4, channels=1), counter=counter)
            assert outputs["valid"] == [False, False, True]  # every epoch skips both
    assert (counter.skipped, counter.oversized) == (2, 1)
    assert [r.getMessage().split()[3] for r in caplog.records] == ["bomb.png", "corrupt.png"]
    assert counter.summary() == (
        "Skipped 2 images (1 over the pixel budget, --max_image_pixels; 1 unreadable): bomb.png, corrupt.png."
    )
    assert BadImageCounter().summary() is None


def test_the_training_transform_reads_the_budget_of_its_processor():
    processor = VQGANImageProcessor(4, channels=3)
    image = Image.new("RGB", (20, 20))
    assert processor.transform(image)[0].shape == (3, 4, 4)
    processor.max_image_pixels = 399
    with pytest.raises(ImageTooLargeError, match="20x20 = 400 pixels, over the budget of 399"):
        processor.transform(image)
    processor.max_image_pixels = None
    assert processor.transform(image)[0].shape == (3, 4, 4)
