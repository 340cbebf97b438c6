"""Command line: `python -m lmjax.main --config=configs/gpt.py [--workdir=DIR] [--config.a.b=v]`.

Flags only: the config and workdir go to the trainer. Mistakes in either are reported in one line
that names the field and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lmjax.checkpoint import CheckpointError
from lmjax.config import ConfigError, load_config
from lmjax.data.corpora import DatasetError
from lmjax.data.shakespeare import CorpusMissingError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with a preset: configs/gpt.py:gpt2_124m",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and TensorBoard files go "
    "(default: runs/<config name>[-<preset>]).")

USER_ERRORS = (ConfigError, DatasetError, CheckpointError, CorpusMissingError, ValueError)


def _fail(message: str) -> None:
    print(f"lmjax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _unknown_field(argv: list[str], config) -> str:
    """Finds which --config.a.b override names a field the config does not have."""
    for arg in argv:
        match = re.match(r"--config\.([\w.]+)", arg)
        if not match:
            continue
        node, path = config, match.group(1).split(".")
        for depth, key in enumerate(path):
            if not hasattr(node, "keys") or key not in node.keys():
                where = ".".join(path[:depth]) or "the config"
                options = list(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(key, options, n=1)
                hint = f" Did you mean {'.'.join(path[:depth] + close)}?" if close else ""
                return (f"unknown config field '{'.'.join(path)}' (from {arg}): {where} has "
                        f"{', '.join(options)}.{hint}")
            node = node[key]
    return ""


def _config_arg(argv: list[str]) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")


def _defaults(argv: list[str]):
    """The config as its file defines it, before any override."""
    return load_config(_config_arg(argv))


def parse_flags(argv: list[str]) -> list[str]:
    try:
        rest = flags.FLAGS(argv)
    except (AttributeError, KeyError):
        # ml_collections says only "'key'"; find the override and name it in full.
        _fail(_unknown_field(argv, _defaults(argv)) or "unknown config field on the command line.")
    except flags.Error as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # A config file that raised: its own last line says what went wrong.
        _fail(lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')} {lines[-1]}")
    try:
        _CONFIG.value.keys()  # the file is loaded lazily: make it fail here, if it fails
    except OSError:
        _fail(f"cannot load the config file {_config_arg(argv)!r}: pass an existing file, e.g. "
              "--config=configs/gpt.py")
    except AttributeError:
        pass  # no --config given: main() says so
    return rest


def default_workdir(config_arg: str) -> str:
    path, _, preset = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}-{preset}" if preset else name)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's start-up chatter out of the console
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config=configs/gpt.py")
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    from lmjax.parallel.mesh import split_host_cpu
    from lmjax.train.loop import Diverged, Preempted, train_and_evaluate  # heavy imports later

    split_host_cpu(config)

    try:
        train_and_evaluate(config, workdir)
    except Preempted:
        sys.exit(143)  # the conventional status for "terminated by SIGTERM": schedulers retry
    except (*USER_ERRORS, Diverged) as e:
        if os.environ.get("LMJAX_DEBUG"):
            raise
        _fail(f"{e}\n(set LMJAX_DEBUG=1 for the traceback)")


def run() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
