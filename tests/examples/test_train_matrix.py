"""Every data path trains (issue 14): both stages, 2 steps at tiny size, over precision x source x streaming.

Sources: an `imagefolder` directory (`--train_data_dir`), a `save_to_disk` directory (`--dataset_name`) and a parquet
file (`--data_files`); each map-style and streamed; precisions `no` and `bf16` (CPU autocast). That is 12 cells per
stage, the full product, no pruning: each cell takes about a second in-process. fp16 is not a cell: accelerate runs
`--mixed_precision fp16` on a CPU in fp32 (it only enables fp16 autocast on accelerators), which the run now says
(`test_fp16_on_cpu_says_it_runs_in_fp32`). The cells in bf16 or streamed also resume from their step-1 checkpoint and
must end with the weights of the uninterrupted run.
"""

from __future__ import annotations

import itertools
import json
import logging
import re

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_vqgan import VQGANModel

NUM_IMAGES = 16  # 12 train + 4 validation at --validation_split 4
CLASS_NAMES = ("circle", "square")
CELLS = list(itertools.product(("no", "bf16"), ("imagefolder", "save_to_disk", "parquet"), (False, True)))


def _cell_id(cell) -> str:
    precision, source, streaming = cell
    return f"{precision}-{source}-{'streaming' if streaming else 'map'}"


def _resumes(cell) -> bool:
    precision, _, streaming = cell
    return precision == "bf16" or streaming


def _shape(index: int) -> np.ndarray:
    """A 20x20 grayscale circle (even index) or square (odd index) of a size that varies with the index."""
    yy, xx = np.mgrid[:20, :20]
    radius = 4 + index % 5
    if index % 2 == 0:
        mask = (yy - 10) ** 2 + (xx - 10) ** 2 <= radius**2
    else:
        mask = (abs(yy - 10) <= radius) & (abs(xx - 10) <= radius)
    return np.where(mask, 255, 0).astype(np.uint8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[str]]:
    """The same 16 labelled images as each source, by name: the flags that select it."""
    root = tmp_path_factory.mktemp("sources")
    folder = root / "imagefolder"
    for i in range(NUM_IMAGES):
        (folder / CLASS_NAMES[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_shape(i), mode="L").save(folder / CLASS_NAMES[i % 2] / f"{i:02d}.png")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASS_NAMES))})
    table = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_shape(i), mode="L") for i in range(NUM_IMAGES)],
         "label": [i % 2 for i in range(NUM_IMAGES)]},
        features=features,
    )  # fmt: skip
    table.save_to_disk(str(root / "saved"))
    table.to_parquet(str(root / "train.parquet"))
    return {
        "imagefolder": ["--train_data_dir", str(folder)],
        "save_to_disk": ["--dataset_name", str(root / "saved")],
        "parquet": ["--data_files", str(root / "train.parquet")],
    }


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """An untrained tiny one-channel tokenizer: the transformer stage only needs a frozen one."""
    from testing_utils import small_vqgan_config

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tokenizer")
    VQGANModel(**small_vqgan_config()).save_pretrained(folder)
    return str(folder)


def _common(cell, sources, tmp_path) -> list:
    precision, source, streaming = cell
    return [*sources[source], "--mixed_precision", precision, *(["--streaming"] if streaming else []),
            "--validation_split", 4, "--train_batch_size", 4, "--eval_batch_size", 8, "--report_to", "none",
            "--logging_steps", 1, "--checkpointing_steps", 1, "--cache_dir", tmp_path / "hf_cache"]  # fmt: skip


def _vqgan_argv(cell, sources, tmp_path, output_dir, steps: int, tiny_vqgan_json) -> list:
    return ["vqgan", "--model_config", tiny_vqgan_json, "--output_dir", output_dir, "--max_train_steps", steps,
            "--perceptual_weight", 0, "--disc_start", 1, "--disc_base_channels", 8, "--disc_num_layers", 2,
            *_common(cell, sources, tmp_path)]  # fmt: skip


def _transformer_argv(cell, sources, tmp_path, output_dir, steps: int, tokenizer_dir, prior_json) -> list:
    return ["transformer", "--vqgan_model_name_or_path", tokenizer_dir, "--prior_config", prior_json,
            "--output_dir", output_dir, "--max_train_steps", steps, "--class_column", "label",
            "--tokenized_cache_dir", tmp_path / "tokens", "--num_validation_samples", 1,
            *_common(cell, sources, tmp_path)]  # fmt: skip


