"""Command line: int8 weight quantization of a trained GPT, saved as its own directory.

    python -m lmjax.quantize --workdir=runs/gpt --out=runs/gpt-int8
    python -m lmjax.generate --workdir=runs/gpt-int8 --prompt="ROMEO:"
    python -m lmjax.serve --workdir=runs/gpt-int8

Prints the size of the weights before and after (in memory and on disk) and the validation
loss of both models on the run's held-out data. How: lmjax/infer/quantize.py.
"""

from __future__ import annotations

from absl import app, flags

from lmjax.infer.cli import fail, start

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run to quantize.")
_OUT = flags.DEFINE_string("out", None, "The new directory (default: <workdir>-int8).")
_BEST = flags.DEFINE_bool("best", False, "Quantize the run's best checkpoint.")
_EVAL = flags.DEFINE_integer("eval_windows", 0, "Validation windows to compare the losses on "
                             "(0: the whole validation split; -1: skip).")


def main(argv) -> None:
    start("lmjax.quantize", argv, _WORKDIR.value, "the trained run to quantize")
    from lmjax.checkpoint import CheckpointError
    from lmjax.infer.quantize import quantize_run

    out = _OUT.value or _WORKDIR.value.rstrip("/") + "-int8"
    try:
        quantize_run(_WORKDIR.value, out, _BEST.value, _EVAL.value)
    except (CheckpointError, ValueError, FileExistsError) as e:
        fail("lmjax.quantize", str(e))


if __name__ == "__main__":
    app.run(main)
