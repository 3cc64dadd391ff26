"""examples/train.py transformer --tokenized_dataset (issue 19): the prior trains from a saved token dataset, map-style
or streamed, and from the same dataset loaded as a Hub id through a pre-populated offline Hub cache; flags and
tokenizers that contradict the dataset are refused."""

from __future__ import annotations

import json
import math

import pytest
from datasets import load_from_disk

from hf_vqgan import VQGANModel, VQGANTransformerPipeline
from hf_vqgan.training.token_dataset import push_token_dataset_to_hub, save_token_dataset, tokenizer_metadata
from hf_vqgan.training.tokenize import processor_fingerprint
from hub_recorder import record_hub_calls
from testing_utils import small_vqgan_config, tiny_vqgan
from token_datasets import CLASS_NAMES, as_hub_cache, build_token_dataset

FAST_ARGS = ["--train_batch_size", "4", "--eval_batch_size", "8", "--num_validation_samples", "1",
             "--report_to", "none", "--logging_steps", "1"]  # fmt: skip


def _argv(tokens, prior_json, output_dir, steps, *extra) -> list:
    return ["transformer", "--tokenized_dataset", tokens, "--prior_config", prior_json, "--output_dir", output_dir,
            "--max_train_steps", steps, *FAST_ARGS, *extra]  # fmt: skip


@pytest.fixture
def tokens_dir(tmp_path, tokenizer_dir):
    """A class-labelled token dataset of `tokenizer_dir`'s codes (16 train rows, 4 validation), naming it by path."""
    return build_token_dataset(tmp_path / "tokens", VQGANModel.from_pretrained(tokenizer_dir), str(tokenizer_dir))[0]


def test_trains_from_a_local_token_dataset_with_the_tokenizer_its_metadata_names(tmp_path, run_train, tokens_dir,
                                                                                 tokenizer_dir, prior_json):  # fmt: skip
    out = tmp_path / "pipeline"
    run = run_train(_argv(tokens_dir, prior_json, out, 3, "--checkpointing_steps", 2))
    assert run.returncode == 0
    logs = run.train_logs()
    assert sorted(logs) == [1, 2, 3] and all(math.isfinite(values["loss"]) for values in logs.values())

    pipe = VQGANTransformerPipeline.from_pretrained(out)
    config = pipe.transformer.config
    assert (config.codebook_size, config.latent_height, config.latent_width, config.num_classes) == (16, 8, 8, 3)
    assert config.class_names == CLASS_NAMES  # from the metadata (id2label)
    source = VQGANModel.from_pretrained(tokenizer_dir).state_dict()
    assert all((source[k] == v).all() for k, v in pipe.vqgan.state_dict().items())  # the pipeline holds the tokenizer
    assert pipe.image_processor.config.resolution == 16
    card = (out / "README.md").read_text()
    assert "A local token dataset (`tokens`)." in card
    assert json.loads((out / "training_args.json").read_text())["tokenized_dataset"] == "tokens"  # base name only


