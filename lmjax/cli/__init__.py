"""The commands: one module each, run as `python -m lmjax.<command>` or `lmjax <command>`.

Each command module has a docstring (its --help text, with an example), absl flags, and
`main(args)`; `common.run` gives them all the same flag parsing and the same one-line errors.
"""

from __future__ import annotations

import importlib
import sys

from lmjax.cli import common

# command -> how `python -m` spells it
COMMANDS = {
    "train": "lmjax.main",
    "evaluate": "lmjax.evaluate",
    "generate": "lmjax.generate",
    "serve": "lmjax.serve",
    "quantize": "lmjax.quantize",
    "convert": "lmjax.convert",
    "bench": "lmjax.bench",
    "bench_generate": "lmjax.bench_generate",
    "sweep": "lmjax.sweep",
    "report": "lmjax.report",
    "sklearn_baseline": "lmjax.sklearn_baseline",
    "prepare_data": "lmjax.prepare_data",
    "scrub": "lmjax.scrub",
    "exposure": "lmjax.exposure",
    "membership": "lmjax.membership",
    "robustness": "lmjax.robustness",
    "explain": "lmjax.explain",
    "compress_report": "lmjax.compress_report",
}
POSITIONAL = {"convert": 1, "report": 64}  # convert to_hf|from_hf; report <workdir> ...


def launch(name: str) -> None:
    common.run(importlib.import_module(f"lmjax.cli.{name}"), POSITIONAL.get(name, 0))


def main() -> None:
    """The `lmjax` console script: `lmjax <command> [flags]`."""
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        rows = "\n".join(f"  lmjax {c:<17} (python -m {m})" for c, m in COMMANDS.items())
        print(f"usage: lmjax <command> [flags]; lmjax <command> --help for its flags.\n\n"
              f"commands:\n{rows}", file=sys.stderr)
        sys.exit(0 if sys.argv[1:2] in (["--help"], ["-h"]) else 2)
    name = sys.argv.pop(1)
    sys.argv[0] = f"lmjax {name}"
    launch(name)