def _same_weights(a_file, b_file) -> bool:
    a, b = load_file(a_file), load_file(b_file)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_and_resume(run_train, argv_of, weights: str, cell, tmp_path) -> None:
    """Two steps; in a resuming cell also one step, then a resume to two: same final weights."""
    straight = tmp_path / "straight"
    run = run_train(argv_of(straight, 2))
    assert run.returncode == 0
    assert sorted(run.train_logs()) == [1, 2]
    metrics = json.loads((straight / "metrics.json").read_text())
    assert metrics["step"] == 2
    if not _resumes(cell):
        return
    resumed = tmp_path / "resumed"
    assert run_train(argv_of(resumed, 1)).returncode == 0
    second = run_train([*argv_of(resumed, 2), "--resume_from_checkpoint", "latest"])
    assert second.returncode == 0 and sorted(second.train_logs()) == [2]
    assert _same_weights(straight / weights, resumed / weights)


def _assert_refused(run, capsys, expected: str) -> None:
    """The run stopped at start-up with exit 2 and one `error:` line matching `expected`, no traceback."""
    err = capsys.readouterr().err
    assert run.returncode == 2 and "Traceback" not in err
    assert re.search("error: .*" + expected, err), err


@pytest.mark.parametrize("cell", CELLS, ids=_cell_id)
def test_vqgan_stage(cell, sources, tmp_path, run_train, tiny_vqgan_json):
    def argv_of(output_dir, steps):
        return _vqgan_argv(cell, sources, tmp_path, output_dir, steps, tiny_vqgan_json)

    _train_and_resume(run_train, argv_of, "diffusion_pytorch_model.safetensors", cell, tmp_path)


@pytest.mark.parametrize("cell", CELLS, ids=_cell_id)
def test_transformer_stage(cell, sources, tmp_path, run_train, tokenizer_dir, tiny_prior_config):
    prior_json = tmp_path / "prior.json"
    prior_json.write_text(json.dumps(tiny_prior_config))

    def argv_of(output_dir, steps):
        return _transformer_argv(cell, sources, tmp_path, output_dir, steps, tokenizer_dir, prior_json)

    _train_and_resume(run_train, argv_of, "transformer/model.safetensors", cell, tmp_path)
    config = json.loads((tmp_path / "straight" / "transformer" / "config.json").read_text())
    assert config["num_classes"] == 2


def test_fp16_on_cpu_says_it_runs_in_fp32(sources, tmp_path, run_train, tiny_vqgan_json, caplog):
    cell = ("fp16", "imagefolder", False)
    with caplog.at_level(logging.WARNING, logger="hf_vqgan.training.loop"):
        run = run_train(_vqgan_argv(cell, sources, tmp_path, tmp_path / "out", 1, tiny_vqgan_json))
    assert run.returncode == 0
    assert "--mixed_precision fp16 runs in fp32 on a CPU" in caplog.text and "bf16" in caplog.text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_outputs_survive_accelerates_fp32_conversion(dtype):
    """accelerate's mixed-precision wrapper rebuilds a forward's output with `convert_to_fp32`, as
    `type(output)(dict)`: every output dataclass of the models must come back whole, in float32."""
    from accelerate.utils import convert_to_fp32

    from hf_vqgan.models.quantizer import QuantizerOutput
    from hf_vqgan.models.vqgan import VQGANDecoderOutput, VQGANEncoderOutput, VQGANModelOutput

    for output_class in (VQGANModelOutput, QuantizerOutput, VQGANEncoderOutput, VQGANDecoderOutput):
        names = list(output_class.__dataclass_fields__)
        values = {name: torch.full((2,), float(i), dtype=dtype) for i, name in enumerate(names)}
        converted = convert_to_fp32(output_class(**values))
        assert type(converted) is output_class and list(converted.keys()) == names
        for i, name in enumerate(names):
            assert getattr(converted, name).dtype == torch.float32 and torch.equal(
                converted[name], torch.full((2,), float(i))
            )


