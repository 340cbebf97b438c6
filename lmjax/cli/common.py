"""What every command shares: flag parsing that names a wrong --config field, one way to fail
(`lmjax: error: <one line>`, exit status 2; LMJAX_DEBUG=1 shows the traceback instead), and
`--help` that prints the command's own text and flags."""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback
from types import ModuleType
from typing import NoReturn

from absl import app, flags, logging

from lmjax.config import ConfigError, load_config
from lmjax.data.corpora import DatasetError
from lmjax.data.shakespeare import CorpusMissingError

# Mistakes a user can fix: reported in one line, never as a traceback.
USER_ERRORS = (ConfigError, DatasetError, CorpusMissingError, ValueError, FileExistsError,
               FileNotFoundError)


def user_errors() -> tuple[type, ...]:
    """USER_ERRORS, and lmjax.checkpoint's error once a command has loaded that module (it
    imports JAX and Orbax, which a command such as prepare_data never needs: ~1 s and 100 MB)."""
    checkpoint = sys.modules.get("lmjax.checkpoint")
    return USER_ERRORS + ((checkpoint.CheckpointError,) if checkpoint else ())


def fail(message: str) -> NoReturn:
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


def config_arg(argv: list[str]) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")


def _config_file_error(error: BaseException, spec: str) -> str:
    """If `error` (or one it was raised from) came out of the config file itself, one line
    naming the file, the line and the exception; else ''."""
    path = os.path.realpath(spec.partition(":")[0]) if spec else ""
    seen = set()
    while error is not None and id(error) not in seen and path:
        seen.add(id(error))
        if isinstance(error, SyntaxError) and error.filename and \
                os.path.realpath(error.filename) == path:
            line = error.lineno
        else:
            line = next((lineno for frame, lineno in reversed(list(
                traceback.walk_tb(error.__traceback__)))
                if os.path.realpath(frame.f_code.co_filename) == path), None)
        if line is not None:
            text = " ".join(str(error.msg if isinstance(error, SyntaxError) else error).split())
            return (f"the config file {spec.partition(':')[0]} raised at line {line}: "
                    f"{type(error).__name__}: {text} (LMJAX_DEBUG=1 shows the traceback)")
        error = error.__cause__ or error.__context__
    return ""


def _fail_if_from_config_file(error: BaseException, argv: list[str]) -> None:
    """A config file that raised (anything, or a syntax error) is the user's to fix: one line,
    unless LMJAX_DEBUG=1 asks for the traceback."""
    message = _config_file_error(error, config_arg(argv))
    if message and os.environ.get("LMJAX_DEBUG"):
        raise error
    if message:
        fail(message)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with ml_collections' terse config errors turned into readable lines."""
    try:
        rest = flags.FLAGS(argv)
    except Exception as e:
        _fail_if_from_config_file(e, argv)
        if not isinstance(e, (AttributeError, KeyError, flags.Error)):
            raise
        _explain_flag_error(e, argv)
    if "config" in flags.FLAGS:
        try:
            flags.FLAGS["config"].value.keys()  # the file loads lazily: make it fail here
        except OSError as e:
            _fail_if_from_config_file(e, argv)  # e.g. it opened a file that is not there
            fail(f"cannot load the config file {config_arg(argv)!r}: pass an existing file, "
                 "e.g. --config=configs/gpt.py")
        except AttributeError:
            pass  # no --config given: the command says what it needs
    return rest


def _explain_flag_error(e: Exception, argv: list[str]) -> NoReturn:
    if isinstance(e, (AttributeError, KeyError)):
        # ml_collections says only "'key'"; find the override and name it in full.
        fail(_unknown_field(argv, load_config(config_arg(argv))) or
             "unknown config field on the command line.")
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')} {lines[-1]}")


def run(command: ModuleType, positional: int = 0) -> None:
    """Runs `command.main(args)` under absl. Its docstring is the --help text, its flags the
    ones listed; `positional` is how many bare arguments it takes (e.g. convert's to_hf)."""
    main_module = sys.argv[0]
    for flag in flags.FLAGS.get_key_flags_for_module(command):
        flags.FLAGS.register_key_flag_for_module(main_module, flag)
    sys.modules["__main__"].__doc__ = command.__doc__

    def main(argv: list[str]) -> None:
        logging.set_verbosity(logging.WARNING)  # no library chatter in the console
        args = argv[1:]
        if len(args) > positional:
            fail(f"unexpected arguments {args[positional:]} (see --help)")
        try:
            command.main(args)
        except Exception as e:
            if not isinstance(e, user_errors()) or os.environ.get("LMJAX_DEBUG"):
                raise
            fail(f"{e} (LMJAX_DEBUG=1 shows the traceback)")

    try:
        app.run(main, flags_parser=parse_flags)
    except SystemExit as e:
        asked = {"--help", "-h", "-?", "--helpshort", "--helpfull"} & set(sys.argv[1:])
        if asked and e.code == 1:
            sys.exit(0)  # absl ends --help with status 1; asking for help is not a failure
        raise


def require(value, message: str):
    """A flag the command needs: its value, or one error line saying what to give."""
    if value in (None, "", []):
        fail(message)
    return value


def default_workdir(config_arg: str) -> str:
    """runs/<config name>[-<preset>] for --config=configs/<name>.py[:<preset>]."""
    path, _, preset = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}-{preset}" if preset else name)
