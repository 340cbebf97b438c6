"""Two processes on localhost stand in for a two-host pod: one global mesh, one checkpoint."""

import json
import pytest
import os
import socket
import subprocess
import sys
from pathlib import Path

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(workdir):
    rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], round(r["loss"], 5)) for r in rows]


def _command(workdir, data_cache, *extra):
    return [sys.executable, "-m", "lmjax.main", "--config=configs/gpt.py:tiny",
            f"--workdir={workdir}", f"--config.data.cache_dir={data_cache}",
            "--config.train.num_steps=10", "--config.sample.num_samples=0",
            "--config.log.tensorboard=False", *extra]


def test_two_processes_train_like_one_and_write_one_checkpoint(tmp_path, data_cache):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    port = _free_port()
    pod = tmp_path / "pod"
    procs = [subprocess.Popen(
        _command(pod, data_cache, "--config.distributed.initialize=True",
                 f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                 "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                 "--config.distributed.cpu_devices_per_process=2"),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "4 x cpu in 2 process(es)" in outs[0]

    # The same global batch on 4 devices of one process gives the same losses.
    single = tmp_path / "single"
    r = subprocess.run(_command(single, data_cache, "--config.mesh.host_cpu_devices=4"), cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert _losses(pod) == _losses(single)

    # One ordinary process on one device restores the pod's checkpoint whole.
    r = subprocess.run(_command(pod, data_cache, "--config.mesh.host_cpu_devices=1"), cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "Resumed from step 10" in r.stdout + r.stderr
    vals = [loss for step, split, loss in _losses(pod) if split == "val" and step == 10]
    assert len(vals) == 2 and vals[0] == vals[1]  # at the end of training, and restored
