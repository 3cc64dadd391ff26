"""The `hf-vqgan` command line on tiny saved pipelines: `sample` and `reconstruct` from folders and from Hub ids (an
offline cache), `convert-taming`, and the error exit."""

from __future__ import annotations

import argparse
import re
import shutil
import types
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from fixtures import taming_fixtures
from hf_vqgan import (
    VQGANImageProcessor,
    VQGANModel,
)
from hf_vqgan.cli import build_parser, main
from hf_vqgan.image_utils import make_image_grid
from testing_utils import (
    error_prior_config,
    error_vqgan_config,
    load_pipeline,
    sampling_pipeline,
    tiny_pipeline,
    tiny_prior,
    tiny_vqgan,
)

SIZE = 16  # pixels; the tokenizer's factor is 2, so the prior's grid is 8x8


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Folders: a class-conditional RGB pipeline, an unconditional grayscale one, and a bare grayscale tokenizer."""
    root = tmp_path_factory.mktemp("cli")
    sampling_pipeline(num_classes=3, channels=3).save_pretrained(root / "class")
    uncond = sampling_pipeline(num_classes=0, channels=1, seed=1)
    uncond.save_pretrained(root / "uncond")
    uncond.vqgan.save_pretrained(root / "vqgan")
    return {name: root / name for name in ("class", "uncond", "vqgan")}


def read(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image).copy()


def input_image(path: Path, size: int = 20, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).convert(mode).save(path)
    return path


# ------------------------------------------------------------------------------------------------------ sample
@pytest.mark.parametrize(
    "options, call",
    [
        ([], dict()),
        (
            ["--temperature", "0.8", "--top-k", "5", "--top-p", "0.9", "--guidance-scale", "2.0"],
            dict(temperature=0.8, top_k=5, top_p=0.9, guidance_scale=2.0),
        ),
    ],
)
def test_sample_writes_the_pipelines_samples_as_a_grid(saved, tmp_path, options, call):
    output = tmp_path / "out" / "grid.png"
    argv = ["sample", "--model", str(saved["class"]), "--class-label", "2", "--num-images", "4", "--seed", "3",
            "--quiet", "--device", "cpu", "--output", str(output), *options]  # fmt: skip
    assert main(argv) == 0
    images = load_pipeline(saved["class"])(
        class_labels=2, num_images_per_prompt=4, generator=torch.Generator().manual_seed(3), output_type="pt", **call
    ).images
    expected = make_image_grid(images * 2 - 1, nrow=2)  # 4 images: a 2x2 grid
    np.testing.assert_array_equal(read(output), np.asarray(expected))


def test_sample_seed_and_unconditional_batch(saved, tmp_path):
    def run(seed: int, name: str, *extra: str) -> np.ndarray:
        argv = ["sample", "--model", str(saved["uncond"]), "--num-images", "3", "--seed", str(seed), "--quiet",
                "--output", str(tmp_path / name), *extra]  # fmt: skip
        assert main(argv) == 0
        return read(tmp_path / name)

    first, again, other = run(0, "a.png"), run(0, "b.png"), run(1, "c.png")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    images = load_pipeline(saved["uncond"])(
        batch_size=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    np.testing.assert_array_equal(first, np.asarray(make_image_grid(images * 2 - 1, nrow=2)))
    one_row = run(0, "row.png", "--nrow", "3")
    assert one_row.shape == (SIZE + 4, 3 * (SIZE + 2) + 2)  # grayscale, padding 2 around and between


@pytest.mark.parametrize(
    "model, options, message",
    [
        ("class", ["--class-label", "3"], r"[0, 3)"),  # 3 is the prior's internal null class
        ("class", [], "pass `class_labels`"),
        ("class", ["--class-label", "0", "--top-k", "0"], "top_k"),
        ("class", ["--class-label", "0", "--temperature", "0"], "temperature"),
        ("class", ["--class-label", "0", "--top-p", "1.5"], "top_p"),
        ("uncond", ["--class-label", "0"], "unconditional"),
        ("uncond", ["--guidance-scale", "2"], "guidance_scale"),
        ("uncond", ["--condition-image", "missing.png"], "No image file"),
    ],
)
def test_sample_errors_exit_with_a_message(saved, tmp_path, capsys, model, options, message):
    output = tmp_path / "grid.png"
    argv = ["sample", "--model", str(saved[model]), "--quiet", "--output", str(output), *options]
    assert main(argv) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the loaders' progress bars
    assert error.startswith("hf-vqgan sample: error:") and message in error
    assert not output.exists()


def test_sample_prints_where_it_wrote(saved, tmp_path, capsys):
    output = tmp_path / "grid.png"
    argv = ["sample", "--model", str(saved["class"]), "--class-label", "1", "--num-images", "4", "--quiet",
            "--output", str(output)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == f"Wrote 4 images ({2 * SIZE + 6}x{2 * SIZE + 6} pixels) to {output}"
    assert "Loading" not in printed.err and "it/s" not in printed.err  # --quiet: no loading or sampling bars
    import diffusers.utils.logging

    assert diffusers.utils.logging.is_progress_bar_enabled()  # switched off for the load only


def test_sample_several_class_labels_give_one_row_each(saved, tmp_path):
    output = tmp_path / "grid.png"
    argv = ["sample", "--model", str(saved["class"]), "--class-labels", "2", "0", "--num-images", "3", "--seed", "5",
            "--quiet", "--output", str(output)]  # fmt: skip
    assert main(argv) == 0
    images = load_pipeline(saved["class"])(
        class_labels=[2, 0], num_images_per_prompt=3, generator=torch.Generator().manual_seed(5), output_type="pt"
    ).images
    np.testing.assert_array_equal(read(output), np.asarray(make_image_grid(images * 2 - 1, nrow=3)))


@pytest.mark.parametrize(
    "given, passed", [(["circle"], ["circle"]), (["circle", "3"], ["circle", 3]), (["-1"], [-1]), (["7"], [7])]
)
def test_sample_passes_class_names_and_ids_to_the_pipeline(saved, tmp_path, monkeypatch, given, passed):
    """Names go to the pipeline as strings (it maps them with the prior's `label2id`), ids as ints."""
    from hf_vqgan import VQGANTransformerPipeline

    calls = []

    def fake_call(self, **kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(images=torch.zeros(len(passed) * 2, 3, SIZE, SIZE))

    monkeypatch.setattr(VQGANTransformerPipeline, "__call__", fake_call)
    output = tmp_path / "grid.png"
    argv = ["sample", "--model", str(saved["class"]), "--class-labels", *given, "--num-images", "2", "--quiet",
            "--output", str(output)]  # fmt: skip
    assert main(argv) == 0
    assert calls[0]["class_labels"] == passed and calls[0]["num_images_per_prompt"] == 2
    assert calls[0]["batch_size"] == 1  # one prompt per label: the pipeline counts them


def test_sample_by_class_name_end_to_end_draws_what_the_id_draws(tmp_path, capsys):
    """A prior saved with names: `--class-labels circle` samples exactly what `--class-labels 1` samples."""
    pipe = sampling_pipeline(num_classes=3, channels=3)
    pipe.transformer.config.id2label = {0: "square", 1: "circle", 2: "star"}
    pipe.save_pretrained(tmp_path / "named")
    outputs = {}
    for label in ["circle", "1"]:
        outputs[label] = tmp_path / f"{label}.png"
        argv = ["sample", "--model", str(tmp_path / "named"), "--class-labels", label, "--num-images", "2", "--quiet",
                "--output", str(outputs[label])]  # fmt: skip
        assert main(argv) == 0
    np.testing.assert_array_equal(read(outputs["circle"]), read(outputs["1"]))
    argv[argv.index("1")] = "hexagon"
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "hexagon" in error and "circle" in error and "Traceback" not in error


# ------------------------------------------------------------------------------------------------------ device
@pytest.mark.parametrize(
    "command, device, message",
    [
        ("sample", "cuda", r"--device 'cuda' is not available on this machine \(it has cpu\); pass --device cpu\."),
        ("reconstruct", "mps", r"--device 'mps' is not available on this machine \(it has cpu\)"),
        (
            "sample",
            "cuda:7",
            r"--device 'cuda:7' is not available: this machine has 1 cuda device\(s\), cuda:0 to cuda:0",
        ),
        ("reconstruct", "gpu", r"--device 'gpu' is not a device name; use cpu, cuda, cuda:1, mps"),
    ],
)
def test_an_unavailable_device_is_one_error_line_before_loading(saved, tmp_path, capsys, monkeypatch, command, device,
                                                                message):  # fmt: skip
    """No traceback, exit status 2, and nothing loaded or written (the old command failed inside `pipe.to`)."""
    has_one_gpu = device == "cuda:7"
    accelerator = torch.device("cuda") if has_one_gpu else None
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: accelerator)
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 1 if has_one_gpu else 0)
    loaded = []
    monkeypatch.setattr(VQGANModel, "from_pretrained", lambda *a, **k: loaded.append(a))
    output = tmp_path / "out.png"
    source = input_image(tmp_path / "input.png")
    inputs = ["--input", str(source)] if command == "reconstruct" else ["--class-label", "0"]
    argv = [command, "--model", str(saved["class"]), *inputs, "--device", device, "--output", str(output)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"hf-vqgan {command}: error: ") and re.search(message, captured.err)
    assert not loaded and not output.exists() and captured.out == ""


