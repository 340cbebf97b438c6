"""Evaluate a saved run over a whole split, on one device.

    lmjax evaluate --workdir=runs/fashion_mnist-cnn --split=test
    lmjax evaluate --workdir=runs/gpt --split=val --max_examples=512

Takes the run's best checkpoint where it kept one (early stopping), else its latest; the model
and tokenizer come from the run directory, and the split is read (text re-encoded with the
run's own tokenizer). Prints the metrics as JSON.
"""

from __future__ import annotations

import json

from absl import flags

from lmjax.cli.common import require
from lmjax.train.restore import evaluate_run

_WORKDIR = flags.DEFINE_string("workdir", None, "The run to evaluate.")
_SPLIT = flags.DEFINE_string("split", "val", "Which split: val, or test where the task has one.")
_LATEST = flags.DEFINE_bool("latest", False, "The latest checkpoint even if a best one exists.")
_MAX = flags.DEFINE_integer("max_examples", 0, "Evaluate at most this many examples (0: all).")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the run to evaluate.")
    metrics = evaluate_run(workdir, _SPLIT.value, best=not _LATEST.value,
                           max_examples=_MAX.value)
    print(json.dumps(metrics, indent=1))
