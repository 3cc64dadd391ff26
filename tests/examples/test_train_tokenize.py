"""examples/train.py tokenize: a token dataset extracted on every process (issue 19).

Two real CPU processes (`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`, see
test_train_multi_process.py) assemble exactly the dataset one process does; a run SIGKILLed after some chunks
(tests/examples/faults/sitecustomize.py) resumes to the same dataset without extracting its finished chunks again.
The data: a labelled image folder of 14 files, one of them unreadable, in chunks of 2 and batches of 3 so that
nothing divides evenly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from hf_vqgan import VQGANModel
from hf_vqgan.training.extraction import work_folder
from hf_vqgan.training.token_dataset import TOKENS_METADATA, check_tokenizer_matches, load_token_dataset

FAULTS = Path(__file__).resolve().parent / "faults"  # its sitecustomize.py arms FAULT_* in a subprocess
CLASSES = ["circle", "square"]


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    """14 PNGs in class sub-folders (an `imagefolder` with a ClassLabel `label`), the fifth file unreadable."""
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(14):
        path = folder / CLASSES[i % 2] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i == 4:
            path.write_bytes(b"not a png")
            continue
        Image.fromarray(rng.integers(0, 256, (12 + i, 20), dtype=np.uint8), mode="L").save(path)
    return folder


def _argv(tokenizer, data, output, *extra) -> list:
    return ["tokenize", "--vqgan_model_name_or_path", tokenizer, "--train_data_dir", data, "--class_column", "label",
            "--validation_split", 4, "--tokenize_flips", "--chunk_size", 2, "--batch_size", 3, "--output_dir", output,
            *extra]  # fmt: skip


def _dataset(folder: Path) -> tuple[dict, dict, dict]:
    tokens = load_from_disk(str(folder))
    rows = {name: split.to_dict() for name, split in tokens.items()}
    features = {name: split.features for name, split in tokens.items()}
    return rows, features, json.loads((folder / TOKENS_METADATA).read_text())


def test_one_process_writes_a_token_dataset_with_its_metadata_and_card(tmp_path, run_train, tokenizer_dir,
                                                                       labelled_folder):  # fmt: skip
    out = tmp_path / "tokens"
    assert run_train(_argv(tokenizer_dir, labelled_folder, out)).returncode == 0
    rows, features, metadata = _dataset(out)
    # 14 files, 4 held out, one unreadable: 13 images, each training image followed by its mirror.
    assert len(rows["train"]["indices"]) // 2 + len(rows["validation"]["indices"]) == 13
    assert features["train"]["label"].names == CLASSES and metadata["class_names"] == CLASSES
    labels = rows["train"]["label"]
    assert labels[0::2] == labels[1::2]  # each image's row, then its mirror's
    assert metadata["tokenize_flips"] and metadata["resolution"] == 16 and metadata["num_rows"]["train"] == len(labels)
    assert sum(metadata["skipped_images"].values()) == 1
    assert not work_folder(out).exists()  # the chunks are gone once assembled
    # The reader's side (engineer tokds): it loads, and the tokenizer matches.
    loaded, loaded_metadata = load_token_dataset(out)
    check_tokenizer_matches(loaded_metadata, VQGANModel.from_pretrained(tokenizer_dir))
    assert loaded["train"]["indices"] == rows["train"]["indices"]
    card = (out / "README.md").read_text()
    assert "vqgan-tokens" in card and metadata["tokenizer"]["fingerprint"] in card


def test_the_transformer_stage_trains_from_what_tokenize_wrote(tmp_path, run_train, tokenizer_dir, labelled_folder,
                                                               prior_json):  # fmt: skip
    """Writer and reader agree: `train.py tokenize` then `train.py transformer --tokenized_dataset` (engineer
    tokds's side), with the tokenizer the metadata names and the class names the ClassLabel column gave."""
    from hf_vqgan import VQGANTransformerPipeline

    tokens, out = tmp_path / "tokens", tmp_path / "pipeline"
    assert run_train(_argv(tokenizer_dir, labelled_folder, tokens)).returncode == 0
    run = run_train(["transformer", "--tokenized_dataset", tokens, "--prior_config", prior_json, "--output_dir", out,
                     "--max_train_steps", 2, "--train_batch_size", 4, "--eval_batch_size", 4,
                     "--num_validation_samples", 1, "--report_to", "none", "--logging_steps", 1])  # fmt: skip
    assert run.returncode == 0 and sorted(run.train_logs()) == [1, 2]
    config = VQGANTransformerPipeline.from_pretrained(out).transformer.config
    assert (config.num_classes, config.latent_height, config.class_names) == (2, 8, CLASSES)


def test_condition_codes_are_extracted_and_recorded(tmp_path, run_train, tokenizer_dir, labelled_folder):
    """Edge maps of the 1-channel images, tokenised by a second (here the same tiny) tokenizer: `cond_indices`."""
    out = tmp_path / "tokens"
    argv = _argv(tokenizer_dir, labelled_folder, out, "--cond_vqgan_model_name_or_path", tokenizer_dir,
                 "--condition_type", "edges")  # fmt: skip
    assert run_train(argv).returncode == 0
    rows, _, metadata = _dataset(out)
    assert len(rows["train"]["cond_indices"]) == len(rows["train"]["indices"])
    assert {len(codes) for codes in rows["train"]["cond_indices"]} == {8 * 8}
    assert metadata["condition_type"] == "edges" and metadata["cond_tokenizer"]["latent_shape"] == [8, 8]
    tokenizer = VQGANModel.from_pretrained(tokenizer_dir)
    _, loaded_metadata = load_token_dataset(out)
    check_tokenizer_matches(loaded_metadata, tokenizer, tokenizer)


def test_a_rerun_is_a_no_op_and_other_settings_need_overwrite(tmp_path, run_train, tokenizer_dir, labelled_folder,
                                                              monkeypatch, capsys):  # fmt: skip
    from hf_vqgan.training.extraction import Extraction

    out = tmp_path / "tokens"
    assert run_train(_argv(tokenizer_dir, labelled_folder, out)).returncode == 0
    first = _dataset(out)

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(Extraction, "run", no_extraction)
    assert run_train(_argv(tokenizer_dir, labelled_folder, out)).returncode == 0  # same settings: nothing to do
    capsys.readouterr()
    assert run_train(_argv(tokenizer_dir, labelled_folder, out, "--resolution", 8)).returncode == 2
    assert "holds a token dataset of other settings" in capsys.readouterr().err
    monkeypatch.undo()
    run = run_train(_argv(tokenizer_dir, labelled_folder, out, "--resolution", 8, "--overwrite_output_dir"))
    assert run.returncode == 0
    rows, _, metadata = _dataset(out)
    assert metadata["resolution"] == 8 and len(rows["train"]["indices"][0]) == 4 * 4
    assert len(first[0]["train"]["indices"][0]) == 8 * 8


def test_push_to_hub_publishes_the_saved_token_dataset(tmp_path, run_train, tokenizer_dir, labelled_folder,
                                                        monkeypatch):  # fmt: skip
    """`--push_to_hub` publishes what was saved, as a dataset repo, in one upload: parquet shards, card, metadata;
    a rerun with the same settings extracts nothing and still publishes."""
    from hub_recorder import record_hub_calls

    hub = record_hub_calls(monkeypatch)
    out = tmp_path / "tokens"
    argv = _argv(tokenizer_dir, labelled_folder, out, "--push_to_hub", "--hub_model_id", "user/digit-tokens")
    assert run_train(argv).returncode == 0
    assert run_train(argv).returncode == 0
    assert len(hub["upload"]) == 2
    for upload in hub["upload"]:
        assert upload["repo_id"] == "user/digit-tokens" and upload.get("repo_type") == "dataset"
        names = sorted(upload["files"])
        assert {"README.md", TOKENS_METADATA} <= set(names)
        shards = [name for name in names if name.endswith(".parquet")]
        assert {name.split("/")[-1].split("-")[0] for name in shards} == {"train", "validation"}
        assert set(names) == {"README.md", TOKENS_METADATA, *shards}


def test_push_to_hub_needs_a_repo_id(tmp_path, run_train, tokenizer_dir, labelled_folder, capsys):
    assert run_train(_argv(tokenizer_dir, labelled_folder, tmp_path / "t", "--push_to_hub")).returncode == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing tokenizer", "--vqgan_model_name_or_path '{tmp}/nowhere' cannot be loaded as a VQGANModel"),
        ("output is a file", "--output_dir '{tmp}/file' is a file"),
        ("output holds other files", "holds other files (no hf_vqgan_tokens.json)"),
        ("streaming", "--streaming does not apply to `train.py tokenize`"),
        ("condition without tokenizer", "--condition_type and --cond_vqgan_model_name_or_path go together"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, run_train, tokenizer_dir, capsys, case, expected):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    tokenizer, output, extra = tokenizer_dir, tmp_path / "tokens", []
    if case == "missing tokenizer":
        tokenizer = tmp_path / "nowhere"
    elif case == "output is a file":
        output = tmp_path / "file"
    elif case == "output holds other files":
        output = tmp_path / "full"
    elif case == "streaming":
        extra = ["--streaming"]
    else:
        extra = ["--condition_type", "edges"]
    argv = ["tokenize", "--vqgan_model_name_or_path", tokenizer, "--output_dir", output, *extra]
    assert run_train(argv).returncode == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert expected.format(tmp=tmp_path) in err
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_two_processes_assemble_exactly_the_one_process_dataset(tmp_path, run_train, accelerate_launch,
                                                                tokenizer_dir, labelled_folder):  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_train(_argv(tokenizer_dir, labelled_folder, one)).returncode == 0
    result = accelerate_launch(_argv(tokenizer_dir, labelled_folder, two), num_processes=2)
    assert "chunks of 2 images on 2 processes" in result.stderr  # really two processes
    rows_one, features_one, metadata_one = _dataset(one)
    rows_two, features_two, metadata_two = _dataset(two)
    assert rows_two == rows_one  # the same rows in the same order, skipped image included
    assert features_two == features_one
    assert metadata_two == metadata_one
    assert (two / "README.md").read_text() == (one / "README.md").read_text()


@pytest.mark.slow
def test_a_sigkilled_extraction_resumes_to_the_same_dataset_without_redoing_chunks(
    tmp_path, run_train, accelerate_launch, tokenizer_dir, labelled_folder
):
    reference, out = tmp_path / "reference", tmp_path / "tokens"
    assert run_train(_argv(tokenizer_dir, labelled_folder, reference)).returncode == 0
    python_path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH")) if p)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    killed = accelerate_launch(
        _argv(tokenizer_dir, labelled_folder, out),
        num_processes=2,
        env={"PYTHONPATH": python_path, "FAULT_KILL_AFTER_CHUNKS": "2", "FAULT_CHUNK_LOG": str(first_log)},
        check=False,
    )
    assert killed.returncode != 0 and "[fault injection] after 2 chunks: SIGKILL" in killed.stderr
    assert not out.exists()
    work = work_folder(out)
    finished = [p for p in work.glob("*/chunk-??????") if (p / "COMPLETE").is_file()]
    kept = {f"{p.parent.name} {int(p.name.split('-')[1])}" for p in finished}
    # 5 training chunks (10 images in chunks of 2) and 2 validation chunks: some, not all, survived the kill.
    assert 2 <= len(kept) < 7, kept
    accelerate_launch(
        _argv(tokenizer_dir, labelled_folder, out),
        num_processes=2,
        env={"PYTHONPATH": python_path, "FAULT_CHUNK_LOG": str(second_log)},
    )
    redone = set(second_log.read_text().splitlines())
    everything = {f"train {k}" for k in range(5)} | {"validation 0", "validation 1"}
    assert redone == everything - kept  # the finished chunks were kept, not extracted again
    assert _dataset(out)[:2] == _dataset(reference)[:2]
    assert not work.exists()
