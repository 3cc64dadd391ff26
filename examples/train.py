#!/usr/bin/env python
"""Train a VQGAN tokenizer (stage 1) or its autoregressive prior (stage 2) with accelerate and datasets.

    accelerate launch examples/train.py vqgan --preset digits-tiny --output_dir outputs/vqgan
    accelerate launch examples/train.py transformer --vqgan_model_name_or_path outputs/vqgan \\
        --class_column label --output_dir outputs/pipeline
    accelerate launch examples/train.py tokenize --vqgan_model_name_or_path outputs/vqgan \\
        --class_column label --output_dir outputs/tokens     # codes of a dataset, extracted once, shareable

With no dataset option both stages use the built-in scikit-learn digits. `train.py STAGE --help` lists a stage's
flags. This entry point only dispatches: each stage reads top to bottom in a file of its own,
`examples/train_vqgan.py`, `examples/train_transformer.py` and `examples/train_tokenize.py`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from hf_vqgan.loading import CorruptFileError
from hf_vqgan.losses import LPIPSWeightsUnavailableError
from hf_vqgan.training.checkpointing import CheckpointError
from hf_vqgan.training.data import DatasetConfigError
from hf_vqgan.training.state import NonFiniteLossError

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("train")
# stage name -> (the module beside this file, its entry function)
STAGES = {
    "vqgan": ("train_vqgan", "train"),
    "transformer": ("train_transformer", "train"),
    "tokenize": ("train_tokenize", "extract"),
}


def main(argv: list[str] | None = None) -> int:
    """Run a stage with the rest of `argv`; returns the exit code (2 for bad options, 1 for a failed run)."""
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=list(STAGES), help="`train.py STAGE --help` lists the stage's flags.")
    parser.add_argument("stage_arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    entry = parser.parse_args(argv)
    if str(HERE) not in sys.path:  # also when this file is imported by path, as the tests do
        sys.path.insert(0, str(HERE))
    module_name, entry_function = STAGES[entry.stage]
    stage = importlib.import_module(module_name)
    try:
        args = stage.parse_args(entry.stage_arguments)
    except ValueError as error:  # contradictory options: one line, no stack trace
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        metrics = getattr(stage, entry_function)(args)
    except DatasetConfigError as error:  # refused at start-up, before the first step: the data does not fit the flags
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (
        CheckpointError,
        CorruptFileError,
        FileNotFoundError,
        LPIPSWeightsUnavailableError,
        NonFiniteLossError,
    ) as error:
        # Each message names the file or value at fault and says what to do instead: one line, no stack trace.
        logger.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return 1
    if metrics:
        logger.info("Final metrics: %s", json.dumps(metrics, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
