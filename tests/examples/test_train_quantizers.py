"""examples/train.py with FSQ and LFQ tokenizers (issue 18): `--quantizer_type` and its options, the LFQ entropy
term in the logs, resume, refusals, and the prior trained on an FSQ tokenizer's tokens."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from hf_vqgan import VQGANModel, VQGANTransformerPipeline
from testing_utils import grid_vqgan_config

# Tiny data and batches, no LPIPS (its weights cannot download here), a small discriminator, a log line per step.
FAST_ARGS = ["--train_batch_size", "8", "--eval_batch_size", "32", "--max_train_samples", "24", "--perceptual_weight",
             "0", "--disc_base_channels", "8", "--disc_num_layers", "2", "--disc_start", "1", "--report_to", "none",
             "--logging_steps", "1"]  # fmt: skip
QUANTIZER_ARGS = {"fsq": ["--quantizer_type", "fsq", "--fsq_levels", "4", "4"],
                  "lfq": ["--quantizer_type", "lfq", "--lfq_entropy_weight", "0.2"]}  # fmt: skip


def _argv(model_config: str, output_dir, steps: int, *extra) -> list:
    return ["vqgan", "--model_config", model_config, "--output_dir", output_dir, "--max_train_steps", steps,
            *FAST_ARGS, *extra]  # fmt: skip


@pytest.mark.parametrize("quantizer_type", ["fsq", "lfq"])
def test_training_and_resume_with_a_fixed_grid_quantizer(tmp_path, run_train, tiny_vqgan_json, quantizer_type):
    """The VQ `--model_config` switched to FSQ/LFQ by flags trains, logs LFQ's entropy term at every step, saves the
    quantizer in its config, and a resumed run (usage statistics included) ends where an uninterrupted one does."""
    common = (*QUANTIZER_ARGS[quantizer_type], "--checkpointing_steps", 2)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run = run_train(_argv(tiny_vqgan_json, straight, 4, *common))
    assert run.returncode == 0
    logs = run.train_logs()
    assert sorted(logs) == [1, 2, 3, 4]
    if quantizer_type == "lfq":  # per-sample minus codebook entropy: at most 0, at least -log(16)
        assert all(-math.log(16) - 1e-4 <= values["entropy_loss"] <= 1e-4 for values in logs.values())
    else:
        assert not any("entropy_loss" in values for values in logs.values())
    config = json.loads((straight / "config.json").read_text())
    expected = {"fsq": dict(fsq_levels=[4, 4], code_dim=2, codebook_size=16),
                "lfq": dict(lfq_entropy_weight=0.2, code_dim=4, codebook_size=16)}[quantizer_type]  # fmt: skip
    assert config["quantizer_type"] == quantizer_type and {k: config[k] for k in expected} == expected
    assert config["l2_normalize_codes"] is False and config["dead_code_steps"] == 0  # the VQ settings were dropped
    card = (straight / "README.md").read_text()
    assert {"fsq": "into a fixed grid of 16 codes (finite scalar quantization, FSQ, levels [4, 4]; nothing learned)",
            "lfq": "into a fixed grid of 16 codes (lookup-free quantization, LFQ, 4 bits; nothing learned)"}[
        quantizer_type] in card.replace("\n", " ")  # fmt: skip
    assert {"fsq": "no quantizer loss (FSQ)", "lfq": "LFQ commitment (weight 0.25) + entropy penalty (weight 0.2)"}[
        quantizer_type] in card  # fmt: skip
    metrics = json.loads((straight / "metrics.json").read_text())
    assert 0.0 < metrics["train_quantizer_usage"] <= 1.0 and 0.0 < metrics["codebook_usage"] <= 1.0

    assert run_train(_argv(tiny_vqgan_json, resumed, 2, *common)).returncode == 0
    second = run_train(_argv(tiny_vqgan_json, resumed, 4, *common, "--resume_from_checkpoint", "latest"))
    assert second.returncode == 0 and sorted(second.train_logs()) == [3, 4]
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fsq_levels", "4", "4"], "--fsq_levels do not apply to quantizer_type 'vq'"),
        (["--quantizer_type", "fsq"], "quantizer_type='fsq' needs `fsq_levels`"),
        (["--quantizer_type", "fsq", "--fsq_levels", "4", "4", "--codebook_size", "16"],
         "--codebook_size do not apply to quantizer_type 'fsq' (FSQ's codebook size is the product of --fsq_levels)"),
        (["--quantizer_type", "fsq", "--fsq_levels", "4", "4", "--lfq_entropy_weight", "0.1"],
         "--lfq_entropy_weight do not apply to quantizer_type 'fsq'"),
        (["--quantizer_type", "lfq", "--codebook_size", "20"], "LFQ needs `codebook_size` to be a power of two"),
        (["--quantizer_type", "fsq", "--fsq_levels", "4", "2"], "`fsq_levels` must be a non-empty list of ints >= 3"),
    ],
)  # fmt: skip
def test_quantizer_flags_that_do_not_fit_exit_2(tmp_path, run_train, capsys, tiny_vqgan_json, extra, message):
    assert run_train(_argv(tiny_vqgan_json, tmp_path / "out", 1, *extra)).returncode == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err.replace("\n", " ") and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_pretrained_tokenizer_keeps_its_quantizer(tmp_path, run_train, capsys):
    """Flags that would change a trained tokenizer's quantizer are refused at start-up; LFQ's loss weights are
    training settings and apply to a pretrained LFQ tokenizer."""
    torch.manual_seed(0)
    VQGANModel(**grid_vqgan_config("lfq")).save_pretrained(tmp_path / "lfq")
    common = ["vqgan", "--pretrained_model_name_or_path", tmp_path / "lfq", "--max_train_steps", 1, *FAST_ARGS]
    for extra, message in [
        (["--quantizer_type", "fsq"], "--quantizer_type 'fsq' disagrees with the pretrained tokenizer's "
                                      "quantizer_type='lfq': a trained tokenizer keeps its quantizer"),
        (["--codebook_size", "32"], "--codebook_size 32 disagrees with the pretrained tokenizer's codebook_size=16"),
    ]:  # fmt: skip
        assert run_train([*common, "--output_dir", tmp_path / "refused", *extra]).returncode == 2
        err = capsys.readouterr().err
        assert f"error: {message}" in err and "Traceback" not in err
    out = tmp_path / "tuned"
    run = run_train([*common, "--output_dir", out, "--quantizer_type", "lfq", "--lfq_entropy_weight", "0.5"])
    assert run.returncode == 0
    assert json.loads((out / "config.json").read_text())["lfq_entropy_weight"] == 0.5


def test_the_prior_trains_on_an_fsq_tokenizer_and_the_pipeline_samples(tmp_path, run_train):
    """Everything downstream reads `codebook_size`: the prior's vocabulary is FSQ's grid, and sampled tokens
    decode through the grid lookup."""
    torch.manual_seed(0)
    VQGANModel(**grid_vqgan_config("fsq", fsq_levels=[5, 3])).save_pretrained(tmp_path / "fsq")  # 15 codes
    (tmp_path / "prior.json").write_text(json.dumps(dict(n_layer=1, n_embd=32, n_head=2)))
    out = tmp_path / "pipeline"
    argv = ["transformer", "--vqgan_model_name_or_path", tmp_path / "fsq", "--prior_config", tmp_path / "prior.json",
            "--output_dir", out, "--tokenized_cache_dir", tmp_path / "tokens", "--max_train_steps", 2,
            "--class_column", "label", "--train_batch_size", 8, "--eval_batch_size", 64, "--max_train_samples", 32,
            "--max_eval_samples", 16, "--num_validation_samples", 1, "--report_to", "none"]  # fmt: skip
    assert run_train(argv).returncode == 0
    pipe = VQGANTransformerPipeline.from_pretrained(out)
    assert pipe.vqgan.config.quantizer_type == "fsq" and pipe.transformer.config.codebook_size == 15
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(class_labels=[1, 2], generator=generator, output_type="pt").images
    assert images.shape == (2, 1, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0


@pytest.mark.slow
def test_lfq_trains_in_two_processes(tmp_path, accelerate_launch, tiny_vqgan_json):
    """Real gloo processes under DDP: LFQ's codebook entropy all-reduces inside every training forward pass (a
    collective each process must reach), and validation on the main process alone must not."""
    out = tmp_path / "lfq"
    accelerate_launch(_argv(tiny_vqgan_json, out, 3, "--quantizer_type", "lfq", "--train_batch_size", 4,
                            "--checkpointing_steps", 2, "--validation_steps", 2), num_processes=2)  # fmt: skip
    assert json.loads((out / "config.json").read_text())["quantizer_type"] == "lfq"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3 and 0.0 < metrics["codebook_usage"] <= 1.0
