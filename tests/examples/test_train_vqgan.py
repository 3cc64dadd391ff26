"""examples/train.py vqgan: end-to-end runs of stage 1 on tiny models (issue 3).

In-process `main(argv)` runs check behaviour (warm-up, resume, losses, errors, uploads); `accelerate launch` runs
check that the script works as users start it, on one process and on two.
"""

from __future__ import annotations

import json
import math
import urllib.error

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hf_vqgan.training.data
from hf_vqgan import VQGANModel

# Tiny data, batches and discriminator; no tracker; a log line per step.
VQGAN_FAST_ARGS = ["--train_batch_size", "8", "--eval_batch_size", "32", "--max_train_samples", "64",
                   "--disc_base_channels", "8", "--disc_num_layers", "2", "--report_to", "none", "--logging_steps", "1"]  # fmt: skip
OUTPUT_FILES = {
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "metrics.json",
    "training_args.json",
    "README.md",
    "reconstructions.png",
    "training_curves.png",
}


def write_json(path, payload: dict) -> str:
    path.write_text(json.dumps(payload))
    return str(path)


def _vqgan_argv(model_config: str, output_dir, steps: int, *extra) -> list[str]:
    return ["vqgan", "--model_config", model_config, "--output_dir", output_dir, "--max_train_steps", steps,
            *VQGAN_FAST_ARGS, *extra]  # fmt: skip


def _checkpoints(output_dir) -> list[str]:
    return sorted(p.name for p in (output_dir / "checkpoints").iterdir())


