"""examples/train.py: what a run shares (issue 14, findings 5, 6 and 8): class names end to end, cards that are true,
and `--push_to_hub` uploads by allow-list. The Hub is intercepted at `HfApi` (tests/hub_recorder.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vqgan import VQGANTransformerPipeline
from hub_recorder import STRAY_FILES, record_hub_calls, write_stray_files

VQGAN_ARGS = ["--train_batch_size", "8", "--eval_batch_size", "32", "--max_train_samples", "64",
              "--disc_base_channels", "8", "--disc_num_layers", "2", "--report_to", "none", "--perceptual_weight", "0"]  # fmt: skip
PRIOR_ARGS = ["--train_batch_size", "4", "--eval_batch_size", "8", "--num_validation_samples", "1",
              "--report_to", "none", "--checkpointing_steps", "1", "--validation_split", "0.25"]  # fmt: skip
TOKENIZER_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
PIPELINE_FILES = [
    "model_index.json", "pipeline_vqgan_transformer.py", "image_processor/preprocessor_config.json",
    "vqgan/config.json", "vqgan/diffusion_pytorch_model.safetensors", "transformer/config.json",
    "transformer/hf_vqgan_prior.py", "transformer/generation_config.json", "transformer/model.safetensors",
]  # fmt: skip
RUN_FILES = ["README.md", "metrics.json", "training_args.json", "training_curves.png"]


@pytest.fixture
def shapes_folder(tmp_path):
    """An image folder of two classes, `circle/` and `square/`, 8 images each: a ClassLabel `label` column."""
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "shapes" / name / f"{i}.png")
    return tmp_path / "shapes"


def _prior_argv(tokenizer, prior_json, output_dir, tmp_path, *extra) -> list:
    return ["transformer", "--vqgan_model_name_or_path", tokenizer, "--prior_config", prior_json,
            "--output_dir", output_dir, "--tokenized_cache_dir", tmp_path / "tokens", "--max_train_steps", 1,
            *PRIOR_ARGS, *extra]  # fmt: skip


def _no_local_paths(files: dict[str, bytes], tmp_path) -> None:
    """No uploaded file names a local absolute path (every path of these runs is under `tmp_path`)."""
    leaking = [name for name, content in files.items() if str(tmp_path).encode() in content]
    assert not leaking, leaking


def test_tokenizer_push_uploads_the_saved_model_and_card_only(tmp_path, run_train, tiny_vqgan_json, monkeypatch):
    hub = record_hub_calls(monkeypatch)
    out = tmp_path / "vqgan"
    write_stray_files(out)
    run = run_train(["vqgan", "--model_config", tiny_vqgan_json, "--output_dir", out, "--max_train_steps", 2,
                     *VQGAN_ARGS, "--checkpointing_steps", 1, "--log_jsonl", out / "steps.jsonl",
                     "--push_to_hub", "--hub_model_id", "someone/tiny-vqgan", "--hub_private_repo"])  # fmt: skip
    assert run.returncode == 0
    assert hub["create_repo"] == [dict(repo_id="someone/tiny-vqgan", token=None, private=True, exist_ok=True)]
    (upload,) = hub["upload"]
    assert upload["repo_id"] == "someone/tiny-vqgan"
    assert sorted(upload["files"]) == sorted(TOKENIZER_FILES + RUN_FILES + ["reconstructions.png"])
    assert all((out / name).is_file() for name in STRAY_FILES)  # they exist; they were left out
    assert (out / "checkpoints" / "checkpoint-000001").is_dir()
    _no_local_paths(upload["files"], tmp_path)
    arguments = json.loads(upload["files"]["training_args.json"])
    assert arguments["model_config"] == "tiny_vqgan.json" and arguments["output_dir"] == "vqgan"  # base names
    assert arguments["log_jsonl"] == "steps.jsonl"
    card = upload["files"]["README.md"].decode()
    assert 'VQGANModel.from_pretrained("someone/tiny-vqgan")' in card and "# tiny-vqgan" in card
    assert "![training curves](training_curves.png)" in card


def test_class_names_of_an_image_folder_reach_the_pipeline_grid_and_card(
    tmp_path, run_train, tokenizer_dir, prior_json, shapes_folder, monkeypatch
):
    hub = record_hub_calls(monkeypatch)
    out = tmp_path / "pipeline"
    write_stray_files(out)
    run = run_train(_prior_argv(tokenizer_dir, prior_json, out, tmp_path, "--train_data_dir", shapes_folder,
                                "--class_column", "label", "--push_to_hub", "--hub_model_id", "me/shapes"))  # fmt: skip
    assert run.returncode == 0

    pipe = VQGANTransformerPipeline.from_pretrained(out)
    assert pipe.transformer.config.id2label == {0: "circle", 1: "square"}
    assert pipe.labels == {"circle": 0, "square": 1}
    assert pipe.get_label_ids(["square", "circle"]) == [1, 0]
    generator = torch.Generator().manual_seed(0)
    by_name = pipe(class_labels=["circle", "square"], generator=generator, output_type="latent").images
    generator.manual_seed(0)
    assert torch.equal(by_name, pipe(class_labels=[0, 1], generator=generator, output_type="latent").images)

    # The samples grid names its rows: a margin with text left of 2 rows of 1 image (64 px after scaling).
    with Image.open(out / "samples.png") as grid:
        pixels = np.asarray(grid.convert("L"))
    unlabelled_width = 1 * (64 + 2) + 2
    assert pixels.shape[1] > unlabelled_width and (pixels[:, : pixels.shape[1] - unlabelled_width] < 128).any()

    (upload,) = hub["upload"]
    assert sorted(upload["files"]) == sorted(PIPELINE_FILES + RUN_FILES + ["samples.png"])
    _no_local_paths(upload["files"], tmp_path)
    card = upload["files"]["README.md"].decode()
    assert "class_labels=['circle', 'square']" in card and "`circle` (0), `square` (1)" in card
    assert "datasets:" not in card and "huggingface.co/datasets" not in card  # a local folder is no Hub dataset
    assert "A local image folder (`shapes`)" in card
    assert json.loads(upload["files"]["training_args.json"])["train_data_dir"] == "shapes"


def test_a_class_names_file_names_integer_labels(tmp_path, run_train, tokenizer_dir, prior_json):
    out = tmp_path / "pipeline"
    names = [f"digit {d}" for d in range(10)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n")
    run = run_train(_prior_argv(tokenizer_dir, prior_json, out, tmp_path, "--max_train_samples", 16,
                                "--class_column", "label", "--class_names", tmp_path / "names.txt"))  # fmt: skip
    assert run.returncode == 0
    pipe = VQGANTransformerPipeline.from_pretrained(out)
    assert pipe.transformer.config.class_names == names
    card = (out / "README.md").read_text()
    assert "class_labels=['digit 0', 'digit 1']" in card


@pytest.mark.parametrize(
    "lines, match",
    [
        (["a", "b"], r"names 2 classes, but the ClassLabel column 'label' has 10"),
        (["a", "a"] + [str(d) for d in range(8)], r"one distinct, non-empty name per line"),
    ],
)
def test_a_bad_class_names_file_is_refused(tmp_path, run_train, capsys, tokenizer_dir, prior_json, lines, match):
    (tmp_path / "names.txt").write_text("\n".join(lines))
    run = run_train(_prior_argv(tokenizer_dir, prior_json, tmp_path / "out", tmp_path, "--max_train_samples", 16,
                                "--class_column", "label", "--class_names", tmp_path / "names.txt"))  # fmt: skip
    err = capsys.readouterr().err
    assert run.returncode == 2 and re.search("error: .*" + match, err) and "Traceback" not in err, err


def test_a_hub_dataset_is_linked_and_a_local_one_is_not():
    from argparse import Namespace

    from hf_vqgan.training.evaluation import _dataset_description

    def describe(**kwargs):
        return _dataset_description(Namespace(**{"dataset_name": None, "train_data_dir": None, **kwargs}))

    assert describe(dataset_name="user/shapes") == ("[user/shapes](https://huggingface.co/datasets/user/shapes)",
                                                    ["user/shapes"])  # fmt: skip
    assert describe(dataset_name="/data/me/shapes") == ("A local dataset (`shapes`).", [])
    assert describe(data_files=["/data/me/train.parquet"]) == ("Local data files: `train.parquet`.", [])


def test_shareable_arguments_keep_base_names_of_local_paths(tmp_path, monkeypatch):
    from hf_vqgan.training.evaluation import shareable_value

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert shareable_value("/data/me/train.parquet") == "train.parquet"
    assert shareable_value({"train": ["/data/a.parquet", "~/b.csv"]}) == {"train": ["a.parquet", "b.csv"]}
    assert shareable_value("runs") == "runs" and shareable_value(".") == tmp_path.name
    assert shareable_value("user/shapes") == "user/shapes"  # a Hub id, not a local path
    assert shareable_value(3e-4) == 3e-4 and shareable_value(None) is None
