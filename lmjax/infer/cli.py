"""What the inference commands (generate, serve, quantize, convert) share at start-up."""

from __future__ import annotations

import sys
from typing import NoReturn

from absl import logging


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def start(prog: str, argv: list[str], workdir: str | None,
          what: str = "a run's workdir or an int8 export directory") -> None:
    """Quiet library logs, no stray arguments, a --workdir given."""
    logging.set_verbosity(logging.WARNING)  # no library chatter in the console
    if len(argv) > 1:
        fail(prog, f"unexpected arguments {argv[1:]}")
    if not workdir:
        fail(prog, f"give --workdir: {what}.")


def load_or_fail(prog: str, path: str, best: bool = False, tasks=("lm",)):
    """`lmjax.infer.load.load`, with its errors as one line on stderr."""
    from lmjax.checkpoint import CheckpointError
    from lmjax.infer.load import load

    try:
        return load(path, best=best, tasks=tasks)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        fail(prog, str(e))
