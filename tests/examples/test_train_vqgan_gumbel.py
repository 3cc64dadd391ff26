"""examples/train.py vqgan with a Gumbel quantizer (issue 17): the temperature schedule set every step, continued
on resume, the KL term logged, the flags checked."""

from __future__ import annotations

import json

import pytest

from hf_vqgan import VQGANModel
from hf_vqgan.models.gumbel import annealed_temperature

FAST = ["--train_batch_size", "8", "--eval_batch_size", "32", "--max_train_samples", "24", "--perceptual_weight", "0",
        "--disc_weight", "0", "--report_to", "none", "--logging_steps", "1", "--validation_steps", "100"]  # fmt: skip
SCHEDULE = ["--gumbel_temperature", "2.0", "--gumbel_temperature_start", "1.0", "--gumbel_temperature_min", "0.5",
            "--gumbel_temperature_warmup_steps", "2", "--gumbel_temperature_decay_steps", "5",
            "--gumbel_kl_weight", "0.01"]  # fmt: skip


@pytest.fixture
def gumbel_json(tmp_path, tiny_train_config) -> str:
    path = tmp_path / "gumbel.json"
    path.write_text(json.dumps({**tiny_train_config, "quantizer_type": "gumbel"}))
    return str(path)


def _argv(config: str, output_dir, steps: int, *extra) -> list[str]:
    return ["vqgan", "--model_config", config, "--output_dir", str(output_dir), "--max_train_steps", str(steps),
            *FAST, *extra]  # fmt: skip


def test_temperature_follows_the_schedule_across_a_resume_and_the_kl_term_is_logged(tmp_path, run_train, gumbel_json):
    resumed = tmp_path / "resumed"
    run = run_train(_argv(gumbel_json, resumed, 3, *SCHEDULE, "--checkpointing_steps", "3"))
    second = run_train(_argv(gumbel_json, resumed, 6, *SCHEDULE, "--resume_from_checkpoint", "latest"))
    assert run.returncode == second.returncode == 0
    logs = {**run.train_logs(), **second.train_logs()}
    assert sorted(logs) == [1, 2, 3, 4, 5, 6]
    for step, values in logs.items():  # the log of step s describes the update made at global step s - 1
        expected = annealed_temperature(step - 1, 1.0, 2.0, 0.5, warmup_steps=2, decay_steps=5)
        assert values["gumbel_temperature"] == pytest.approx(expected, rel=1e-12), step
        assert values["kl"] > 0 and values["quantizer"] == pytest.approx(0.01 * values["kl"], rel=1e-5)
    assert logs[6]["gumbel_temperature"] == 0.5 and logs[2]["gumbel_temperature"] == 1.5
    model = VQGANModel.from_pretrained(resumed)
    assert model.config.quantizer_type == "gumbel" and model.config.gumbel_kl_weight == 0.01


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--gumbel_temperature_min", "0.5"], "need --gumbel_temperature"),
        (["--gumbel_temperature", "0"], "--gumbel_temperature must be > 0, got 0.0"),
        (["--gumbel_kl_weight", "-1"], "--gumbel_kl_weight must be >= 0"),
    ],
)
def test_bad_gumbel_flags_exit_2_naming_them(tmp_path, run_train, gumbel_json, capsys, flags, named):
    assert run_train(_argv(gumbel_json, tmp_path / "o", 1, *flags)).returncode == 2
    assert named in capsys.readouterr().err


def test_gumbel_flags_on_a_vq_model_are_refused(tmp_path, run_train, tiny_vqgan_json, capsys):
    assert run_train(_argv(tiny_vqgan_json, tmp_path / "o", 1, "--gumbel_temperature", "1.0")).returncode == 2
    assert "need a model with quantizer_type 'gumbel', got 'vq'" in capsys.readouterr().err


def test_quantizer_type_gumbel_turns_a_preset_into_a_gumbel_tokenizer_of_its_codebook(tmp_path, run_train):
    """`--preset digits-tiny --quantizer_type gumbel` keeps the preset's network, codebook size and code dimension
    and drops the VQ-only options (l2-normalised codes, restarts); the KL term is logged."""
    from hf_vqgan.training.presets import vqgan_preset

    out = tmp_path / "gumbel"
    argv = ["vqgan", "--preset", "digits-tiny", "--quantizer_type", "gumbel", "--output_dir", str(out),
            "--max_train_steps", "2", *FAST, "--gumbel_temperature", "1.0"]  # fmt: skip
    run = run_train(argv)
    assert run.returncode == 0
    config = VQGANModel.from_pretrained(out).config
    preset = vqgan_preset("digits-tiny")
    assert config.quantizer_type == "gumbel" and not config.l2_normalize_codes and config.dead_code_steps == 0
    assert (config.codebook_size, config.code_dim) == (preset["codebook_size"], preset["code_dim"])
    assert all(values["kl"] > 0 for values in run.train_logs().values())