def _check_tokenizer_folder(output_dir, steps: int, config: dict) -> dict:
    """The final folder: model + config, metrics, arguments, card with the metrics and the grid; returns metrics."""
    assert OUTPUT_FILES <= {p.name for p in output_dir.iterdir()}
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["step"] == steps
    assert math.isfinite(metrics["psnr"]) and 0.0 <= metrics["codebook_usage"] <= 1.0
    assert metrics["skipped_nonfinite_steps"] == 0 and metrics["skipped_images"] == 0
    arguments = json.loads((output_dir / "training_args.json").read_text())
    assert arguments["stage"] == "vqgan" and arguments["max_train_steps"] == steps

    card = (output_dir / "README.md").read_text()
    assert "library_name: hf_vqgan" in card
    assert f"| psnr | {metrics['psnr']:.4g} |" in card
    assert "![reconstructions](reconstructions.png)" in card
    Image.open(output_dir / "reconstructions.png").verify()

    model = VQGANModel.from_pretrained(output_dir)
    loaded = {k: list(v) if isinstance(v, tuple | list) else v for k, v in model.config.items() if k in config}
    assert loaded == config
    size = model.config.sample_size
    with torch.no_grad():
        indices = model.tokenize(torch.rand(1, model.config.in_channels, size, size) * 2 - 1)
    assert indices.shape == (1, size // 2, size // 2)
    return metrics


@pytest.mark.slow
def test_accelerate_launch_on_the_digits(tmp_path, accelerate_launch, tiny_vqgan_json, tiny_train_config):
    out = tmp_path / "vqgan"
    accelerate_launch(_vqgan_argv(tiny_vqgan_json, out, 4, "--perceptual_weight", "0", "--disc_start", "2",
                                  "--checkpointing_steps", "2", "--validation_steps", "4"))  # fmt: skip
    metrics = _check_tokenizer_folder(out, 4, tiny_train_config)
    assert "train_quantizer_usage" in metrics
    assert _checkpoints(out) == ["checkpoint-000002", "checkpoint-000004", "latest"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "checkpoint-000004"
    # the generator and the discriminator, each with its optimizer and scheduler
    assert {"model.safetensors", "model_1.safetensors", "optimizer_1.bin", "scheduler_1.bin"} <= {
        p.name for p in (out / "checkpoints" / "checkpoint-000004").iterdir()
    }
    card = (out / "README.md").read_text()
    assert "PatchGAN hinge" in card and "from step 2" in card and "digits" in card


def test_on_a_tiny_image_folder(tmp_path, run_train, tiny_image_folder, tiny_train_config):
    """RGB, grayscale and RGBA files of several sizes, read as 3 channels at --resolution 16."""
    config = {**tiny_train_config, "in_channels": 3, "out_channels": 3}
    out = tmp_path / "vqgan"
    run = run_train(_vqgan_argv(write_json(tmp_path / "rgb.json", config), out, 2, "--train_data_dir", tiny_image_folder,
                                "--resolution", 16, "--validation_split", 0.25, "--train_batch_size", 4,
                                "--perceptual_weight", 0, "--cache_dir", tmp_path / "hf_cache"))  # fmt: skip
    assert run.returncode == 0
    _check_tokenizer_folder(out, 2, config)
    assert "A local image folder (`images`)." in (out / "README.md").read_text()
    assert sorted(run.train_logs()) == [1, 2]


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path, accelerate_launch, tiny_image_folder, tiny_train_config):
    out = tmp_path / "vqgan"
    config = write_json(tmp_path / "rgb.json", {**tiny_train_config, "in_channels": 3, "out_channels": 3})
    accelerate_launch(_vqgan_argv(config, out, 3, "--train_data_dir", tiny_image_folder, "--resolution", 16,
                                  "--validation_split", 0.25, "--train_batch_size", 2, "--perceptual_weight", 0,
                                  "--checkpointing_steps", 2, "--cache_dir", tmp_path / "hf_cache"),
                      num_processes=2)  # fmt: skip
    _check_tokenizer_folder(out, 3, {"in_channels": 3})
    assert _checkpoints(out) == ["checkpoint-000002", "checkpoint-000003", "latest"]
    saved = {p.name for p in (out / "checkpoints" / "checkpoint-000003").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= saved  # one RNG state per process


def test_gan_terms_are_off_until_disc_start(tmp_path, run_train, tiny_vqgan_json):
    out = tmp_path / "vqgan"
    run = run_train(_vqgan_argv(tiny_vqgan_json, out, 4, "--perceptual_weight", 0, "--disc_start", 2,
                                "--checkpointing_steps", 1, "--validation_steps", 4))  # fmt: skip
    assert run.returncode == 0
    logs = run.train_logs()
    assert sorted(logs) == [1, 2, 3, 4]
    # The log of step s describes the update made at global step s - 1: the first two precede disc_start = 2.
    for step in (1, 2):
        assert logs[step]["gan"] == 0.0 and logs[step]["adaptive_weight"] == 0.0 and logs[step]["disc_factor"] == 0.0
        assert not any(key.startswith("disc_") and key != "disc_factor" for key in logs[step])
    for step in (3, 4):
        assert logs[step]["disc_factor"] == 1.0 and logs[step]["adaptive_weight"] > 0.0
        assert math.isfinite(logs[step]["disc_loss"]) and logs[step]["gan"] != 0.0
    for step in (1, 2, 3, 4):
        assert logs[step]["total"] > 0 and logs[step]["pixel"] > 0

    # The discriminator (model_1) is untouched before disc_start and trained after.
    def discriminator(step):
        return load_file(out / "checkpoints" / f"checkpoint-{step:06d}" / "model_1.safetensors")

    first, second, third = discriminator(1), discriminator(2), discriminator(3)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(second[k], third[k]) for k in second)


@pytest.mark.parametrize("generator_backward", ["single", "plain"])
def test_discriminator_update_accumulates_every_micro_batch(generator_backward, tmp_path, run_train, tiny_vqgan_json):
    # One update of 2 accumulated micro-batches of 4 and one of a batch of 8 (the same 8 images) must move the
    # discriminator alike: the generator's GAN term must leave no gradients in it, and the first micro-batch's
    # discriminator gradients must not be dropped before the update.
    common = ("--perceptual_weight", 0, "--disc_start", 0, "--disc_norm", "none", "--checkpointing_steps", 1,
              "--validation_steps", 1, "--generator_backward", generator_backward)  # fmt: skip
    runs = {
        "accumulated": ("--train_batch_size", 4, "--gradient_accumulation_steps", 2),
        "one_batch": ("--train_batch_size", 8),
    }
    weights = {}
    for name, batch in runs.items():
        out = tmp_path / name
        assert run_train([*_vqgan_argv(tiny_vqgan_json, out, 1, *common), *batch]).returncode == 0
        weights[name] = load_file(out / "checkpoints" / "checkpoint-000001" / "model_1.safetensors")
    for key, value in weights["one_batch"].items():
        torch.testing.assert_close(weights["accumulated"][key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path, run_train, tiny_vqgan_json):
    # 24 examples in batches of 8: three batches an epoch, so both runs cross epoch boundaries.
    common = ("--perceptual_weight", 0, "--disc_start", 1, "--checkpointing_steps", 2, "--max_train_samples", 24)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_train(_vqgan_argv(tiny_vqgan_json, straight, 6, *common)).returncode == 0

    first = run_train(_vqgan_argv(tiny_vqgan_json, resumed, 4, *common))
    assert sorted(first.train_logs()) == [1, 2, 3, 4]
    second = run_train(_vqgan_argv(tiny_vqgan_json, resumed, 6, *common, "--resume_from_checkpoint", "latest"))
    assert second.returncode == 0
    assert sorted(second.train_logs()) == [5, 6]  # two more steps, logged as steps 5 and 6
    assert json.loads((resumed / "metrics.json").read_text())["step"] == 6
    assert _checkpoints(resumed) == ["checkpoint-000002", "checkpoint-000004", "checkpoint-000006", "latest"]

    # Same data order, RNG, optimizer and scheduler states: the resumed weights are the uninterrupted ones.
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    final_metrics = json.loads((straight / "metrics.json").read_text())
    assert json.loads((resumed / "metrics.json").read_text()) == final_metrics

    # The same command again (a re-queued job): nothing left to train; the outputs keep their validation figures.
    again = run_train(_vqgan_argv(tiny_vqgan_json, resumed, 6, *common, "--resume_from_checkpoint", "latest"))
    assert again.returncode == 0 and again.train_logs() == {}
    assert json.loads((resumed / "metrics.json").read_text()) == final_metrics

    # An explicit checkpoint folder works too, into a new output folder.
    branch = tmp_path / "branch"
    third = run_train(_vqgan_argv(tiny_vqgan_json, branch, 3, *common, "--resume_from_checkpoint",
                                  resumed / "checkpoints" / "checkpoint-000002"))  # fmt: skip
    assert third.returncode == 0 and sorted(third.train_logs()) == [3]


def test_vqvae_baseline_without_lpips_or_gan(tmp_path, run_train, tiny_vqgan_json, tiny_train_config):
    out = tmp_path / "vqvae"
    run = run_train(_vqgan_argv(tiny_vqgan_json, out, 2, "--perceptual_weight", 0, "--disc_weight", 0,
                                "--pixel_loss", "l2"))  # fmt: skip
    assert run.returncode == 0
    _check_tokenizer_folder(out, 2, tiny_train_config)
    for values in run.train_logs().values():
        assert values["gan"] == 0.0 and values["perceptual"] == 0.0 and "disc_loss" not in values
        assert values["reconstruction"] == pytest.approx(values["pixel"])
    # no discriminator at all: one model, one optimizer in the checkpoint
    saved = {p.name for p in (out / "checkpoints" / "checkpoint-000002").iterdir()}
    assert "model.safetensors" in saved and "model_1.safetensors" not in saved and "optimizer_1.bin" not in saved
    card = (out / "README.md").read_text()
    assert "l2 pixel" in card and "PatchGAN" not in card and "LPIPS" not in card


def test_lpips_with_local_vgg_weights(tmp_path, run_train, tiny_vqgan_json, random_vgg16_file):
    out = tmp_path / "vqgan"
    run = run_train(_vqgan_argv(tiny_vqgan_json, out, 2, "--lpips_vgg_weights", random_vgg16_file, "--disc_weight", 0,
                                "--max_eval_samples", 16))  # fmt: skip
    assert run.returncode == 0
    for values in run.train_logs().values():
        assert values["perceptual"] > 0.0
        assert values["reconstruction"] == pytest.approx(values["pixel"] + values["perceptual"], rel=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["lpips"]) and metrics["lpips"] > 0
    assert "LPIPS (weight 1.0)" in (out / "README.md").read_text()


def test_default_lpips_without_weights_fails_at_start_up(tmp_path, run_train, tiny_vqgan_json,
                                                        monkeypatch, capsys):  # fmt: skip
    """No VGG16 file, an empty torch hub cache and no network: stop before any data or training, saying what to do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)

    def load_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the LPIPS backbone was checked")

    monkeypatch.setattr(hf_vqgan.training.data, "load_image_dataset", load_data)
    out = tmp_path / "vqgan"
    run = run_train(_vqgan_argv(tiny_vqgan_json, out, 2))
    assert run.returncode == 1
    error = capsys.readouterr().err
    assert "--lpips_vgg_weights" in error and "--perceptual_weight 0" in error
    assert "Traceback" not in error
    assert run.train_logs() == {} and not (out / "checkpoints").exists()


def test_digits_tiny_preset_with_few_validation_samples(tmp_path, run_train):
    out = tmp_path / "vqgan"
    run = run_train(["vqgan", "--preset", "digits-tiny", "--output_dir", out, "--max_train_steps", 1,
                     *VQGAN_FAST_ARGS, "--perceptual_weight", 0, "--disc_weight", 0, "--max_eval_samples", 4])  # fmt: skip
    assert run.returncode == 0
    config = json.loads((out / "config.json").read_text())
    assert config["sample_size"] == 32 and config["in_channels"] == 1 and config["codebook_size"] == 128
    # 4 validation images: the grid holds those 4 originals over their 4 reconstructions
    assert json.loads((out / "metrics.json").read_text())["step"] == 1


@pytest.mark.parametrize(
    "argv, named",
    [
        (
            ["vqgan", "--dataset_name", "some/dataset", "--train_data_dir", "/some/folder"],
            ["some/dataset", "/some/folder"],
        ),
        (["vqgan", "--push_to_hub"], ["--hub_model_id"]),
        (["vqgan", "--preset", "digits-tiny", "--model_config", "my_config.json"], ["digits-tiny", "my_config.json"]),
        (["vqgan", "--preset", "no-such-preset"], ["no-such-preset", "digits-tiny"]),
        (["transformer", "--vqgan_model_name_or_path", "x", "--preset", "no-such-prior"], ["no-such-prior", "small"]),
        (["transformer", "--vqgan_model_name_or_path", "x", "--pkeep", "1.5"], ["1.5"]),
    ],
)
def test_contradictory_arguments_exit_2_naming_the_value(train_script, capsys, argv, named):
    assert train_script.main([*argv, "--output_dir", "/nonexistent/never-created", "--report_to", "none"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error
    for value in named:
        assert value in error


def test_argparse_rejects_unknown_choices(train_script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["vqgan", "--pixel_loss", "l3"])
    assert exit_info.value.code == 2
    assert "l3" in capsys.readouterr().err


# ------------------------------------------------------------------ start-up refusals found by trying it as a user
def test_image_channels_give_a_preset_rgb_and_a_mismatched_pretrained_tokenizer_is_refused(
    tmp_path, run_train, capsys, tiny_image_folder, tiny_vqgan_json
):
    """`--image_channels 3` with a one-channel config trains an RGB tokenizer (it used to crash at the first step);
    the same flag on a pretrained one-channel tokenizer is refused before any step."""
    common = ["--train_data_dir", tiny_image_folder, "--resolution", 16, "--validation_split", 0.25,
              "--train_batch_size", 4, "--perceptual_weight", 0, "--cache_dir", tmp_path / "hf_cache"]  # fmt: skip
    rgb = tmp_path / "rgb"
    assert run_train(_vqgan_argv(tiny_vqgan_json, rgb, 1, "--image_channels", 3, *common)).returncode == 0
    assert VQGANModel.from_pretrained(rgb).config.in_channels == 3
    gray = tmp_path / "gray"
    assert run_train(_vqgan_argv(tiny_vqgan_json, gray, 1, *common)).returncode == 0
    capsys.readouterr()
    argv = ["vqgan", "--pretrained_model_name_or_path", gray, "--output_dir", tmp_path / "again",
            "--max_train_steps", 1, "--image_channels", 3, *VQGAN_FAST_ARGS, *common]  # fmt: skip
    assert run_train(argv).returncode == 2
    err = capsys.readouterr().err
    assert f"error: --image_channels 3 does not fit '{gray}', which reads 1-channel images" in err
    assert "Traceback" not in err and not (tmp_path / "again" / "checkpoints").exists()


def test_a_discriminator_too_deep_for_the_resolution_is_refused_at_start_up(
    tmp_path, run_train, capsys, tiny_vqgan_json
):
    argv = _vqgan_argv(tiny_vqgan_json, tmp_path / "out", 2, "--perceptual_weight", 0)
    argv[argv.index("--disc_num_layers") + 1] = "3"  # needs 24 pixels a side; the images are 16
    assert run_train(argv).returncode == 2
    err = capsys.readouterr().err
    assert "error: --resolution 16 gives 16x16 inputs, too small for a 3-layer discriminator (at least 24" in err
    assert "--disc_weight 0" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoints").exists()
    # A discriminator that never runs (the GAN terms start after the last step) is no reason to refuse.
    assert run_train([*argv, "--disc_start", 5]).returncode == 0


def test_a_pretrained_path_that_is_not_a_tokenizer_is_one_error_line(tmp_path, run_train, capsys):
    (tmp_path / "not_a_model").mkdir()
    argv = ["vqgan", "--pretrained_model_name_or_path", tmp_path / "not_a_model", "--output_dir", tmp_path / "out",
            "--report_to", "none"]  # fmt: skip
    assert run_train(argv).returncode == 1
    err = capsys.readouterr().err
    assert "error: " in err and "not_a_model" in err and "config.json" in err and "Traceback" not in err
