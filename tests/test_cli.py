"""One command-line convention: every command is `lmjax <command>` (or `python -m lmjax
<command>`), `lmjax --help` lists them all, each one's --help shows its flags and an example,
and a mistake is one `lmjax: error:` line with exit status 2."""

import os
import subprocess
import sys
import sysconfig
import tomllib
import warnings
from pathlib import Path

import pytest

from lmjax.cli import COMMANDS
from lmjax.config import load_config, validate
from lmjax.data import qa_shakespeare

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_flags_and_an_example(command, run_module):
    r = run_module(command, "--help")
    assert r.returncode == 0, r.stderr
    assert f"lmjax {command} " in r.stdout  # the example
    assert "\n  --" in r.stdout  # the command's own flags, not only absl's
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
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
    r = run_module(command, *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert any(line.startswith("lmjax: error:") and expected in line
               for line in r.stderr.splitlines()), r.stderr


def _listed(text: str) -> dict[str, str]:
    """The `  <command>  <summary>` rows under `commands:` in `lmjax --help`."""
    rows = [line.split(None, 1) for line in text.partition("\ncommands:\n")[2].splitlines()]
    return {row[0]: row[1] for row in rows}


def _console_script() -> str:
    """The installed `lmjax` script (`[project.scripts]`), beside this interpreter."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"lmjax": "lmjax.cli:main"}
    path = Path(sysconfig.get_path("scripts")) / "lmjax"
    if not path.exists():
        pytest.skip(f"the console script is not installed ({path}): pip install -e .")
    return str(path)


@pytest.mark.slow
def test_lmjax_help_lists_every_command_with_its_summary(run_module):
    r = run_module("--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert _listed(r.stdout) == COMMANDS
    r = subprocess.run([_console_script(), "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""))
    assert r.returncode == 0 and _listed(r.stdout) == COMMANDS, r.stderr


@pytest.mark.slow
def test_the_console_script_runs_the_same_commands(tmp_path):
    r = subprocess.run([_console_script(), "generate", "--help"], cwd=tmp_path, text=True,
                       capture_output=True, timeout=120, env=dict(os.environ, XLA_FLAGS=""))
    assert r.returncode == 0 and "--max_new_tokens" in r.stdout, r.stderr
    assert "lmjax generate --workdir=" in r.stdout


@pytest.mark.slow
def test_no_command_prints_the_list_and_fails(run_module):
    r = run_module("lmjax")
    assert r.returncode == 2 and _listed(r.stderr) == COMMANDS


@pytest.mark.slow
def test_an_unknown_command_is_one_line_naming_the_known_ones(run_module):
    r = run_module("genrate", "--workdir=runs/gpt")
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("lmjax: error: unknown command 'genrate': give one of ")
    assert all(command in line for command in COMMANDS), line


@pytest.mark.slow
def test_qa_data_writes_the_library_s_qa_set(run_module, tmp_path):
    r = run_module("qa_data", f"--out={tmp_path / 'command'}", "--seed=1")
    assert r.returncode == 0, r.stderr
    sizes = qa_shakespeare.write(str(tmp_path / "library"), seed=1)
    assert f"Wrote {sizes['train']} training and {sizes['val']} validation" in r.stdout
    for split in ("train", "val", "shots"):
        assert (tmp_path / "command" / f"{split}.jsonl").read_text() == \
            (tmp_path / "library" / f"{split}.jsonl").read_text()


@pytest.mark.slow
def test_python_m_lmjax_main_is_the_train_command(run_module):
    r = run_module("lmjax.main", "--help")
    assert r.returncode == 0 and "lmjax train --config=configs/gpt.py" in r.stdout, r.stderr


def test_the_old_name_of_eval_examples_still_works_and_says_so():
    cfg = load_config(str(ROOT / "configs" / "gpt.py:tiny"))
    cfg.train.eval_windows = 7
    with pytest.warns(FutureWarning, match="train.eval_windows is deprecated.*eval_examples"):
        validate(cfg)
    assert cfg.train.eval_examples == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(cfg)  # said once: the value now lives under the new name


@pytest.mark.slow
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
    r = run_module(command, f"--config={path}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"lmjax: error: the config file {path} {expected} (LMJAX_DEBUG=1 shows the traceback)"]


@pytest.mark.slow
def test_lmjax_debug_shows_the_config_files_traceback(run_module, tmp_path, monkeypatch):
    path = tmp_path / "broken.py"
    path.write_text("def get_config():\n    raise RuntimeError('boom')\n")
    monkeypatch.setenv("LMJAX_DEBUG", "1")
    r = run_module("train", f"--config={path}")
    assert r.returncode == 1 and "Traceback" in r.stderr and f'"{path}", line 2' in r.stderr
