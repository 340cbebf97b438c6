"""int8 weight quantization of a trained GPT or decoder-family model (Llama, Qwen, ...), saved
as its own run directory.

    lmjax quantize --workdir=runs/gpt --out=runs/gpt-int8
    lmjax generate --workdir=runs/gpt-int8 --prompt="ROMEO:"
    lmjax serve --workdir=runs/gpt-int8

Prints the size of the weights before and after (in memory and on disk) and, unless
--eval_examples=-1, the validation loss of both models on the run's held-out data (the only
step that reads the corpus). How: lmjax/infer/int8.py.
"""

from __future__ import annotations

from absl import flags

from lmjax.cli.common import require
from lmjax.infer.export import quantize_run

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to quantize.")
_OUT = flags.DEFINE_string("out", None, "The new directory (default: <workdir>-int8).")
_BEST = flags.DEFINE_bool("best", False, "Quantize the run's best checkpoint.")
_EVAL = flags.DEFINE_integer("eval_examples", 0, "Validation windows to compare the losses on "
                             "(0: the whole validation split; -1: skip, and read no data).")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained run to quantize.")
    quantize_run(workdir, _OUT.value or workdir.rstrip("/") + "-int8", _BEST.value, _EVAL.value)
