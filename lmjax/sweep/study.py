"""Workers of a study: each process runs trials until the study's budget is used.

The study lives in a database (SQLite in the sweep directory unless a URL such as
postgresql://... is given), so any number of processes on one machine, or hosts sharing the URL,
can work on it together, and a killed sweep resumes when the same command runs again.

A trial is an ordinary run in `<sweep dir>/trials/<number>`. A trial whose worker died (killed,
SIGTERM, Ctrl-C) is run again with the same values in the same workdir, so it resumes from its
last checkpoint; a trial that failed by itself (NaN loss, an exception, a config that does not
validate) stays failed with its reason, and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import threading
import time
import traceback
from typing import Callable

import jax
import ml_collections
import numpy as np
import optuna
from optuna.trial import TrialState

from lmjax.sweep.results import STATES
from lmjax.sweep.spec import (Sweep, SweepError, make_pruner, make_sampler, suggest,
                              with_values)
from lmjax.train.crossval import fit
from lmjax.train.loop import Preempted

HEARTBEAT_S = 30      # a running trial stamps the time this often ...
STALE_AFTER_S = 300   # ... and counts as dead (on another host) when the stamp is this old
HOST = socket.gethostname()
# Fields that may differ between the workers of one study (hardware, paths, display).
_PER_WORKER = ("log.", "mesh.", "distributed.", "checkpoint.", "data.cache_dir", "sample.")

TrainFn = Callable[..., dict]


@contextlib.contextmanager
def local_lock(sweep_dir: str):
    """Serialises the workers of this machine while they pick trials (exact budgets and grids)."""
    with open(os.path.join(sweep_dir, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _storage(url: str):
    kwargs = {}
    if url.startswith("sqlite"):
        # Workers wait for each other's writes instead of failing with "database is locked".
        kwargs = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(sweep: Sweep, base_cfg: ml_collections.ConfigDict, sweep_dir: str,
               storage: str = "", study_name: str = "") -> optuna.Study:
    """Creates the study, or joins it after checking it was made by the same sweep and config."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
    os.makedirs(sweep_dir, exist_ok=True)
    url = storage or f"sqlite:///{os.path.abspath(sweep_dir)}/study.db"
    name = study_name or os.path.basename(os.path.abspath(sweep_dir))
    base = {k: v for k, v in _flat(base_cfg.to_dict()).items() if not k.startswith(_PER_WORKER)}
    definition = json.loads(json.dumps(sweep.definition()))
    with local_lock(sweep_dir):
        study = optuna.create_study(storage=_storage(url), study_name=name,
                                    direction=sweep.direction, load_if_exists=True)
        attrs = study.user_attrs
        if "sweep" not in attrs:
            study.set_user_attr("sweep", definition)
            study.set_user_attr("base_config", base)
        _check_same(attrs.get("sweep", definition), definition, "sweep", url, name)
        _check_same(attrs.get("base_config", base), base, "config", url, name)
        worker = attrs.get("workers", 0)
        study.set_user_attr("workers", worker + 1)
    # Each worker (and each restart) draws its own random stream, so none repeats another's values.
    seed = int(np.random.SeedSequence([sweep.seed, worker]).generate_state(1)[0])
    study.sampler = make_sampler(sweep, seed)
    study.pruner = make_pruner(sweep)
    return study


