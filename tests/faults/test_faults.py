"""Fault injection: what lmjax promises when a run is killed, interrupted, short of disk or
write access, or finds its checkpoint damaged (docs/faults.md).

Each test asserts the promise: the run resumes from the last good step and ends with the
uninterrupted run's final loss, to 4 decimals; or it stops with one clear line; and nothing
readable is deleted. One 12-step tiny run (checkpoints every 4 steps, 2 kept) is the reference;
each program compiles once, into a compilation cache the other runs and subprocesses share.

The kill -9 loop takes LMJAX_FAULT_SEED (default 0) and LMJAX_FAULT_KILLS (default 1).
"""

import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from lmjax.checkpoint import STEP_METADATA, Checkpointer, CheckpointError
from lmjax.train import loop
from lmjax.train.logging import MetricLogger
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import evaluate_run, load_setup

# A restore that fails inside Orbax (a truncated file) leaves its coroutines unawaited.
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]
ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY, KEEP = 12, 4, 2
TRAIN_EVENTS = ("open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree")

# A training run in a fresh interpreter that SIGKILLs itself at the k-th Python-level file
# operation (create, write, rename, delete) under its checkpoint folder: every step of a save,
# in Orbax's background threads too, from the temporary folder to deleting the oldest step.
KILLED_CHILD = r"""
import json, os, signal, sys
overrides, workdir, kill_at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
EVENTS = set(json.loads(sys.argv[4]))
watched, seen = os.path.join(workdir, "checkpoints"), 0
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT

def hook(event, args):
    global seen
    if event not in EVENTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if not os.fsdecode(args[0]).startswith(watched):
        return
    if event == "open" and not (any(c in (args[1] or "") for c in "wax+")
                                or (args[2] or 0) & WRITE):
        return
    seen += 1
    if seen == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
sys.modules["torch"] = None  # tensorboardX imports it when present: 3 s this test does not need
from lmjax.config import load_config
from lmjax.train.loop import train_and_evaluate
cfg = load_config("configs/gpt.py:tiny")
cfg.update_from_flattened_dict(overrides)
train_and_evaluate(cfg, workdir)
print("FILE_OPERATIONS", seen)
"""

# Reading and then training a run whose workdir is mounted (or made) read-only.
READ_ONLY_CHILD = r"""
import json, sys
from lmjax.checkpoint import CheckpointError
from lmjax.config import load_config
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import load_setup
workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
out = {"restored_step": int(load_setup(workdir)[1].step)}
cfg = load_config("configs/gpt.py:tiny")
cfg.update_from_flattened_dict(overrides)
try:
    train_and_evaluate(cfg, workdir)
except CheckpointError as e:
    out["error"] = str(e)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def overrides(data_cache, tmp_path_factory) -> dict:
    return {"data.cache_dir": data_cache,
            "compilation_cache": str(tmp_path_factory.mktemp("jax_cache")),
            "mesh.data": 1, "train.num_steps": STEPS, "train.log_every": 2,
            "train.eval_every": 1000, "train.final_eval_examples": 16,
            "checkpoint.every": EVERY, "checkpoint.keep": KEEP, "sample.num_samples": 0,
            "log.tensorboard": True}


@pytest.fixture
def cfg(load_config, overrides):
    c = load_config("tiny")
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture(scope="module")
def reference(load_config, overrides, tmp_path_factory):
    """The uninterrupted run: (workdir, final train loss, final validation loss)."""
    c = load_config("tiny")
    c.update_from_flattened_dict(overrides)
    workdir = str(tmp_path_factory.mktemp("reference"))
    summary = train_and_evaluate(c, workdir)
    yield workdir, _records(workdir)[("train", STEPS)]["loss"], summary["val_loss"]
    # setup() switched the process's compilation cache on: leave later modules as they were.
    jax.config.update("jax_compilation_cache_dir", None)
    from jax._src import compilation_cache  # noqa: private, but the only way to let go of it
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def reference_setup(reference):
    """(Setup, state) of the reference run's last checkpoint."""
    return load_setup(reference[0])


def _records(workdir) -> dict:
    """{(split, step): record} of metrics.jsonl, asserting that each appears once."""
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        r = json.loads(line)
        assert (r["split"], r["step"]) not in out, f"{r['split']} step {r['step']} twice"
        out[(r["split"], r["step"])] = r
    return out