def test_the_cpu_device_and_an_available_one_pass(monkeypatch):
    from hf_vqgan.cli import _check_device

    _check_device(None)
    _check_device("cpu")
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)
    _check_device("cuda")
    _check_device("cuda:1")
    with pytest.raises(ValueError, match="cuda:0 to cuda:1"):
        _check_device("cuda:2")
    with pytest.raises(ValueError, match=r"it has cpu and cuda\); pass --device cpu"):
        _check_device("mps")


# ------------------------------------------------------------------------------------------------------- help
def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) >= {"sample", "reconstruct", "convert-taming", "convert-diffusers", "demo"}
    missing = [
        f"{name} {action.option_strings[0]}"
        for name, subparser in commands.choices.items()
        for action in subparser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []


# ------------------------------------------------------------------------------------------------- reconstruct
@pytest.mark.parametrize("model, mode", [("class", "RGB"), ("vqgan", "L")])
def test_reconstruct_from_a_pipeline_or_a_tokenizer_folder(saved, tmp_path, capsys, model, mode):
    source = input_image(tmp_path / "input.png", size=20)
    output = tmp_path / "recon.png"
    assert main(["reconstruct", "--model", str(saved[model]), "--input", str(source), "--output", str(output)]) == 0
    assert f"{SIZE}x{SIZE} pixels -> 8x8 tokens -> {output}" in capsys.readouterr().out
    vqgan = VQGANModel.from_pretrained(saved[model] / "vqgan" if model == "class" else saved[model])
    resized = PIL.Image.open(source).convert(mode).resize((SIZE, SIZE))  # the model's sample_size
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1)
    pixels = pixels[None, None] if mode == "L" else pixels.permute(2, 0, 1)[None]
    with torch.no_grad():
        reconstruction = vqgan.decode_indices(vqgan.tokenize(pixels)).sample.clamp(-1, 1)
    expected = VQGANImageProcessor.postprocess(reconstruction)[0].resize((20, 20), PIL.Image.BICUBIC)
    np.testing.assert_array_equal(read(output), np.asarray(expected))  # at the input's 20x20, no grid padding


