"""examples/train.py refuses bad arguments before any work: contradictory options exit 2 with one `error: ...` line,
malformed ones with argparse's message. Each regex names the bad value (or the option) and the expectation."""

from __future__ import annotations

import re

import pytest

# fmt: off
CONTRADICTIONS = [
    ("dataset and folder", ["vqgan", "--dataset_name", "d", "--train_data_dir", "f"], r"Pass either --dataset_name \('d'\) or --train_data_dir \('f'\), not both"),
    ("push without id", ["vqgan", "--push_to_hub"], r"--push_to_hub needs --hub_model_id"),
    ("ema_decay 1.5", ["vqgan", "--ema_decay", "1.5"], r"--ema_decay must be in \(0, 1\), got 1\.5"),
    ("learning_rate 0", ["vqgan", "--learning_rate", "0"], r"--learning_rate must be a positive number, got 0\.0"),
    ("learning_rate nan", ["transformer", "--vqgan_model_name_or_path", "m", "--learning_rate", "nan"], r"--learning_rate must be a positive number, got nan"),
    ("streaming without steps", ["vqgan", "--streaming"], r"--streaming datasets have no length: pass --max_train_steps"),
    ("two model sources", ["vqgan", "--preset", "digits-tiny", "--model_config", "c.json"], r"Pass at most one of --preset, --model_config and --pretrained_model_name_or_path"),
    ("pkeep 1.5", ["transformer", "--vqgan_model_name_or_path", "m", "--pkeep", "1.5"], r"--pkeep must be in \[0, 1\] and --class_dropout_prob in \[0, 1\); got 1\.5, 0\.1"),
    ("class dropout 1", ["transformer", "--vqgan_model_name_or_path", "m", "--class_dropout_prob", "1"], r"got 1\.0, 1\.0"),
    ("condition without tokenizer", ["transformer", "--vqgan_model_name_or_path", "m", "--condition_type", "edges"], r"--condition_type and --cond_vqgan_model_name_or_path go together"),
    ("depth without column", ["vqgan", "--condition_type", "depth"], r"--condition_type depth reads paired maps: pass --condition_column"),
    ("segmentation labels", ["vqgan", "--condition_type", "segmentation", "--condition_column", "s", "--num_labels", "1"], r"--condition_type segmentation needs --num_labels >= 2, got 1"),
    # A tokenizer or the token dataset that names one (issue 19; before it, argparse required the tokenizer).
    ("transformer without tokenizer", ["transformer"], r"Pass --vqgan_model_name_or_path \(the tokenizer whose codes the prior learns\), or --tokenized_dataset"),
    ("token dataset and images", ["transformer", "--tokenized_dataset", "t", "--dataset_name", "d"], r"--tokenized_dataset 't' fixes the data and how it was tokenised .*so --dataset_name cannot apply"),
    ("revision without token dataset", ["transformer", "--vqgan_model_name_or_path", "m", "--tokenized_dataset_revision", "v1"], r"--tokenized_dataset_revision is the revision of a --tokenized_dataset: pass one"),
    ("token dataset and settings", ["transformer", "--tokenized_dataset", "t", "--class_column", "c", "--resolution", "64", "--condition_type", "edges"], r"so --class_column, --resolution, --condition_type cannot apply"),
]
# fmt: on


@pytest.mark.parametrize("argv, message", [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS])
def test_contradictory_options_are_refused(train_script, capsys, argv, message):
    assert train_script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


# fmt: off
MALFORMED = [
    ("batch size 0", ["vqgan", "--train_batch_size", "0"], r"argument --train_batch_size: expected a positive integer, got 0"),
    ("batch size text", ["vqgan", "--train_batch_size", "eight"], r"argument --train_batch_size: invalid positive_int value: 'eight'"),
    ("max_grad_norm < 0", ["vqgan", "--max_grad_norm", "-1"], r"argument --max_grad_norm: expected a finite number >= 0, got -1"),
    ("validation split 1.5", ["vqgan", "--validation_split", "1.5"], r"argument --validation_split: a held-out fraction must be in \(0, 1\), got 1\.5"),
    ("mixed precision", ["vqgan", "--mixed_precision", "fp8"], r"argument --mixed_precision: invalid choice: 'fp8'"),
    ("unknown stage", ["gan"], r"argument stage: invalid choice: 'gan'"),
    ("disc loss", ["vqgan", "--disc_loss", "wgan"], r"argument --disc_loss: invalid choice: 'wgan'"),
]
# fmt: on


@pytest.mark.parametrize("argv, message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_options_are_rejected_by_the_parser(train_script, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
