"""A table of a run and its compressed variants: size on disk, parameters (and nonzero ones),
sparsity counted in the checkpoint, inference throughput, test metric.

    lmjax compress_report --workdir=runs/cnn \
        --variants=pruned80=runs/cnn-p80,channels50=runs/cnn-c50,distilled=runs/mlp-kd --int8

Each variant is NAME=RUN_DIRECTORY (any run: pruned with prune.target_sparsity, distilled with
distill.teacher, or narrowed by lmjax compress_report --structured=FRACTION). --int8
adds the run's int8-weight model. --structured=0.5 --out=DIR first writes the run with half of
its CNN channels / MLP units removed (L1 norm) as a new run directory, and lists it. The table
is printed and written to <workdir>/compression.md (and .json). How: lmjax/compress/.
"""

from __future__ import annotations

import json
import os

from absl import flags

from lmjax.cli.common import fail, require
from lmjax.compress import compare, structured

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run (the dense, float baseline).")
_VARIANTS = flags.DEFINE_list("variants", [], "NAME=RUN_DIRECTORY pairs, comma-separated.")
_INT8 = flags.DEFINE_bool("int8", False, "Add the run's int8-weight model.")
_STRUCTURED = flags.DEFINE_float("structured", 0.0, "> 0: first export the run with this share "
                                 "of its channels/units removed to --out, and list it.")
_OUT = flags.DEFINE_string("out", "", "Where --structured writes (default: "
                           "<workdir>-channels<percent>).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed forward passes per variant.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained run to compare against.")
    variants = [("baseline", workdir)]
    for item in _VARIANTS.value:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            fail(f"--variants: {item!r} is not NAME=RUN_DIRECTORY "
                 "(e.g. --variants=pruned80=runs/cnn-p80).")
        if not os.path.isdir(path):
            fail(f"--variants: {path!r} ({name}) is not a directory; give a run's --workdir.")
        variants.append((name, path))
    if _STRUCTURED.value:
        out = _OUT.value or f"{workdir.rstrip('/')}-channels{round(100 * _STRUCTURED.value)}"
        try:
            structured.export(workdir, out, _STRUCTURED.value)
        except ValueError as e:
            fail(str(e))
        variants.append((f"channels -{_STRUCTURED.value:.0%}", out))
    rows = compare.measure(variants, _REPEATS.value, with_int8=_INT8.value)
    text = compare.table(rows)
    print(text)
    with open(os.path.join(workdir, "compression.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(workdir, "compression.json"), "w") as f:
        json.dump(rows, f, indent=1)
