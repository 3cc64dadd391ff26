"""Tokenising a dataset once: fingerprints, the codes written, and the on-disk cache that later runs reuse."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANImageProcessor, VQGANModel
from hf_vqgan.training.tokenize import (
    dataset_fingerprint,
    load_or_tokenize,
    model_fingerprint,
    tokenize_split,
    tokenized_cache_path,
)
from testing_utils import small_vqgan_config, tiny_vqgan


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    # Asymmetric images, so that a mirrored image has different codes.
    return [Image.fromarray(rng.integers(0, 256, size=(8, 12), dtype=np.uint8), mode="L") for _ in range(n)]


def _dataset(n: int = 6) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": _images(n), "label": list(range(n))}, features=features)


@pytest.fixture
def transform() -> VQGANImageProcessor:
    return VQGANImageProcessor(16, channels=1, center_crop=True)


def _expected_codes(vqgan, transform, images, flip=False) -> list[list[int]]:
    pixels = torch.stack([transform(image) for image in images])  # (B, 1, 16, 16)
    if flip:
        pixels = pixels.flip(-1)
    with torch.no_grad():
        return vqgan.tokenize(pixels).flatten(1).tolist()  # (B, h*w)


def test_model_fingerprint_follows_weights_and_config():
    a, b = tiny_vqgan(0, **small_vqgan_config()), tiny_vqgan(0, **small_vqgan_config())
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(tiny_vqgan(1, **small_vqgan_config()))
    # a config change that leaves every weight alone still changes the codes' meaning
    other_config = tiny_vqgan(0, **small_vqgan_config(commitment_beta=0.5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), other_config.state_dict().values()))
    assert model_fingerprint(a) != model_fingerprint(other_config)
    with torch.no_grad():
        b.quantizer.embedding.weight[0, 0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)


def test_model_fingerprint_does_not_depend_on_where_the_model_was_loaded_from(tmp_path):
    model = tiny_vqgan(**small_vqgan_config())
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "pipeline" / "vqgan")
    from_a = VQGANModel.from_pretrained(tmp_path / "a")
    from_pipeline = VQGANModel.from_pretrained(tmp_path / "pipeline", subfolder="vqgan")
    assert from_a.config._name_or_path != from_pipeline.config._name_or_path
    assert model_fingerprint(from_a) == model_fingerprint(from_pipeline) == model_fingerprint(model)


def test_dataset_fingerprint_and_cache_path():
    dataset = _dataset()
    assert dataset_fingerprint(dataset) == dataset._fingerprint
    assert dataset_fingerprint(dataset.select(range(3))) != dataset_fingerprint(dataset)
    with pytest.raises(ValueError, match="streaming"):
        dataset_fingerprint(dataset.to_iterable_dataset())

    parts = {"tokenizer": "abc", "resolution": 16, "flips": False}
    path = tokenized_cache_path("/cache", parts)
    assert path.parent.as_posix() == "/cache" and path.name.startswith("tokens-")
    assert tokenized_cache_path("/cache", dict(reversed(list(parts.items())))) == path  # key order is irrelevant
    assert tokenized_cache_path("/cache", {**parts, "flips": True}) != path
    assert tokenized_cache_path("/cache", {**parts, "resolution": 32}) != path


def test_tokenize_split_writes_the_tokenizers_codes_and_labels(transform):
    vqgan, dataset = tiny_vqgan(**small_vqgan_config()), _dataset(6)
    tokens = tokenize_split(dataset, vqgan, transform, "image", label_column="label", batch_size=4)
    assert tokens.column_names == ["indices", "label"]
    assert len(tokens) == 6
    assert tokens["indices"] == _expected_codes(vqgan, transform, dataset["image"])
    assert len(tokens["indices"][0]) == 8 * 8
    assert tokens["label"] == list(range(6))


def test_tokenize_split_with_flips_adds_the_mirrored_images(transform):
    """Each image's row, then its mirror's (issue 19): the order no longer depends on the batch size (it was each
    batch's images, then their mirrors), so token datasets are the same however they were extracted."""
    vqgan, dataset = tiny_vqgan(**small_vqgan_config()), _dataset(3)
    originals = _expected_codes(vqgan, transform, dataset["image"])
    mirrored = _expected_codes(vqgan, transform, dataset["image"], flip=True)
    assert mirrored != originals  # otherwise this test could not tell them apart
    for batch_size in (1, 2, 8):
        tokens = tokenize_split(
            dataset, vqgan, transform, "image", label_column="label", flips=True, batch_size=batch_size
        )
        assert tokens["indices"] == [row for pair in zip(originals, mirrored) for row in pair]
        assert tokens["label"] == [0, 0, 1, 1, 2, 2]


def test_tokenize_split_skips_unreadable_images(transform):
    images = _images(3)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    encoded[1] = {"bytes": b"not a png", "path": "broken.png"}
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Value("int64")})
    dataset = datasets.Dataset.from_dict({"image": encoded, "label": [0, 1, 2]}, features=features)

    vqgan = tiny_vqgan(**small_vqgan_config())
    tokens = tokenize_split(dataset, vqgan, transform, "image", label_column="label")
    assert tokens["label"] == [0, 2]
    assert tokens["indices"] == _expected_codes(vqgan, transform, [images[0], images[2]])