def test_training_from_tokens_matches_training_from_the_images_they_came_from(tmp_path, run_train, tokenizer_dir,
                                                                              prior_json):  # fmt: skip
    """The token dataset of the digits (the images path's own cache, saved as a token dataset) gives the very same
    losses, step by step, as training from the images."""
    cache = tmp_path / "cache"
    common = ["--prior_config", prior_json, "--max_train_steps", 4, "--validation_steps", 4, *FAST_ARGS]
    from_images = run_train(["transformer", "--vqgan_model_name_or_path", tokenizer_dir, "--class_column", "label",
                             "--tokenized_cache_dir", cache, "--max_train_samples", 32, "--output_dir",
                             tmp_path / "a", *common])  # fmt: skip
    assert from_images.returncode == 0
    (entry,) = [p for p in cache.iterdir() if p.name.startswith("tokens-")]
    vqgan = VQGANModel.from_pretrained(tokenizer_dir)
    image_processor = VQGANTransformerPipeline.from_pretrained(tmp_path / "a").image_processor
    metadata = {
        "tokenizer": tokenizer_metadata(vqgan, str(tokenizer_dir), 16), "cond_tokenizer": None,
        "image_processor": processor_fingerprint(image_processor), "condition_processor": None, "resolution": 16,
        "center_crop": True, "random_flip": False, "tokenize_flips": False, "condition_type": None,
        "class_column": "label", "class_names": [str(digit) for digit in range(10)], "source": {},
    }  # fmt: skip
    save_token_dataset(load_from_disk(str(entry)), tmp_path / "digit-tokens", metadata)
    from_tokens = run_train(_argv(tmp_path / "digit-tokens", prior_json, tmp_path / "b", 4, "--validation_steps", 4))
    assert from_tokens.returncode == 0
    losses = {step: values["loss"] for step, values in from_images.train_logs().items()}
    assert sorted(losses) == [1, 2, 3, 4]
    assert {step: values["loss"] for step, values in from_tokens.train_logs().items()} == losses
    val_images = json.loads((tmp_path / "a" / "metrics.json").read_text())["val_loss"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["val_loss"] == pytest.approx(val_images, rel=1e-6)


def test_trains_from_a_streamed_token_dataset(tmp_path, run_train, tokens_dir, tokenizer_dir, prior_json):
    out = tmp_path / "pipeline"
    # Another copy of the same tokenizer is accepted (the fingerprint ignores where it was read from).
    copy = tmp_path / "tokenizer-copy"
    VQGANModel.from_pretrained(tokenizer_dir).save_pretrained(copy)
    run = run_train(_argv(tokens_dir, prior_json, out, 6, "--streaming", "--vqgan_model_name_or_path", copy))
    assert run.returncode == 0
    assert sorted(run.train_logs()) == [1, 2, 3, 4, 5, 6]  # 16 rows, batches of 4: past the end of an epoch
    assert VQGANTransformerPipeline.from_pretrained(out).transformer.config.num_classes == 3
    assert json.loads((out / "metrics.json").read_text())["step"] == 6


def test_a_different_tokenizer_or_a_contradicting_flag_is_refused(tmp_path, run_train, tokens_dir, prior_json,
                                                                  capsys):  # fmt: skip
    other = tmp_path / "other-tokenizer"
    tiny_vqgan(1, **small_vqgan_config()).save_pretrained(other)
    out = tmp_path / "pipeline"
    assert run_train(_argv(tokens_dir, prior_json, out, 1, "--vqgan_model_name_or_path", other)).returncode == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "fingerprint" in error and str(other) in error
    assert run_train(_argv(tokens_dir, prior_json, out, 1, "--dataset_name", "x", "--tokenize_flips")).returncode == 2
    assert "so --dataset_name, --tokenize_flips cannot apply" in capsys.readouterr().err
    assert run_train(["transformer", "--output_dir", out]).returncode == 2
    assert "Pass --vqgan_model_name_or_path" in capsys.readouterr().err
    assert not out.exists()


def test_a_tokenizer_that_cannot_be_loaded_is_named(tmp_path, run_train, prior_json, capsys):
    tokens, _ = build_token_dataset(tmp_path / "tokens", tiny_vqgan(0, **small_vqgan_config()), "someone/lost-vqgan")
    assert run_train(_argv(tokens, prior_json, tmp_path / "out", 1)).returncode == 2
    error = capsys.readouterr().err
    assert "Cannot load the tokenizer 'someone/lost-vqgan'" in error and "--vqgan_model_name_or_path" in error


def test_trains_from_a_hub_id_through_the_offline_hub_cache(tmp_path, monkeypatch, accelerate_launch, tokens_dir,
                                                            tokenizer_dir, prior_json):  # fmt: skip
    """Pushed (intercepted), laid out as the Hub cache holds a downloaded dataset repo, and read back by its repo id
    with HF_HUB_OFFLINE=1 by a real `accelerate launch` run: nothing but the cache can supply it. (A subprocess, not
    `run_train`: huggingface_hub and datasets read HF_HUB_OFFLINE and HF_HUB_CACHE when imported, so only a fresh
    process sees the environment as a user sets it.) The tokenizer was a local folder, which the pushed metadata
    names by its base name only: the run is given a copy."""
    hub = record_hub_calls(monkeypatch)
    push_token_dataset_to_hub(tokens_dir, "someone/digit-tokens")
    as_hub_cache(hub["upload"][0]["files"], tmp_path / "hub", "someone/digit-tokens")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    out = tmp_path / "pipeline"
    accelerate_launch(_argv("someone/digit-tokens", prior_json, out, 2, "--tokenized_dataset_revision", "main",
                            "--vqgan_model_name_or_path", tokenizer_dir))  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and math.isfinite(metrics["val_loss"])
    card = (out / "README.md").read_text()
    assert "[someone/digit-tokens](https://huggingface.co/datasets/someone/digit-tokens)" in card
    assert "- someone/digit-tokens" in card.split("---")[1]  # the card's `datasets:` metadata


def test_trains_from_a_token_dataset_with_condition_codes(tmp_path, run_train, tokenizer_dir, prior_json):
    """Condition codes, the condition tokenizer and its processor all come from the metadata: no condition flag."""
    cond_dir = tmp_path / "cond-tokenizer"
    tiny_vqgan(2, **small_vqgan_config()).save_pretrained(cond_dir)
    tokens, metadata = build_token_dataset(tmp_path / "tokens", VQGANModel.from_pretrained(tokenizer_dir),
                                           str(tokenizer_dir), cond_vqgan=VQGANModel.from_pretrained(cond_dir),
                                           cond_name_or_path=str(cond_dir), classes=False)  # fmt: skip
    assert metadata["cond_tokenizer"]["latent_shape"] == [4, 4]  # 8x8 lowres maps of 16x16 images, f=2
    assert f"| Condition | lowres, tokenised by `{cond_dir}`" in (tokens / "README.md").read_text()
    out = tmp_path / "pipeline"
    assert run_train(_argv(tokens, prior_json, out, 2)).returncode == 0
    pipe = VQGANTransformerPipeline.from_pretrained(out)
    assert pipe.transformer.config.cond_length == 16 and pipe.transformer.config.num_classes == 0
    assert pipe.condition_processor.config.condition_type == "lowres"
    assert pipe.condition_processor.config.lowres_factor == 2
    source = VQGANModel.from_pretrained(cond_dir).state_dict()
    assert all((source[k] == v).all() for k, v in pipe.cond_vqgan.state_dict().items())