def test_reconstruct_crops_the_centre_as_training_does(saved, tmp_path):
    """A wide photo is resized by its shorter side and centre-cropped, exactly as the training transform does it;
    the old command stretched it to a square."""
    wide = np.random.default_rng(1).integers(0, 256, (20, 36, 3), dtype=np.uint8)  # (H, W, C)
    wide[:, :8] = 255  # white margins that a centre crop drops and a stretch keeps
    wide[:, -8:] = 255
    source = tmp_path / "wide.png"
    PIL.Image.fromarray(wide).save(source)
    output = tmp_path / "recon.png"
    assert main(["reconstruct", "--model", str(saved["class"]), "--input", str(source), "--output", str(output)]) == 0
    vqgan = VQGANModel.from_pretrained(saved["class"] / "vqgan")
    training_transform = VQGANImageProcessor(resolution=SIZE, channels=3, center_crop=True)
    pixels, geometry = training_transform.transform(PIL.Image.open(source))
    assert geometry.box[0] > 0  # a crop, not a stretch
    with torch.no_grad():
        reconstruction = vqgan.decode_indices(vqgan.tokenize(pixels[None])).sample.clamp(-1, 1)
    expected = VQGANImageProcessor.postprocess(reconstruction)[0].resize((20, 20), PIL.Image.BICUBIC)
    np.testing.assert_array_equal(read(output), np.asarray(expected))  # the 20x20 centre, at the input's scale