def _tensorboard_scalars(logdir) -> dict:
    """{(tag, step): value} as TensorBoard shows them: event files in order, and a session's
    start (purge_step) hides the earlier events at and after its step. Each point once."""
    from tensorboardX.proto import event_pb2
    points: dict = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            e = event_pb2.Event()
            e.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            if e.HasField("session_log") and e.session_log.status == e.session_log.START:
                points = {k: v for k, v in points.items() if k[1] < e.step}
            for v in e.summary.value:
                if v.HasField("simple_value"):
                    assert (v.tag, e.step) not in points, f"{v.tag} step {e.step} twice"
                    points[(v.tag, e.step)] = v.simple_value
    return points


def assert_same_outcome(workdir, reference, summary=None, resumed_from=None):
    """The promise after a fault: the uninterrupted run's final losses, and curves with one
    value per step in metrics.jsonl and in TensorBoard, equal to the reference's. After a
    kill -9 (`resumed_from` given), TensorBoard may lack the last events the killed process
    had queued: its points must then be the reference's, all of them after `resumed_from`."""
    ref_dir, train_loss, val_loss = reference
    records = _records(workdir)
    assert records[("train", STEPS)]["loss"] == pytest.approx(train_loss, abs=5e-5)
    if summary is not None:
        assert summary["val_loss"] == pytest.approx(val_loss, abs=5e-5)
    ref_train = {k: r["loss"] for k, r in _records(ref_dir).items() if k[0] == "train"}
    assert {k: r["loss"] for k, r in records.items() if k[0] == "train"} == \
        pytest.approx(ref_train, abs=5e-5)
    tb = {k: v for k, v in _tensorboard_scalars(os.path.join(workdir, "tensorboard")).items()
          if k[0] == "train/loss"}
    expected = {("train/loss", s): v for (_, s), v in ref_train.items()}
    if resumed_from is not None:
        assert {k for k in expected if k[1] > resumed_from} <= set(tb) <= set(expected)
        expected = {k: expected[k] for k in tb}
    assert tb == pytest.approx(expected, abs=5e-5)


