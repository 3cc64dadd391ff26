"""Class names (issue 14, finding 5): a prior config's `id2label` and the pipeline's `labels`, `get_label_ids` and
`class_labels` given as names, as diffusers' DiT pipeline takes them."""

from __future__ import annotations

import ast

import pytest
import torch

from hf_vqgan import VQGANPriorConfig, VQGANTransformerPipeline
from testing_utils import prior_config, seeded, small_vqgan_config, tiny_pipeline, tiny_prior, tiny_vqgan

NAMES = {0: "circle", 1: "square", 2: "triangle"}


@pytest.fixture(scope="module")
def named_pipe() -> VQGANTransformerPipeline:
    vqgan = tiny_vqgan(**small_vqgan_config())
    return tiny_pipeline(vqgan, tiny_prior(None, num_classes=3, id2label=NAMES))


def test_id2label_names_the_classes_and_derives_label2id():
    config = VQGANPriorConfig(**prior_config(num_classes=3, id2label={"0": "circle", "1": "square", "2": "triangle"}))
    assert config.class_names == ["circle", "square", "triangle"]
    assert config.id2label == NAMES and config.label2id == {"circle": 0, "square": 1, "triangle": 2}


@pytest.mark.parametrize("num_classes", [0, 2, 3])
def test_without_id2label_classes_have_no_names(num_classes):
    # transformers fills in {0: "LABEL_0", 1: "LABEL_1"}: those are no names of this prior's classes
    assert VQGANPriorConfig(**prior_config(num_classes=num_classes)).class_names is None


@pytest.mark.parametrize(
    "num_classes, id2label, match",
    [
        (3, {0: "circle", 1: "square"}, r"must name each of the 3 classes \(ids 0\.\.2\), got ids \[0, 1\]"),
        (2, {0: "circle", 2: "square"}, r"got ids \[0, 2\]"),
        (2, {0: "circle", 1: "circle"}, r"distinct, non-empty string names, got \['circle', 'circle'\]"),
        (2, {"a": "circle", "b": "square"}, r"keys must be class ids \(integers\), got \['a', 'b'\]"),
        (0, {0: "circle"}, r"must name each of the 0 classes"),
    ],
)
def test_bad_id2label_is_refused(num_classes, id2label, match):
    with pytest.raises(ValueError, match=match):
        VQGANPriorConfig(**prior_config(num_classes=num_classes, id2label=id2label))


def test_names_survive_save_and_load(named_pipe, tmp_path):
    named_pipe.save_pretrained(tmp_path / "pipe")
    loaded = VQGANTransformerPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.transformer.config.class_names == ["circle", "square", "triangle"]
    assert loaded.labels == {"circle": 0, "square": 1, "triangle": 2}


def test_get_label_ids_as_dit(named_pipe):
    assert named_pipe.labels == {"circle": 0, "square": 1, "triangle": 2}
    assert named_pipe.get_label_ids(["square", "circle"]) == [1, 0]
    assert named_pipe.get_label_ids("triangle") == [2]
    assert named_pipe.get_label_ids(["circle", 2]) == [0, 2]


@pytest.mark.parametrize(
    "class_labels, ids",
    [("square", [1]), (["circle", "triangle"], [0, 2]), (["circle", 2], [0, 2]), (("square", 1), [1, 1])],
)
def test_class_labels_by_name_sample_as_their_ids(named_pipe, class_labels, ids):
    by_name = named_pipe(class_labels=class_labels, generator=seeded(0), output_type="latent").images
    by_id = named_pipe(class_labels=ids, generator=seeded(0), output_type="latent").images
    assert by_name.shape[0] == len(ids) and torch.equal(by_name, by_id)


def test_an_unknown_name_lists_the_known_ones(named_pipe):
    with pytest.raises(ValueError, match=r"Unknown class name 'hexagon': the known ones are \['circle', 'square', "):
        named_pipe(class_labels=["circle", "hexagon"])
    with pytest.raises(ValueError, match=r"Unknown class name 'hexagon'"):
        named_pipe.get_label_ids("hexagon")


def test_names_on_a_prior_without_names_or_classes():
    vqgan = tiny_vqgan(**small_vqgan_config())
    unnamed = tiny_pipeline(vqgan, tiny_prior(None, num_classes=2))
    assert unnamed.labels == {}
    with pytest.raises(
        ValueError, match=r"'circle': this prior's classes have no names \(or pass class ids in \[0, 2"
    ):
        unnamed(class_labels="circle")
    unconditional = tiny_pipeline(vqgan, tiny_prior(None))
    with pytest.raises(ValueError, match=r"`class_labels`='circle' given, but this prior is unconditional"):
        unconditional(class_labels="circle")


@pytest.mark.parametrize(
    "id2label, num_classes, snippet",
    [
        (NAMES, 3, "class_labels=['circle', 'square']"),
        (None, 3, "class_labels=[0, 1]"),
        (None, 1, "class_labels=[0]"),  # the old card's [3, 7] fails on any prior with fewer than 8 classes
    ],
)
def test_card_usage_uses_labels_this_prior_has(id2label, num_classes, snippet):
    vqgan = tiny_vqgan(**small_vqgan_config())
    pipe = tiny_pipeline(vqgan, tiny_prior(None, num_classes=num_classes, id2label=id2label))
    card = str(pipe.model_card(repo_id="user/shapes"))
    assert f"images = pipe({snippet}," in card
    labels = ast.literal_eval(snippet.split("=", 1)[1])  # the labels of the snippet sample
    assert pipe(class_labels=labels, generator=seeded(0), output_type="latent").images.shape[0] == len(labels)
    assert ("`circle` (0), `square` (1), `triangle` (2)" in card) == (id2label is not None)
