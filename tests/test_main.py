"""The command line: clear one-line errors, and a run that SIGTERM stops leaves a usable checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from pathlib import Path

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

ROOT = Path(__file__).resolve().parents[1]


def _main(*args, timeout=120, **kw):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "lmjax.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.parametrize("args, expected", [
    (["--config.train.num_stesp=4"], "unknown config field 'train.num_stesp'.*Did you mean "
                                     "train.num_steps"),
    (["--config.trian.num_steps=4"], "unknown config field 'trian.num_steps'.*Did you mean train"),
    (["--config.train.num_steps=abc"], "--config.train.num_steps=abc.*invalid"),
    (["--config.train.num_steps=-5"], "train.num_steps=-5: must be a positive"),
    (["--config.mesh.data=3"], "mesh .* needs a multiple of 3 devices"),
    (["--config.optim.name=adamx"], "optim.name='adamx' is not one of"),
    (["--config.data.name=tfds_typo"], "data.name='tfds_typo' is not a known source"),
])
def test_config_mistakes_fail_with_the_field_named(args, expected, tmp_path, data_cache):
    r = _main("--config=configs/gpt.py:tiny", f"--workdir={tmp_path}",
              f"--config.data.cache_dir={data_cache}", "--config.mesh.host_cpu_devices=1", *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()
    import re
    assert any(re.search(expected, line) for line in last), r.stderr


def test_missing_config_file_and_preset(tmp_path):
    r = _main("--config=configs/nope.py")
    assert r.returncode == 2 and "cannot load the config file 'configs/nope.py'" in r.stderr
    r = _main("--config=configs/gpt.py:huge")
    assert r.returncode == 2 and "unknown preset 'huge'" in r.stderr


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path, data_cache):
    common = ["--config=configs/gpt.py:tiny", f"--workdir={tmp_path}",
              f"--config.data.cache_dir={data_cache}", "--config.mesh.host_cpu_devices=1",
              "--config.train.log_every=1", "--config.checkpoint.every=100000"]
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "lmjax.main", *common,
                             "--config.train.num_steps=1000000"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert "SIGTERM: saved a checkpoint at step" in out
    saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert len(saved) == 1 and saved[0] >= 3
    step = saved[0]
    r = _main(*common, f"--config.train.num_steps={step + 2}")
    assert r.returncode == 0, r.stderr
    assert f"Resumed from step {step}" in r.stdout + r.stderr
    steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
    assert step + 2 in steps