# ------------------------------------------------------------------------------ refused at start-up, by name
@pytest.mark.parametrize("stage", ["vqgan", "transformer"])
def test_a_batch_larger_than_the_training_split_is_refused_at_start_up(stage, sources, tmp_path, run_train, capsys,
                                                                     tiny_vqgan_json, tokenizer_dir):  # fmt: skip
    # 16 images, 4 held out: 12 train, fewer than the default batch of 32 (which used to wait forever at 0%).
    cell = ("no", "imagefolder", False)
    if stage == "vqgan":
        argv = _vqgan_argv(cell, sources, tmp_path, tmp_path / "out", 2, tiny_vqgan_json)
    else:
        prior_json = tmp_path / "prior.json"
        prior_json.write_text(json.dumps({"n_layer": 1, "n_embd": 32, "n_head": 2}))
        argv = _transformer_argv(cell, sources, tmp_path, tmp_path / "out", 2, tokenizer_dir, prior_json)
    argv[argv.index("--train_batch_size") + 1] = "32"
    expected = (r"--train_batch_size 32 on 1 process\(es\) needs at least 32 training examples, but the training "
                r"split has 12: pass --train_batch_size 12 or less")  # fmt: skip
    _assert_refused(run_train(argv), capsys, expected)


def test_an_epoch_without_a_batch_stops_the_loop_instead_of_waiting_forever(tmp_path):
    from argparse import Namespace

    from hf_vqgan.training.loop import TrainingRun

    args = Namespace(output_dir=str(tmp_path), checkpoints_total_limit=None, train_batch_size=4)
    run = TrainingRun(accelerator=None, args=args, max_steps=2)
    empty = torch.utils.data.DataLoader(list(range(3)), batch_size=4, drop_last=True)
    with pytest.raises(RuntimeError, match=r"An epoch of the training data gave no batch \(--train_batch_size 4\)"):
        next(run.batches(empty))


def test_a_text_class_column_is_refused_at_start_up(tmp_path, run_train, capsys, tokenizer_dir):
    folder = tmp_path / "named"
    folder.mkdir()
    rows = []
    for i in range(8):
        Image.fromarray(_shape(i), mode="L").save(folder / f"{i}.png")
        rows.append(f"{i}.png,{CLASS_NAMES[i % 2]}\n")
    (folder / "train.csv").write_text("image,shape\n" + "".join(rows))
    prior_json = tmp_path / "prior.json"
    prior_json.write_text(json.dumps({"n_layer": 1, "n_embd": 32, "n_head": 2}))
    argv = ["transformer", "--vqgan_model_name_or_path", tokenizer_dir, "--prior_config", prior_json,
            "--output_dir", tmp_path / "out", "--data_files", folder / "train.csv", "--class_column", "shape",
            "--tokenized_cache_dir", tmp_path / "tokens", "--report_to", "none", "--cache_dir", tmp_path / "cache"]  # fmt: skip
    _assert_refused(run_train(argv), capsys, r"Class column 'shape' of split 'train' is of type .*class_encode_")
    assert not (tmp_path / "tokens").exists()  # refused before any image was tokenised


def test_data_source_and_validation_split_options(train_script, capsys):
    assert train_script.main(["vqgan", "--train_data_dir", "f", "--data_files", "a.parquet"]) == 2
    assert (
        "error: Pass either --train_data_dir ('f') or --data_files (['a.parquet']), not both."
        in capsys.readouterr().err
    )
    stage = __import__("train_vqgan")  # importable once train.py ran: it puts examples/ on sys.path
    assert stage.parse_args(["--validation_split", "20"]).validation_split == 20  # a count of held-out examples
    assert stage.parse_args(["--validation_split", "0.2"]).validation_split == 0.2
    assert stage.parse_args(["--validation_split", "test"]).validation_split == "test"
    # A streamed prior stage counts its steps from the tokenised stream; the tokenizer stage cannot.
    transformer = __import__("train_transformer").parse_args(["--vqgan_model_name_or_path", "m", "--streaming"])
    assert transformer.streaming and transformer.max_train_steps is None
    args = stage.parse_args(["--data_files", "train.csv", "validation=val.csv"])
    assert args.data_files == ["train.csv", "validation=val.csv"]
    with pytest.raises(SystemExit):
        stage.parse_args(["--validation_split", "0"])
    assert "a held-out number of examples must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_streaming_run(sources, tmp_path, accelerate_launch, tiny_vqgan_json):
    """accelerate concatenates the batches of a stream read on the main process for both: tensors only."""
    out = tmp_path / "out"
    accelerate_launch(_vqgan_argv(("no", "imagefolder", True), sources, tmp_path, out, 2, tiny_vqgan_json),
                      num_processes=2)  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