def _check_same(stored: dict, current: dict, what: str, url: str, name: str) -> None:
    diffs = [f"{k}: study {stored.get(k)!r}, now {current.get(k)!r}"
             for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
    if diffs:
        raise SweepError(
            f"the study {name!r} in {url} was started with a different {what}: "
            f"{'; '.join(diffs[:5])}{' ...' if len(diffs) > 5 else ''}. Run the same command "
            "to resume it (only the sweep's num_trials may change), or use another --workdir.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead(t: optuna.trial.FrozenTrial, now: float) -> bool:
    a = t.user_attrs
    if a.get("host") == HOST and a.get("pid") is not None:
        return not _alive(a["pid"])
    stamp = a.get("heartbeat") or t.datetime_start.timestamp()
    return now - stamp > STALE_AFTER_S


def reclaim(study: optuna.Study, echo=print) -> None:
    """Queues again every trial whose worker died or was interrupted (call under the lock)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    now = time.time()
    for t in trials:
        if t.number in retried:
            continue
        if t.state == TrialState.RUNNING and _dead(t, now):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            why, cause = "left running by a worker that died", "died"
        elif t.state == TrialState.FAIL and t.user_attrs.get("interrupted"):
            why, cause = "interrupted", "interrupted"
        else:
            continue
        # The dead trial stays FAIL in the database; the report counts it as retried (cause).
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retry_cause": cause,
                                                  "workdir": t.user_attrs.get("workdir")})
        echo(f"[sweep] trial {t.number} was {why}: it runs again with the same values "
             "(resuming from its last checkpoint).")


def used(trials: list) -> int:
    """Trials that count against the budget: all but those superseded by a retry."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(t.number not in retried for t in trials)


def _next_trial(study: optuna.Study, budget: int, sweep_dir: str, echo) -> optuna.Trial | None:
    with local_lock(sweep_dir):
        reclaim(study, echo)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and used(trials) >= budget:
            return None
        trial = study.ask()  # a queued retry first, else a new trial from the sampler
        for k, v in {"host": HOST, "pid": os.getpid(), "heartbeat": time.time()}.items():
            trial.set_user_attr(k, v)
        return trial


class _Heartbeat:
    """Stamps the trial's time every HEARTBEAT_S so workers on other hosts see it is alive."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.stop = trial, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self):
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _train(trial: optuna.Trial, sweep: Sweep, cfg: ml_collections.ConfigDict, run_dir: str,
           train_fn: TrainFn, progress: dict, echo) -> tuple[TrialState, float | None, str]:
    """Trains the trial's run: (state, objective value, note). A trial's own failure is an
    outcome; interruptions and mistakes in the sweep file propagate."""
    metric = sweep.metric

    def on_eval(step: int, metrics: dict) -> None:
        if metric not in metrics:
            raise SweepError(f"the sweep's metric {metric!r} is not among this task's validation "
                             f"metrics ({', '.join(metrics)}): set metric in the sweep file.")
        progress["step"] = step
        trial.report(float(metrics[metric]), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({metric} {metrics[metric]:.4g})")

    try:
        summary = train_fn(cfg, run_dir, on_eval=on_eval)
    except optuna.TrialPruned as e:
        return TrialState.PRUNED, None, str(e)
    except (SweepError, Preempted):
        raise
    except Exception as e:  # the trial failed by itself; the sweep goes on
        if os.environ.get("LMJAX_DEBUG"):
            echo(traceback.format_exc())
        return TrialState.FAIL, None, _reason(e)
    progress["step"] = summary.get("step", progress["step"])
    if f"val_{metric}" not in summary:
        raise SweepError(f"the sweep's metric {metric!r} is not in the run's summary "
                         f"({', '.join(summary)}): set metric in the sweep file.")
    value = float(summary[f"val_{metric}"])
    if not math.isfinite(value):
        return TrialState.FAIL, None, f"the final {metric} is {value}"
    return TrialState.COMPLETE, value, f"{metric} {value:.4f}"


def run_trial(study: optuna.Study, trial: optuna.Trial, sweep: Sweep,
              base_cfg: ml_collections.ConfigDict, sweep_dir: str, train_fn: TrainFn,
              echo=print) -> TrialState:
    values = suggest(trial, sweep.space)
    rel = trial.user_attrs.get("workdir") or os.path.join("trials", f"{trial.number:04d}")
    trial.set_user_attr("workdir", rel)
    echo(f"[sweep] trial {trial.number}: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                   else f"{k}={v}" for k, v in values.items()))
    progress, t0 = {"step": 0}, time.time()
    try:
        with _Heartbeat(trial):
            cfg = with_values(base_cfg, values, f"trial {trial.number}")
            state, value, note = _train(trial, sweep, cfg, os.path.join(sweep_dir, rel),
                                        train_fn, progress, echo)
    except (KeyboardInterrupt, Preempted, SweepError) as e:
        # Not this trial's fault: the next run of the sweep runs it again (after the user fixes
        # the sweep file, for a SweepError).
        trial.set_user_attr("interrupted", not isinstance(e, SweepError))
        trial.set_user_attr("note", _reason(e))
        study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        jax.clear_caches()  # compiled steps of finished trials would pile up in this process
    trial.set_user_attr("steps", int(progress["step"]))
    trial.set_user_attr("wall_time_s", time.time() - t0)
    if state != TrialState.COMPLETE:
        trial.set_user_attr("note", note)
    study.tell(trial, value, state=state)
    echo(f"[sweep] trial {trial.number} {STATES[state]} after {time.time() - t0:.0f}s: {note}")
    return state


def run_worker(study: optuna.Study, sweep: Sweep, base_cfg: ml_collections.ConfigDict,
               sweep_dir: str, train_fn: TrainFn | None = None, echo=print) -> int:
    """Runs trials until the budget is used; returns how many this worker ran."""
    train_fn = train_fn or fit
    ran = 0
    while (trial := _next_trial(study, sweep.budget(), sweep_dir, echo)) is not None:
        run_trial(study, trial, sweep, base_cfg, sweep_dir, train_fn, echo)
        ran += 1
    return ran
