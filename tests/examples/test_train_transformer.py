"""examples/train.py transformer: end-to-end runs of stage 2 over a tiny frozen tokenizer (issue 4)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import load_from_disk
from PIL import Image
from safetensors.torch import load_file

from hf_vqgan import VQGANModel, VQGANTransformerPipeline
from testing_utils import load_pipeline

# Tiny data and batches, one validation sample per class, no tracker, a log line per step.
TRANSFORMER_FAST_ARGS = ["--train_batch_size", "8", "--eval_batch_size", "64", "--max_train_samples", "64",
                         "--max_eval_samples", "32", "--num_validation_samples", "1", "--report_to", "none",
                         "--logging_steps", "1"]  # fmt: skip

PIPELINE_FILES = {
    "model_index.json",
    "pipeline_vqgan_transformer.py",
    "image_processor/preprocessor_config.json",
    "vqgan/config.json",
    "vqgan/diffusion_pytorch_model.safetensors",
    "transformer/config.json",
    "transformer/hf_vqgan_prior.py",
    "transformer/generation_config.json",
    "transformer/model.safetensors",
    "README.md",
    "samples.png",
    "training_curves.png",
    "metrics.json",
    "training_args.json",
}


def _argv(tokenizer, prior_json, output_dir, cache_dir, steps, *extra) -> list:
    return ["transformer", "--vqgan_model_name_or_path", tokenizer, "--prior_config", prior_json,
            "--output_dir", output_dir, "--tokenized_cache_dir", cache_dir, "--max_train_steps", steps,
            *TRANSFORMER_FAST_ARGS, *extra]  # fmt: skip


def _files(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _cache_entries(cache_dir) -> list:
    return sorted(p for p in cache_dir.iterdir() if p.name.startswith("tokens-"))


def test_class_conditional_run_writes_a_complete_pipeline(tmp_path, run_train, tokenizer_dir, prior_json):
    out, cache = tmp_path / "pipeline", tmp_path / "tokens"
    run = run_train(_argv(tokenizer_dir, prior_json, out, cache, 3, "--class_column", "label", "--class_dropout_prob",
                          0.5, "--pkeep", 0.8, "--guidance_scale", 2.0, "--tokenize_flips",
                          "--checkpointing_steps", 2))  # fmt: skip
    assert run.returncode == 0
    logs = run.train_logs()
    assert sorted(logs) == [1, 2, 3] and all(math.isfinite(values["loss"]) for values in logs.values())

    assert PIPELINE_FILES <= _files(out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-000002",
        "checkpoint-000003",
        "latest",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    # a 16-code vocabulary: an untrained prior's held-out loss is near log(16)
    assert metrics["step"] == 3 and 0.5 * math.log(16) < metrics["val_loss"] < 2 * math.log(16)
    card = (out / "README.md").read_text()
    assert "class dropout 0.5, pkeep 0.8" in card and "samples.png" in card
    with Image.open(out / "samples.png") as grid:
        assert grid.height > 5 * grid.width  # one row per class (10), one sample per row

    # The tokenised dataset: one cache entry, the train images and their mirrors, labels kept.
    (entry,) = _cache_entries(cache)
    tokens = load_from_disk(str(entry))
    assert len(tokens["train"]) == 2 * 64 and len(tokens["validation"]) == 32  # --max_eval_samples
    assert set(tokens["train"].column_names) == {"indices", "label"} and len(tokens["train"][0]["indices"]) == 8 * 8

    pipe = VQGANTransformerPipeline.from_pretrained(out)
    config = pipe.transformer.config
    assert (config.codebook_size, config.latent_height, config.latent_width, config.num_classes) == (16, 8, 8, 10)
    source = VQGANModel.from_pretrained(tokenizer_dir).state_dict()
    assert all(torch.equal(source[k], v) for k, v in pipe.vqgan.state_dict().items())  # the tokenizer stays frozen
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=[3, 7], guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                  output_type="pt").images  # fmt: skip
    assert images.shape == (2, 1, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0


def test_tokenised_dataset_is_reused_not_recomputed(tmp_path, run_train, tokenizer_dir, prior_json, monkeypatch):
    import hf_vqgan.training.tokenize

    cache = tmp_path / "tokens"
    first = tmp_path / "first"
    assert run_train(_argv(tokenizer_dir, prior_json, first, cache, 1, "--class_column", "label")).returncode == 0
    (entry,) = _cache_entries(cache)
    written = {p.name: p.stat().st_mtime_ns for p in entry.rglob("*")}

    def no_tokenising(*args, **kwargs):
        raise AssertionError("the dataset was tokenised again")

    monkeypatch.setattr(hf_vqgan.training.tokenize, "tokenize_split", no_tokenising)
    # Same tokenizer (here read from the first run's pipeline folder), same data and settings: the cache is reused.
    second = run_train(_argv(first, prior_json, tmp_path / "second", cache, 1, "--class_column", "label"))
    assert second.returncode == 0
    assert _cache_entries(cache) == [entry]
    assert {p.name: p.stat().st_mtime_ns for p in entry.rglob("*")} == written

    # Different settings need different codes: a new entry, tokenised again (which fails loudly here).
    with pytest.raises(AssertionError, match="tokenised again"):
        run_train(
            _argv(first, prior_json, tmp_path / "third", cache, 1, "--class_column", "label", "--tokenize_flips")
        )


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path, run_train, tokenizer_dir,
                                                                            prior_json):  # fmt: skip
    cache = tmp_path / "tokens"
    # 24 examples in batches of 8, class dropout and pkeep on: the resumed run must replay their randomness too.
    common = ("--class_column", "label", "--class_dropout_prob", 0.3, "--pkeep", 0.7, "--checkpointing_steps", 2,
              "--max_train_samples", 24)  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_train(_argv(tokenizer_dir, prior_json, straight, cache, 5, *common)).returncode == 0
    assert run_train(_argv(tokenizer_dir, prior_json, resumed, cache, 2, *common)).returncode == 0
    run = run_train(_argv(tokenizer_dir, prior_json, resumed, cache, 5, *common, "--resume_from_checkpoint", "latest"))
    assert run.returncode == 0
    assert sorted(run.train_logs()) == [3, 4, 5]
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 5
    a = load_file(straight / "transformer" / "model.safetensors")
    b = load_file(resumed / "transformer" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final_metrics = json.loads((straight / "metrics.json").read_text())
    assert json.loads((resumed / "metrics.json").read_text()) == final_metrics

    # The same command again (a re-queued job): nothing left to train; the outputs keep their validation figures.
    again = run_train(
        _argv(tokenizer_dir, prior_json, resumed, cache, 5, *common, "--resume_from_checkpoint", "latest")
    )
    assert again.returncode == 0 and again.train_logs() == {}
    assert json.loads((resumed / "metrics.json").read_text()) == final_metrics


@pytest.mark.slow
def test_unconditional_through_accelerate_launch(tmp_path, accelerate_launch, tokenizer_dir, prior_json):
    out = tmp_path / "pipeline"
    accelerate_launch(_argv(tokenizer_dir, prior_json, out, tmp_path / "tokens", 2, "--checkpointing_steps", 2))
    assert PIPELINE_FILES <= _files(out)
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    config = json.loads((out / "transformer" / "config.json").read_text())
    assert config["num_classes"] == 0 and config["codebook_size"] == 16
    pipe = load_pipeline(out)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 16, 16)