def test_a_reconstruction_has_the_inputs_size_without_grid_padding(saved, tmp_path, capsys):
    """A 16x16 input (the model's size) gives a 16x16 reconstruction, exactly the decoded pixels; the old command
    wrote a 20x20 grid of one (2 pixels of padding around it)."""
    source = input_image(tmp_path / "input.png", size=SIZE)
    output = tmp_path / "recon.png"
    assert main(["reconstruct", "--model", str(saved["class"]), "--input", str(source), "--output", str(output)]) == 0
    vqgan = VQGANModel.from_pretrained(saved["class"] / "vqgan")
    pixels = VQGANImageProcessor(resolution=SIZE, channels=3).preprocess(PIL.Image.open(source))
    with torch.no_grad():
        reconstruction = vqgan.decode_indices(vqgan.tokenize(pixels)).sample.clamp(-1, 1)
    written = read(output)
    assert written.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(written, np.asarray(VQGANImageProcessor.postprocess(reconstruction)[0]))
    assert f"-> {output} ({SIZE}x{SIZE})" in capsys.readouterr().out


def test_reconstruct_side_by_side_and_resolution(saved, tmp_path, capsys):
    source = input_image(tmp_path / "input.png", size=20)
    output = tmp_path / "pair.png"
    argv = ["reconstruct", "--model", str(saved["class"]), "--input", str(source), "--output", str(output),
            "--side-by-side", "--resolution", "8"]  # fmt: skip
    assert main(argv) == 0
    pair = read(output)
    assert pair.shape == (20, 2 * 20, 3)  # input and its reconstruction (made at 8x8), at the input's 20x20 each
    np.testing.assert_array_equal(pair[:, :20], read(source))  # the input itself: a square input is all centre
    assert "8x8 pixels -> 4x4 tokens" in capsys.readouterr().out


def test_reconstruct_of_a_missing_file_exits_with_a_message(saved, tmp_path, capsys):
    argv = ["reconstruct", "--model", str(saved["vqgan"]), "--input", str(tmp_path / "nope.png"),
            "--output", str(tmp_path / "out.png")]  # fmt: skip
    assert main(argv) == 2
    assert "No image file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- Hub ids (offline cache)