def _copy(reference, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    return workdir


def _ckpt(workdir, step=None) -> Path:
    path = Path(workdir) / "checkpoints"
    return path if step is None else path / str(step)


def _committed(workdir) -> list[int]:
    return sorted(int(d) for d in os.listdir(_ckpt(workdir)) if d.isdigit())


def _snapshot(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in Path(path).rglob("*")
            if p.is_file()}


def _one_line(error) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


def flip(path, n: int = 64) -> None:
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    with open(path, "wb") as f:
        f.write(data)


def largest_state_file(workdir, step) -> Path:
    return max((p for p in (_ckpt(workdir, step) / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def garble_compressed_chunks(workdir) -> None:
    """Inverts 16 bytes inside each zstd frame (a compressed chunk) of the largest state file,
    past the frame's headers: TensorStore's reader fails before lmjax's digest check."""
    path = largest_state_file(workdir, STEPS)
    data = bytearray(path.read_bytes())
    frames = [m.start() for m in re.finditer(re.escape(ZSTD_MAGIC), data)]
    assert frames, f"no zstd frame in {path}: has Orbax stopped compressing?"
    for i in frames:
        data[i + 30:i + 46] = bytes(b ^ 0xFF for b in data[i + 30:i + 46])
    path.write_bytes(data)


ZSTD_MAGIC = bytes.fromhex("28b52ffd")
DAMAGE = {
    "same-size": lambda w: flip(largest_state_file(w, STEPS)),
    "compressed-chunk": garble_compressed_chunks,
    "truncated": lambda w: os.truncate(largest_state_file(w, STEPS),
                                       largest_state_file(w, STEPS).stat().st_size // 2),
    "no-step-metadata": lambda w: os.remove(_ckpt(w, STEPS) / STEP_METADATA),
    "no-tree-metadata": lambda w: os.remove(_ckpt(w, STEPS) / "state" / "_METADATA"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_stops_every_restore_untouched(damage, reference, cfg, tmp_path):
    """Resume, load_run (evaluate, serve, convert), init_from: each stops with one line naming
    the step and both fixes, and leaves the step as it found it."""
    workdir = _copy(reference, tmp_path)
    DAMAGE[damage](workdir)
    before = _snapshot(_ckpt(workdir, STEPS))
    fine_tune = cfg.copy_and_resolve_references()
    fine_tune.init_from = workdir
    for attempt in (lambda: train_and_evaluate(cfg, workdir), lambda: load_setup(workdir),
                    lambda: evaluate_run(workdir),
                    lambda: train_and_evaluate(fine_tune, str(tmp_path / "fine_tune"))):
        with pytest.raises(CheckpointError) as e:
            attempt()
        message = _one_line(e.value)
        assert f"{_ckpt(workdir, STEPS)} " in message
        assert "left untouched" in message
        assert f"--config.checkpoint.restore_step={STEPS - EVERY}" in message
        assert f"mv {_ckpt(workdir, STEPS)} {_ckpt(workdir, STEPS)}.damaged" in message
    if damage == "same-size":
        assert "is damaged: the state array" in message
    if damage == "compressed-chunk":  # named by TensorStore's reader, not the digest
        assert re.search(r"\(step 12\) is damaged: the state array \S+ cannot be read \(", message)
        assert "<bound method" not in message
    assert _snapshot(_ckpt(workdir, STEPS)) == before
    assert _committed(workdir) == [STEPS - EVERY, STEPS]


def test_restore_step_resumes_from_the_previous_checkpoint(reference, cfg, tmp_path):
    """The first fix: the damaged step is set aside (renamed, not deleted) and training redoes
    it from the step before, ending where the uninterrupted run ended."""
    workdir = _copy(reference, tmp_path)
    flip(largest_state_file(workdir, STEPS))
    damaged = _snapshot(_ckpt(workdir, STEPS))
    cfg.checkpoint.restore_step = STEPS - EVERY
    summary = train_and_evaluate(cfg, workdir)
    assert_same_outcome(workdir, reference, summary)
    assert _snapshot(f"{_ckpt(workdir, STEPS)}.set-aside") == damaged
    assert _committed(workdir) == [STEPS - EVERY, STEPS]
    cfg.checkpoint.restore_step = -1
    again = train_and_evaluate(cfg, workdir)  # verifies the new step 12: nothing to train
    assert again["val_loss"] == pytest.approx(summary["val_loss"], abs=1e-6)


def test_restore_step_must_name_a_saved_step(reference, cfg, tmp_path):
    from lmjax.config import ConfigError, validate
    for update, problem in (({"restore_step": -2}, "checkpoint.restore_step=-2"),
                            ({"restore_step": 4, "restore": False}, "needs checkpoint.restore")):
        bad = cfg.copy_and_resolve_references()
        bad.checkpoint.update(update)
        with pytest.raises(ConfigError, match=problem):
            validate(bad)
    workdir = _copy(reference, tmp_path)
    cfg.checkpoint.restore_step = 5
    with pytest.raises(CheckpointError) as e:
        train_and_evaluate(cfg, workdir)
    assert _one_line(e.value).endswith(f"has no checkpoint at that step (it has "
                                       f"[{STEPS - EVERY}, {STEPS}]).")


def test_moving_the_damaged_step_aside_resumes_from_the_previous_one(reference, cfg, tmp_path):
    """The second fix, as the message spells it."""
    workdir = _copy(reference, tmp_path)
    DAMAGE["truncated"](workdir)
    with pytest.raises(CheckpointError) as e:
        train_and_evaluate(cfg, workdir)
    command = _one_line(e.value).split("(mv ")[1].split(")")[0]
    src, dst = command.split(" ")
    os.rename(src, dst)
    assert_same_outcome(workdir, reference, train_and_evaluate(cfg, workdir))
    assert os.path.isdir(dst)


def test_kill_9_at_random_points_of_a_save(reference, reference_setup, cfg, overrides,
                                           tmp_path):
    """SIGKILL at a random file operation of a save (seeded); the same command then resumes
    from the last committed step and ends like the uninterrupted run. Every committed step
    restores and verifies, except that the oldest, if the kill came while Orbax deleted it,
    is reported damaged (never restored); one more step than checkpoint.keep can remain until
    the next save. LMJAX_FAULT_POINTS=3,81 kills at those file operations instead."""
    seed = int(os.environ.get("LMJAX_FAULT_SEED", "0"))
    kills = int(os.environ.get("LMJAX_FAULT_KILLS", "1"))
    ops = 81  # file operations of the run's 3 saves and 1 deletion (measured, Orbax 0.12.8)
    points = np.random.default_rng(seed).integers(1, ops + 1, size=kills)
    if os.environ.get("LMJAX_FAULT_POINTS"):
        points = [int(p) for p in os.environ["LMJAX_FAULT_POINTS"].split(",")]
        kills = len(points)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    width = os.cpu_count() or 1  # children mostly import and set up: one per core at a time
    for first in range(0, kills, width):
        batch = {i: str(tmp_path / f"kill_{i}") for i in range(first, min(first + width, kills))}
        procs = {i: subprocess.Popen(
            [sys.executable, "-c", KILLED_CHILD, json.dumps(overrides), workdir,
             str(points[i]), json.dumps(TRAIN_EVENTS)], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for i, workdir in batch.items()}
        for i, workdir in batch.items():
            out = procs[i].communicate(timeout=300)[0]
            assert procs[i].returncode == -signal.SIGKILL, \
                f"seed {seed} kill {i}: not killed at file operation {points[i]}: {out[-300:]}"
            steps = _committed(workdir) if os.path.isdir(_ckpt(workdir)) else []
            assert len(steps) <= KEEP + 1
            with Checkpointer(str(_ckpt(workdir))) as ckpt:
                for step in steps:
                    try:
                        assert int(reference_setup[0].restore(ckpt, step).step) == step
                    except CheckpointError:  # killed while Orbax deleted it: never restored
                        assert step == steps[0] and len(steps) == KEEP + 1, points[i]
            summary = train_and_evaluate(cfg, workdir)
            assert_same_outcome(workdir, reference, summary, max(steps, default=0))
            assert set(steps) - set(_committed(workdir)) <= {min(steps, default=None)}
            assert len(_committed(workdir)) <= KEEP + 1


def test_sigterm_saves_then_resumes(reference, cfg, tmp_path, monkeypatch):
    """A real SIGTERM, at a step that also saves on schedule (tests/test_main.py sends one
    between checkpoints): one checkpoint of that step, then the same command resumes."""
    workdir = str(tmp_path / "run")
    write = MetricLogger.write

    def write_then_sigterm(self, step, split, metrics, console=None):
        write(self, step, split, metrics, console)
        if (split, step) == ("train", 2 * EVERY):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(MetricLogger, "write", write_then_sigterm)
    with pytest.raises(loop.Preempted):
        train_and_evaluate(cfg, workdir)
    monkeypatch.undo()
    assert _committed(workdir) == [EVERY, 2 * EVERY]
    assert_same_outcome(workdir, reference, train_and_evaluate(cfg, workdir))


def _train_command(workdir, overrides) -> subprocess.CompletedProcess:
    """`lmjax train` on the tiny run, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "LMJAX_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "lmjax", "train", "--config=configs/gpt.py:tiny",
         f"--workdir={workdir}",
         *(f"--config.{k}={v}" for k, v in overrides.items())], cwd=ROOT,
        env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)


def _the_error_line(proc: subprocess.CompletedProcess) -> str:
    """A command stopped by a fault: a non-zero status, no traceback anywhere (nor Orbax's
    background echoes), and one `lmjax: error:` line, the last on stderr."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output and "Event loop is closed" not in output, output[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if "lmjax: error:" in line] == lines[-1:], proc.stderr[-3000:]
    return _one_line(lines[-1])


def test_disk_full_save_stops_with_one_line_then_resumes(reference, overrides, small_disk):
    """On a real full disk (a tmpfs with room for one and a half checkpoints) the command stops
    at step 8's save with one line naming that step, the last good one and the fix; step 4 stays
    whole, and once there is room the same command resumes from it."""
    workdir = small_disk.path / "run"
    one = small_disk.cost(_ckpt(reference[0], STEPS))  # one checkpoint, in this disk's pages
    small_disk.leave(one * 3 // 2 + 64 * 1024)  # and the run's small files
    line = _the_error_line(_train_command(workdir, overrides))
    assert line.startswith(f"lmjax: error: Saving the checkpoint of step 8 in {_ckpt(workdir)} "
                           "failed: No space left on device.")
    assert "(latest: step 4)" in line
    assert "free some space on that disk or pass another --workdir" in line
    assert "resume from step 4" in line
    assert _committed(workdir) == [4]
    small_disk.release()
    resumed = _train_command(workdir, overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from step 4 ({_ckpt(workdir)})" in resumed.stdout
    assert_same_outcome(workdir, reference)
    assert _records(workdir)[("val", STEPS)]["loss"] == pytest.approx(reference[2], abs=5e-5)


def test_unreadable_chunk_stops_the_command_with_one_line(reference, overrides, tmp_path):
    """A garbled compressed chunk fails in TensorStore's reader, below the digest check: the
    command still ends with one readable line (the step, both fixes), and nothing after it."""
    workdir = _copy(reference, tmp_path)
    garble_compressed_chunks(workdir)
    before = _snapshot(_ckpt(workdir, STEPS))
    line = _the_error_line(_train_command(workdir, overrides))
    assert f"{_ckpt(workdir, STEPS)} (step {STEPS}) is damaged: the state array " in line
    assert " cannot be read (" in line and "<bound method" not in line
    assert f"--config.checkpoint.restore_step={STEPS - EVERY}" in line
    assert _snapshot(_ckpt(workdir, STEPS)) == before


def _read_only_command(workdir) -> list[str] | None:
    """How to run a command that sees `workdir` read-only: chmod for a normal user; for root,
    whom permissions do not stop, a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        for path in [workdir, *glob.glob(os.path.join(workdir, "**"), recursive=True)]:
            os.chmod(path, os.stat(path).st_mode & 0o555)
        return []
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', workdir]


def test_read_only_workdir_restores_but_does_not_train(reference, overrides, tmp_path):
    workdir = _copy(reference, tmp_path)
    prefix = _read_only_command(workdir)
    if prefix is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    before = _snapshot(workdir)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_CHILD, workdir, json.dumps(overrides)],
            cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
            timeout=300)
    finally:
        subprocess.run(["chmod", "-R", "u+w", workdir])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.split("RESULT ")[1])
    assert out["restored_step"] == STEPS  # evaluate, serve, convert: reading needs no writes
    assert "\n" not in out["error"]
    assert out["error"].startswith(f"Cannot write to the workdir {workdir}")
    assert _snapshot(workdir) == before


def test_nan_soon_after_a_resume_names_the_checkpoint(reference, reference_setup, cfg,
                                                      tmp_path):
    """A checkpoint whose values were bad before they were saved (its digest matches): the loss
    is NaN right after resuming, and the message names the checkpoint, not only the rate."""
    workdir = _copy(reference, tmp_path)
    s, state = reference_setup
    os.rename(_ckpt(workdir, STEPS), f"{_ckpt(workdir, STEPS)}.elsewhere")
    bad = STEPS - EVERY + 2
    poisoned = state.replace(step=jax.numpy.full_like(state.step, bad),
                             params=jax.tree.map(lambda x: x * np.nan, state.params))
    with Checkpointer(str(_ckpt(workdir)), keep=KEEP + 1) as ckpt:
        ckpt.save(bad, poisoned, s.cfg.to_dict(), force=True)
    cfg.train.log_every = 1
    with pytest.raises(loop.Diverged) as e:
        train_and_evaluate(cfg, workdir)
    message = _one_line(e.value)
    assert f"at step {bad + 1}, soon after resuming from the checkpoint of step {bad}" in message
    assert f"may be damaged (resume from an earlier one with --config.checkpoint.restore_step=" \
        f"{STEPS - EVERY})" in message
    assert "learning_rate" in message


def test_logger_drops_what_a_resumed_run_logs_again(tmp_path):
    """Records after the resumed step (and a line a kill cut short) leave metrics.jsonl for
    metrics.superseded.jsonl; TensorBoard is told to hide the old events from that step on."""
    first = MetricLogger(str(tmp_path), echo=lambda s: None, start_step=0)
    for step in range(1, 7):
        first.write(step, "train", {"loss": 10.0 + step})
    first.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tra')  # killed mid-line
    time.sleep(1.1)  # event files are named by the second: a real restart takes longer
    second = MetricLogger(str(tmp_path), echo=lambda s: None, start_step=4)
    for step in range(5, 9):
        second.write(step, "train", {"loss": float(step)})
    second.close()
    records = _records(tmp_path)
    assert {s: r["loss"] for (_, s), r in records.items()} == \
        {1: 11.0, 2: 12.0, 3: 13.0, 4: 14.0, 5: 5.0, 6: 6.0, 7: 7.0, 8: 8.0}
    superseded = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in superseded[:2]] == [5, 6]
    assert superseded[2].startswith('{"step": 7, "split": "tra')
    points = _tensorboard_scalars(tmp_path / "tensorboard")
    assert {s: v for (_, s), v in points.items()} == \
        {1: 11.0, 2: 12.0, 3: 13.0, 4: 14.0, 5: 5.0, 6: 6.0, 7: 7.0, 8: 8.0}