def test_load_or_tokenize_builds_once_then_reuses_the_saved_dataset(tmp_path, transform):
    vqgan, dataset = tiny_vqgan(**small_vqgan_config()), _dataset(4)
    parts = {"tokenizer": model_fingerprint(vqgan), "data": dataset_fingerprint(dataset), "resolution": 16}
    calls = []

    def build():
        calls.append(1)
        return datasets.DatasetDict(train=tokenize_split(dataset, vqgan, transform, "image", label_column="label"))

    first, path = load_or_tokenize(tmp_path, parts, build)
    assert len(calls) == 1
    assert path == tokenized_cache_path(tmp_path, parts)
    assert (path / "COMPLETE").is_file() and (path / "parts.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind

    second, same_path = load_or_tokenize(tmp_path, parts, build)
    assert len(calls) == 1  # reused, not recomputed
    assert same_path == path
    assert (
        second["train"]["indices"] == first["train"]["indices"] == _expected_codes(vqgan, transform, dataset["image"])
    )

    # anything that changes the codes gets its own entry
    load_or_tokenize(tmp_path, {**parts, "resolution": 32}, build)
    assert len(calls) == 2
    assert len(list(tmp_path.iterdir())) == 2


def test_an_interrupted_tokenisation_is_rebuilt(tmp_path):
    parts = {"tokenizer": "abc"}
    path = tokenized_cache_path(tmp_path, parts)
    path.mkdir(parents=True)  # a folder without its COMPLETE marker: a run died while writing it
    (path / "junk.arrow").write_text("partial")

    def build():
        return datasets.DatasetDict(train=datasets.Dataset.from_dict({"indices": [[1, 2], [3, 4]]}))

    loaded, _ = load_or_tokenize(tmp_path, parts, build)
    assert loaded["train"]["indices"] == [[1, 2], [3, 4]]
    assert not (path / "junk.arrow").exists()


def _token_build(calls: list):
    def build():
        calls.append(1)
        return datasets.DatasetDict(train=datasets.Dataset.from_dict({"indices": [[i, i + 1] for i in range(50)]}))

    return build


def test_a_damaged_cache_is_named_and_tokenised_again(tmp_path, caplog):
    """A cache whose file was cut short after it was written (a full disk, a copy interrupted) is reported by name
    and rebuilt: the same inputs give the same codes. Before, it loaded into a pyarrow traceback."""
    parts, calls = {"tokenizer": "abc"}, []
    _, path = load_or_tokenize(tmp_path, parts, _token_build(calls))
    arrow = next(path.rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="hf_vqgan.training.tokenize"):
        second, _ = load_or_tokenize(tmp_path, parts, _token_build(calls))
    assert len(calls) == 2
    assert f"{arrow} has 100 bytes" in caplog.text and "tokenising again" in caplog.text
    assert second["train"]["indices"] == [[i, i + 1] for i in range(50)]


def test_an_unreadable_cache_of_an_older_version_raises_naming_it(tmp_path):
    """Caches written before the sizes were recorded (a COMPLETE marker of "ok") cannot be checked before loading:
    a damaged one raises one error naming the folder, never a pyarrow traceback."""
    from hf_vqgan.loading import CorruptFileError

    parts = {"tokenizer": "abc"}
    _, path = load_or_tokenize(tmp_path, parts, _token_build([]))
    (path / "COMPLETE").write_text("ok")
    arrow = next(path.rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=f"The tokenised dataset {path} cannot be read .*Delete the folder"):
        load_or_tokenize(tmp_path, parts, _token_build([]))


def test_load_or_tokenize_runs_an_extraction_and_leaves_no_work_folder(tmp_path, transform, monkeypatch):
    """The transformer stage's cache runs the distributed extraction (issue 19): same codes as tokenising the split
    whole, its chunks removed once cached, and a second call loads the cache without tokenising."""
    import hf_vqgan.training.tokenize as tokenize_module
    from hf_vqgan.training.extraction import Extraction

    vqgan, dataset = tiny_vqgan(**small_vqgan_config()), _dataset(5)
    parts = {"tokenizer": model_fingerprint(vqgan), "data": dataset_fingerprint(dataset)}
    extraction = Extraction({"train": dataset}, vqgan, transform, "image", key=parts, label_column="label",
                            flip_splits=("train",), chunk_size=2, batch_size=3)  # fmt: skip
    tokens, path = load_or_tokenize(tmp_path, parts, extraction)
    whole = tokenize_split(dataset, vqgan, transform, "image", label_column="label", flips=True)
    assert tokens["train"].to_dict() == whole.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the work folder is gone

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(tokenize_module, "tokenize_split", no_tokenising)
    again, _ = load_or_tokenize(tmp_path, parts, extraction)
    assert again["train"].to_dict() == whole.to_dict()
