"""One command-line convention: every command is `python -m lmjax.<command>` (or `lmjax
<command>`), its --help shows its flags and an example, and a mistake is one `lmjax: error:`
line with exit status 2."""

import warnings
from pathlib import Path

import pytest

from lmjax.cli import COMMANDS
from lmjax.config import load_config, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_flags_and_an_example(command, run_module):
    r = run_module(COMMANDS[command], "--help")
    assert r.returncode == 0, r.stderr
    assert f"python -m {COMMANDS[command]}" in r.stdout  # the example
    assert "\n  --" in r.stdout  # the command's own flags, not only absl's
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("command, args, expected", [
    ("generate", [], "give --workdir"),
    ("serve", ["--workdir=/nonexistent"], "is not a directory"),
    ("evaluate", ["--workdir=/nonexistent"], "No checkpoints in /nonexistent"),
    ("convert", ["sideways"], "give one command: to_hf or from_hf"),
    ("quantize", ["--workdir=/tmp", "stray"], "unexpected arguments ['stray']"),
    ("bench", ["--config=configs/nope.py"], "cannot load the config file"),
    ("report", [], "give one or more run directories"),
])
def test_mistakes_are_one_line_with_status_2(command, args, expected, run_module):
    r = run_module(COMMANDS[command], *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert any(line.startswith("lmjax: error:") and expected in line
               for line in r.stderr.splitlines()), r.stderr


def test_the_console_script_dispatches_to_the_same_commands(run_module):
    r = run_module("lmjax")
    assert r.returncode == 2 and "lmjax generate" in r.stderr
    r = run_module("lmjax", "generate", "--help")
    assert r.returncode == 0 and "--max_new_tokens" in r.stdout


def test_the_old_name_of_eval_examples_still_works_and_says_so():
    cfg = load_config(str(ROOT / "configs" / "gpt.py:tiny"))
    cfg.train.eval_windows = 7
    with pytest.warns(FutureWarning, match="train.eval_windows is deprecated.*eval_examples"):
        validate(cfg)
    assert cfg.train.eval_examples == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(cfg)  # said once: the value now lives under the new name


@pytest.mark.parametrize("command, body, expected", [
    ("train", "def get_config():\n    x = 1\n    raise RuntimeError('boom')\n",
     "raised at line 3: RuntimeError: boom"),
    ("train", "def get_config(:\n    pass\n", "raised at line 1: SyntaxError: invalid syntax"),
    ("bench", "import os\nos.environ['NOPE']\n", "raised at line 2: KeyError: 'NOPE'"),
], ids=["raises", "syntax-error", "bench-raises-on-import"])
def test_a_config_file_that_raises_is_one_line_naming_file_and_line(command, body, expected,
                                                                    run_module, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(body)
    r = run_module(COMMANDS[command], f"--config={path}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"lmjax: error: the config file {path} {expected} (LMJAX_DEBUG=1 shows the traceback)"]


def test_lmjax_debug_shows_the_config_files_traceback(run_module, tmp_path, monkeypatch):
    path = tmp_path / "broken.py"
    path.write_text("def get_config():\n    raise RuntimeError('boom')\n")
    monkeypatch.setenv("LMJAX_DEBUG", "1")
    r = run_module(COMMANDS["train"], f"--config={path}")
    assert r.returncode == 1 and "Traceback" in r.stderr and f'"{path}", line 2' in r.stderr
