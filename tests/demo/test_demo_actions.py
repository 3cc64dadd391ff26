"""The demo's tab logic, upload checks, pictures and Space template, without a server; Gradio stays optional."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import CODEBOOK_SIZE, SIZE, SRC, tiny_pipeline
from hf_vqgan.demo import write_space
from hf_vqgan.demo.actions import VQGANDemo
from hf_vqgan.demo.uploads import UploadError, labels_from_drawing, read_upload
from hf_vqgan.demo.visuals import code_map, code_palette, segmentation_palette


@pytest.fixture(scope="module")
def class_demo() -> VQGANDemo:
    pipe = tiny_pipeline("class")
    pipe.set_progress_bar_config(disable=True)
    return VQGANDemo(pipe)


def photo(size=(40, 48), mode="RGB") -> PIL.Image.Image:
    array = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(array).convert(mode)


# ----------------------------------------------------------------------------------------------- optional
def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})  # fmt: skip


def test_importing_the_library_and_the_demo_package_never_imports_gradio():
    result = run_python("import sys, hf_vqgan, hf_vqgan.demo, hf_vqgan.demo.actions, hf_vqgan.cli; "
                        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_demo_command_without_gradio_says_how_to_install_it(tmp_path):
    # `None` in sys.modules makes `import gradio` fail as if it were not installed.
    result = run_python("import sys; sys.modules['gradio'] = None; from hf_vqgan.cli import main; "
                        f"sys.exit(main(['demo', '--model', {str(tmp_path)!r}]))")  # fmt: skip
    assert result.returncode == 2
    assert "pip install 'hf_vqgan[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ actions
def test_class_choices_use_names_and_fall_back_to_indices(class_demo):
    assert class_demo.class_choices() == [("zero", 0), ("one", 1), ("two", 2)]
    pipe = tiny_pipeline("class")
    pipe.transformer.config.id2label = {i: f"LABEL_{i}" for i in range(3)}  # transformers' defaults: no names
    assert VQGANDemo(pipe).class_choices() == [("0", 0), ("1", 1), ("2", 2)]
    assert VQGANDemo(tiny_pipeline("uncond")).class_choices() == []


def test_generate_matches_the_pipeline_and_reports_progress(class_demo, tmp_path):
    steps = []
    result = class_demo.generate(class_label=2, num_images=3, seed=7, progress=lambda done, total: steps.append(done))
    expected = class_demo.pipe(class_labels=2, num_images_per_prompt=3, generator=torch.Generator().manual_seed(7),
                               output_type="latent").images  # fmt: skip
    assert torch.equal(result.tokens, expected)
    assert [image.size for image in result.images] == [(SIZE, SIZE)] * 3
    assert steps == list(range(1, 65))  # one call per token of the 8x8 grid
    saved = json.loads(open(result.save_tokens(tmp_path)).read())
    assert saved["tokens"] == expected.tolist() and saved["class_label"] == 2 and saved["seed"] == 7
    decoded = class_demo.pipe.decode_tokens(torch.tensor(saved["tokens"]))
    assert [np.asarray(a).tolist() for a in decoded] == [np.asarray(b).tolist() for b in result.images]


def test_complete_keeps_the_rows_it_was_told(class_demo):
    image = photo()
    result = class_demo.complete(image, keep_rows=3, class_label=0, num_images=2, seed=1)
    fitted = class_demo.pipe.image_processor.preprocess(image)  # the same centre crop and resize
    kept = class_demo.pipe.vqgan.tokenize(fitted)[:, :3]
    assert torch.equal(result.tokens[:, :3], kept.expand(2, -1, -1))
    assert result.preview.size == (256, 256)  # enlarged 8x for the page
    with pytest.raises(UploadError, match="between 0 and 8"):
        class_demo.complete(image, keep_rows=9, class_label=0)


def test_reconstruct_reports_psnr_and_every_code_it_used(class_demo):
    result = class_demo.reconstruct(photo())
    assert sum(count for _, count in result.codes) == 64
    assert len({code for code, _ in result.codes}) == len(result.codes)
    assert result.indices.shape == (1, 8, 8) and result.code_map.size == (256, 256)
    assert 0 < result.psnr < 60 and result.strip.width > 3 * 256


def test_bad_settings_are_messages(class_demo):
    with pytest.raises(UploadError, match="Pick a class"):
        class_demo.generate(class_label=None)
    with pytest.raises(UploadError, match="1 to 16 images"):
        class_demo.generate(class_label=0, num_images=17)


def test_condition_shows_the_lowres_map_it_sampled_from():
    demo = VQGANDemo(tiny_pipeline("lowres"))
    demo.pipe.set_progress_bar_config(disable=True)
    result = demo.condition(photo(), num_images=2, seed=0)
    assert result.tokens.shape == (2, 8, 8) and len(result.images) == 2
    assert result.preview.size == (256, 256)
    assert len(np.unique(np.asarray(result.preview))) <= 16  # 4x4 boxes, enlarged


def test_codebook_usage_counts_what_the_demo_made(class_demo):
    before = class_demo.usage_report()["num_tokens"]
    class_demo.generate(class_label=1, num_images=2, seed=0)
    report = class_demo.usage_report()
    assert report["num_tokens"] == before + 128 and report["codebook_size"] == CODEBOOK_SIZE


def test_model_card_and_config_for_the_about_tab(class_demo, tmp_path):
    assert not class_demo.model_card().startswith("---")
    config = class_demo.config()
    assert config["transformer"]["num_classes"] == 3 and "vqgan" in config
    json.dumps(config)


# ------------------------------------------------------------------------------------------------ uploads
def test_uploads_refuse_non_images_and_huge_images_from_the_header(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(UploadError, match="notes.png is not an image"):
        read_upload(tmp_path / "notes.png")
    PIL.Image.new("L", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(UploadError, match="300x200 pixels"):
        read_upload(tmp_path / "big.png", max_pixels=300 * 199)
    with pytest.raises(UploadError, match="Upload an image"):
        read_upload(None)


@pytest.mark.parametrize("mode", ["CMYK", "1", "I;16", "RGBA", "P", "F", "LA"])
def test_any_image_mode_is_read_and_converted(class_demo, tmp_path, mode):
    image = photo(mode="L" if mode in ("I;16", "F") else "RGB")
    image = image.convert("I").convert(mode) if mode == "I;16" else image.convert(mode)
    path = tmp_path / ("image.tiff" if mode in ("F", "CMYK") else "image.png")
    image.save(path)
    assert class_demo.reconstruct(read_upload(path)).indices.shape == (1, 8, 8)


def test_a_drawn_segmentation_maps_palette_colours_to_labels():
    palette = segmentation_palette(4)
    assert palette.shape == (4, 3) and len({tuple(c) for c in palette}) == 4
    labels = np.array([[0, 1], [2, 3]])
    drawing = np.concatenate([palette[labels], np.full((2, 2, 1), 255, np.uint8)], axis=-1)
    drawing[0, 0, 3] = 0  # nothing drawn: label 0
    assert labels_from_drawing(drawing, palette).tolist() == [[0, 1], [2, 3]]


def test_code_map_gives_each_code_its_colour():
    indices = torch.tensor([[0, 1], [1, 5]])
    image = np.asarray(code_map(indices, 8, scale=3))
    assert image.shape == (6, 6, 3)
    assert (image[0, 0] == code_palette(8)[0]).all() and (image[5, 5] == code_palette(8)[5]).all()
    assert len({tuple(c) for c in code_palette(64)}) == 64  # neighbouring ids never share a colour
    assert len({tuple(c) for c in code_palette(1024)}) > 900


# -------------------------------------------------------------------------------------------------- Space
def test_space_template_builds_the_app_for_a_saved_pipeline(saved_pipelines, tmp_path):
    pytest.importorskip("gradio")
    paths = write_space(tmp_path / "space", model="user/vqgan-digits")
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["README.md", "app.py", "requirements.txt"]
    assert "hf_vqgan[demo]" in (tmp_path / "space" / "requirements.txt").read_text()
    assert "sdk: gradio" in (tmp_path / "space" / "README.md").read_text()
    code = ("import runpy, sys; module = runpy.run_path(sys.argv[1]); "
            "print(type(module['demo']).__name__, module['MODEL'])")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_VQGAN_MODEL": str(saved_pipelines["uncond"])}
    app = str(tmp_path / "space" / "app.py")
    result = subprocess.run([sys.executable, "-c", code, app], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["Blocks", str(saved_pipelines["uncond"])]


def test_a_pipeline_of_condition_tokens_without_a_condition_tokenizer_is_refused_by_name():
    """A converted taming coordinate or scene-layout pipeline has condition tokens but no `cond_vqgan`: the demo
    cannot make its condition, so it says so at start-up instead of sampling it as if it were unconditional."""
    import testing_utils

    prior = testing_utils.tiny_prior(2, cond_codebook_size=16, cond_length=4)
    pipe = testing_utils.tiny_pipeline(testing_utils.tiny_vqgan(0, **testing_utils.small_vqgan_config(3)), prior)
    with pytest.raises(
        ValueError, match=r"reads condition tokens that no condition tokenizer makes.*condition_tokens"
    ):
        VQGANDemo(pipe)