@pytest.fixture
def offline_hub_cache(tmp_path, saved, monkeypatch) -> Path:
    """A Hub cache holding `user/tiny-pipeline` and `user/tiny-vqgan`, with the Hub unreachable."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    for repo_id, folder in (("user/tiny-pipeline", saved["class"]), ("user/tiny-vqgan", saved["vqgan"])):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    # huggingface_hub reads both variables once, at import: the module constants are what its functions consult.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("model", ["pipe", "user/not-cached"])
def test_sample_from_a_name_that_is_neither_a_folder_nor_cached_says_so(tmp_path, offline_hub_cache, capsys, model):
    """A typo'd folder name (or an uncached repo id) offline: one line saying what was looked for, not
    huggingface_hub's message about snapshot folders and revisions."""
    assert main(["sample", "--model", model, "--output", str(tmp_path / "grid.png"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{model!r} is not a folder here, and as a Hub repo id it is not in the local Hugging Face cache" in err


def test_sample_and_reconstruct_with_a_repo_id(saved, tmp_path, offline_hub_cache):
    for model, name in ((str(saved["class"]), "folder"), ("user/tiny-pipeline", "hub")):
        assert main(["sample", "--model", model, "--class-label", "1", "--num-images", "2", "--quiet",
                     "--output", str(tmp_path / f"sample-{name}.png")]) == 0  # fmt: skip
    np.testing.assert_array_equal(read(tmp_path / "sample-folder.png"), read(tmp_path / "sample-hub.png"))

    source = input_image(tmp_path / "input.png")
    for model, name in ((str(saved["class"]), "folder"), ("user/tiny-pipeline", "hub-pipe")):
        argv = ["reconstruct", "--model", model, "--input", str(source), "--output", str(tmp_path / f"{name}.png")]
        assert main(argv) == 0
    np.testing.assert_array_equal(read(tmp_path / "folder.png"), read(tmp_path / "hub-pipe.png"))

    gray = input_image(tmp_path / "gray.png", mode="L")
    for model, name in ((str(saved["vqgan"]), "vq-folder"), ("user/tiny-vqgan", "vq-hub")):
        argv = ["reconstruct", "--model", model, "--input", str(gray), "--output", str(tmp_path / f"{name}.png")]
        assert main(argv) == 0
    np.testing.assert_array_equal(read(tmp_path / "vq-folder.png"), read(tmp_path / "vq-hub.png"))


def test_a_repo_id_missing_from_the_offline_cache_exits_with_a_message(tmp_path, capsys, offline_hub_cache):
    assert main(["sample", "--model", "user/absent", "--quiet", "--output", str(tmp_path / "x.png")]) == 2
    assert "hf-vqgan sample: error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- conversion
def test_convert_taming_then_sample(tmp_path):
    fixtures = taming_fixtures()
    folder = tmp_path / "converted"
    argv = ["convert-taming", "--config", str(fixtures / "transformer_tiny_uncond.yaml"),
            "--checkpoint", str(fixtures / "transformer_tiny_uncond.ckpt"), "--output", str(folder)]  # fmt: skip
    assert main(argv) == 0
    assert (folder / "model_index.json").is_file()
    output = tmp_path / "grid.png"
    assert main(["sample", "--model", str(folder), "--num-images", "2", "--quiet", "--output", str(output)]) == 0
    assert read(output).shape == (32 + 4, 2 * (32 + 2) + 2, 3)  # two 32x32 RGB samples side by side


class WritesAMarker:
    """Unpickling this runs code: it writes `marker` (a malicious checkpoint would do worse)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def _convert_taming(tmp_path: Path, checkpoint: Path, *options: str) -> list[str]:
    fixtures = taming_fixtures()
    return ["convert-taming", "--config", str(fixtures / "vqgan_tiny.yaml"), "--checkpoint", str(checkpoint),
            "--output", str(tmp_path / "converted"), *options]  # fmt: skip


def test_convert_taming_runs_nothing_from_a_pickle_unless_allowed(tmp_path, capsys):
    """Without `--allow-pickle`, a checkpoint whose unpickling would run code is refused and runs nothing; with it,
    the flag reaches the loader (the code runs: only for files you trust) and the weights convert."""
    import torch

    marker = tmp_path / "marker.txt"
    state_dict = torch.load(taming_fixtures() / "vqgan_tiny.ckpt", weights_only=True)["state_dict"]
    checkpoint = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": state_dict, "hyper_parameters": WritesAMarker(marker)}, checkpoint)

    assert main(_convert_taming(tmp_path, checkpoint)) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists() and not (tmp_path / "converted").exists()
    assert re.fullmatch(r"hf-vqgan convert-taming: error: .*hostile\.ckpt holds Python objects .*needs `exec`.*"
                        r"`--allow-pickle` on the command line\)\.", err), err  # fmt: skip

    assert main(_convert_taming(tmp_path, checkpoint, "--allow-pickle")) == 0
    assert marker.read_text() == "unpickled"
    assert VQGANModel.from_pretrained(tmp_path / "converted").config.codebook_size == 64


@pytest.mark.parametrize("content", [b"", "random", "truncated"])
def test_convert_taming_of_a_damaged_checkpoint_names_it_and_never_suggests_allow_pickle(tmp_path, capsys, content):
    original = (taming_fixtures() / "vqgan_tiny.ckpt").read_bytes()
    data = {"random": np.random.default_rng(0).bytes(3000), "truncated": original[: len(original) // 2]}
    checkpoint = tmp_path / "damaged.ckpt"
    checkpoint.write_bytes(data.get(content, content))
    for options in ((), ("--allow-pickle",)):
        assert main(_convert_taming(tmp_path, checkpoint, *options)) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "allow-pickle" not in err and "Traceback" not in err, err
        assert re.fullmatch(r"hf-vqgan convert-taming: error: The checkpoint .*damaged\.ckpt .*(is empty|is not a "
                            r"readable PyTorch checkpoint).*", err), err  # fmt: skip


def test_convert_diffusers_refuses_to_overwrite_its_input(saved, tmp_path, capsys):
    source = shutil.copytree(saved["vqgan"], tmp_path / "vqgan")
    before = {f.name: f.read_bytes() for f in source.iterdir()}
    for output in (source, source / "vqmodel"):
        argv = ["convert-diffusers", "--input", str(source), "--output", str(output), "--to", "vqmodel"]
        assert main(argv) == 2
        assert "would overwrite the source" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in source.iterdir()} == before


# ------------------------------------------------------------------------------------------------- the parser
def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "hf-vqgan sample --model PATH_OR_ID" in capsys.readouterr().out


def test_parser_requires_model_and_output():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--model", "x"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reconstruct", "--input", "a.png", "--output", "b.png"])


def test_console_script_points_at_main():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "hf-vqgan"]
    assert script.value == "hf_vqgan.cli:main"


# ------------------------------------------------------------------------------------------------ bad inputs
# One row per bad input: (id, call, regex the last line of stderr must match). Each regex names the bad value (or
# the option) and the expectation, so an error raised for another reason, or one that says less, fails.
@pytest.fixture(scope="module")
def error_paths(tmp_path_factory) -> dict[str, Path]:
    """`folder`: a saved class-conditional (3 classes) pipeline of the error configs, `image`: an 8x8 RGB PNG,
    `tmp`: an empty folder."""
    folder = tmp_path_factory.mktemp("pipeline")
    tiny_pipeline(
        tiny_vqgan(**error_vqgan_config()), tiny_prior(0, **error_prior_config(num_classes=3))
    ).save_pretrained(folder)
    image = tmp_path_factory.mktemp("images") / "digit.png"
    PIL.Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    return dict(folder=folder, image=image, tmp=tmp_path_factory.mktemp("outputs"))


def cli(*argv):
    """`main(argv)` once the paths of `error_paths` are filled into the `{name}` fields of `argv`."""
    return lambda paths: main([str(a).format(**paths) for a in argv])


# fmt: off
ERROR_CASES = [
    ("sample missing model", cli("sample", "--model", "{tmp}/missing", "--output", "{tmp}/g.png"), r"No pipeline folder at '.*missing'"),
    ("sample num-images 0", cli("sample", "--model", "{folder}", "--class-label", "0", "--num-images", "0", "--output", "{tmp}/g.png"), r"`num_images_per_prompt` must be a positive int, got 0"),
    ("sample class out of range", cli("sample", "--model", "{folder}", "--class-label", "7", "--output", "{tmp}/g.png"), r"`class_labels` must lie in \[0, 3\), got \[7\]"),
    ("sample temperature 0", cli("sample", "--model", "{folder}", "--class-label", "0", "--temperature", "0", "--output", "{tmp}/g.png"), r"`temperature` must be a positive finite number, got 0\.0"),
    ("sample top-p 2", cli("sample", "--model", "{folder}", "--class-label", "0", "--top-p", "2", "--output", "{tmp}/g.png"), r"`top_p` must be None or a number in \(0, 1\], got 2\.0"),
    ("sample missing class", cli("sample", "--model", "{folder}", "--output", "{tmp}/g.png"), r"pass `class_labels`"),
    ("sample missing condition image", cli("sample", "--model", "{folder}", "--class-label", "0", "--condition-image", "{tmp}/none.png", "--output", "{tmp}/g.png"), r"No image file at '.*none\.png'"),
    ("reconstruct missing input", cli("reconstruct", "--model", "{folder}", "--input", "{tmp}/none.png", "--output", "{tmp}/r.png"), r"No image file at '.*none\.png'"),
    ("reconstruct indivisible resolution", cli("reconstruct", "--model", "{folder}", "--input", "{image}", "--resolution", "9", "--output", "{tmp}/r.png"), r"multiples of the downsampling factor 2, got 9x9"),
    ("reconstruct not an image", cli("reconstruct", "--model", "{folder}", "--input", "{folder}/model_index.json", "--output", "{tmp}/r.png"), r"cannot identify image file '.*model_index\.json'"),
    ("convert-diffusers missing input", cli("convert-diffusers", "--input", "{tmp}/missing", "--output", "{tmp}/out", "--to", "vqmodel"), r"No model folder at '.*missing': expected a directory holding config\.json"),
    ("convert-taming missing checkpoint", cli("convert-taming", "--config", "{tmp}/missing.yaml", "--checkpoint", "{tmp}/missing.ckpt", "--output", "{tmp}/out"), r"hf-vqgan convert-taming: error: .*missing\.(yaml|ckpt)"),
]
# fmt: on


@pytest.mark.parametrize("call, message", [(c[1], c[2]) for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_inputs_exit_2_with_a_message_naming_them(error_paths, capsys, call, message):
    assert call(error_paths) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after loading progress bars, one line
    assert last.startswith("hf-vqgan ") and ": error: " in last and re.search(message, last), err


# fmt: off
PARSER_ERRORS = [
    ("no --to", ["convert-diffusers", "--input", "a", "--output", "b"], r"the following arguments are required: --to"),
    ("bad --to", ["convert-diffusers", "--input", "a", "--output", "b", "--to", "onnx"], r"argument --to: invalid choice: 'onnx' \(choose from '?vqmodel'?, '?hf_vqgan'?\)"),
    ("non-integer --num-images", ["sample", "--model", "m", "--output", "o", "--num-images", "two"], r"argument --num-images: invalid int value: 'two'"),
    ("unknown command", ["train"], r"argument COMMAND: invalid choice: 'train'"),
]
# fmt: on


@pytest.mark.parametrize("argv, message", [c[1:] for c in PARSER_ERRORS], ids=[c[0] for c in PARSER_ERRORS])
def test_malformed_arguments_exit_2_with_the_parser_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
