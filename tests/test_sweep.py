"""Hyperparameter sweeps: samplers, budgets, pruning, failures, resuming and shared studies.

Most tests stand a known function of the config in for training (`fake_train`), so they check the
sweep itself in milliseconds per trial; one test runs the real command with real tiny trials.
"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lmjax.config import validate
from lmjax.models.gpt import GPTConfig
from lmjax.sweep import SweepError, load_sweep, open_study, results, run_worker, write_report
from lmjax.sweep.results import current_trials, retried
from lmjax.sweep.spec import check_against_config, with_values
from lmjax.train.loop import Diverged, Preempted

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_train(cfg, workdir, on_eval=None):
    """Training stand-in: the validation loss is (log10(lr) + 2.5)^2 + dropout, reported at every
    evaluation with a 1/step excess; lr >= 0.5 diverges, lr == 0.25 raises; each call is logged
    in <workdir>/calls.txt."""
    # As the trainer does first: a config that cannot work raises ConfigError (the sections
    # every run has, then the model's typed config).
    validate(cfg)
    GPTConfig.from_section(cfg.model)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "calls.txt"), "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(float(os.environ.get("FAKE_TRAIN_SECONDS", "0")))
    lr = cfg.optim.learning_rate
    if lr >= 0.5:
        raise Diverged("The training loss is nan at step 3.")
    if lr == 0.25:
        raise RuntimeError("out of memory\nmore detail")
    final = (math.log10(lr) + 2.5) ** 2 + cfg.model.dropout
    for step in range(cfg.train.eval_every, cfg.train.num_steps, cfg.train.eval_every):
        if on_eval is not None:
            on_eval(step, {"loss": final + 1.0 / step, "accuracy": 0.5})
    return {"step": cfg.train.num_steps, "wall_time_s": 0.0, "val_loss": final,
            "val_accuracy": 0.5}


def write_sweep(path, **fields):
    fields.setdefault("space", {"optim.learning_rate": ("log_uniform", 1e-4, 1e-1)})
    fields.setdefault("num_steps", 30)
    fields.setdefault("overrides", {"train.eval_every": 10})
    fields.setdefault("pruner", "none")
    Path(path).write_text(f"def get_sweep():\n    return {fields!r}\n")
    return str(path)


def prepare(cfg, tmp_path, **fields):
    """Loads a sweep file and opens its study in tmp_path/sweep."""
    sweep = load_sweep(write_sweep(tmp_path / "sweep.py", **fields))
    base = with_values(cfg, {"train.num_steps": sweep.num_steps, **sweep.overrides}, "overrides")
    return open_study(sweep, base, str(tmp_path / "sweep")), sweep, base


def run(cfg, tmp_path, **fields):
    """Runs one worker of the sweep to the end of its budget."""
    study, sweep, base = prepare(cfg, tmp_path, **fields)
    ran = run_worker(study, sweep, base, str(tmp_path / "sweep"), train_fn=fake_train,
                     echo=lambda s: None)
    return study, sweep, ran


@pytest.fixture
def cfg(tiny_config):
    tiny_config.mesh.data = 1
    tiny_config.sample.num_samples = 0
    return tiny_config


@pytest.mark.parametrize("algorithm", ["grid", "random", "tpe", "gp"])
def test_each_algorithm_completes_a_sweep(cfg, tmp_path, algorithm):
    space = {"optim.learning_rate": ("log_uniform", 1e-4, 1e-1), "model.dropout":
             ("categorical", [0.0, 0.1]), "optim.warmup_steps": ("int", 0, 20, 5)}
    if algorithm == "grid":
        space["optim.learning_rate"] = ("categorical", [1e-3, 3e-3])
    fields = dict(algorithm=algorithm, space=space, num_trials=6, startup_trials=3, seed=1)
    if algorithm == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            with pytest.raises(SweepError, match="algorithm='gp' needs PyTorch"):
                run(cfg, tmp_path, **fields)
            return
    study, sweep, ran = run(cfg, tmp_path, **fields)
    trials = current_trials(study)
    assert ran == len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        lr, dropout = t.params["optim.learning_rate"], t.params["model.dropout"]
        assert 1e-4 <= lr <= 1e-1 and dropout in (0.0, 0.1)
        assert t.params["optim.warmup_steps"] in (0, 5, 10, 15, 20)
        # The value is the function of exactly these settings: the trial ran with them.
        assert t.value == pytest.approx((math.log10(lr) + 2.5) ** 2 + dropout)
        assert (tmp_path / "sweep" / t.user_attrs["workdir"] / "calls.txt").exists()


def test_a_grid_visits_exactly_its_grid(cfg, tmp_path):
    lrs, dropouts = [1e-3, 3e-3, 1e-2], [0.0, 0.2]
    space = {"optim.learning_rate": ("categorical", lrs), "model.dropout": ("categorical", dropouts)}
    study, sweep, ran = run(cfg, tmp_path, algorithm="grid", space=space, num_trials=0)
    visited = [(t.params["optim.learning_rate"], t.params["model.dropout"])
               for t in current_trials(study)]
    assert sorted(visited) == sorted(itertools.product(lrs, dropouts))
    # Running the command again finds the grid done and runs nothing.
    study, sweep, ran = run(cfg, tmp_path, algorithm="grid", space=space, num_trials=0)
    assert ran == 0 and len(study.trials) == 6


def test_a_hopeless_trial_is_pruned(cfg, tmp_path):
    study, sweep, base = prepare(cfg, tmp_path, algorithm="random", num_trials=2,
                                 pruner="median", pruner_startup_trials=1)
    # A good rate first, then one far worse at every evaluation.
    for lr in (3e-3, 1e-1):
        study.enqueue_trial({"optim.learning_rate": lr})
    run_worker(study, sweep, base, str(tmp_path / "sweep"), train_fn=fake_train)
    good, bad = sorted(current_trials(study), key=lambda t: t.number)
    assert good.state == TrialState.COMPLETE
    assert bad.state == TrialState.PRUNED
    assert list(bad.intermediate_values) == [10]  # stopped at its first evaluation
    assert bad.user_attrs["steps"] == 10 and "pruned at step 10" in bad.user_attrs["note"]


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_sweep_goes_on(cfg, tmp_path):
    space = {"optim.learning_rate": ("categorical", [0.5, 0.25, 1e-3]),
             "model.num_heads": ("categorical", [2, 3])}  # d_model=32: 3 heads do not divide it
    study, sweep, _ = run(cfg, tmp_path, algorithm="grid", space=space, num_trials=0)
    by_params = {(t.params["optim.learning_rate"], t.params["model.num_heads"]): t
                 for t in current_trials(study)}
    assert len(by_params) == 6
    assert by_params[(1e-3, 2)].state == TrialState.COMPLETE
    assert by_params[(0.5, 2)].user_attrs["note"] == "Diverged: The training loss is nan at step 3."
    assert by_params[(0.25, 2)].user_attrs["note"] == "RuntimeError: out of memory"
    assert "num_heads=3" in by_params[(1e-3, 3)].user_attrs["note"]
    assert sum(t.state == TrialState.FAIL for t in by_params.values()) == 5
    report = write_report(study, sweep, str(tmp_path / "sweep"), "configs/gpt.py:tiny", {})
    assert "Diverged: The training loss is nan" in report and "1 complete, 5 failed" in report


def test_a_sweep_resumes_with_a_larger_budget_and_refuses_another_sweep(cfg, tmp_path):
    study, _, ran = run(cfg, tmp_path, algorithm="random", num_trials=2)
    assert ran == 2
    study, _, ran = run(cfg, tmp_path, algorithm="random", num_trials=5)
    trials = current_trials(study)
    assert ran == 3 and len(trials) == 5
    assert len({t.params["optim.learning_rate"] for t in trials}) == 5  # no trial repeated
    for t in trials:  # and none ran twice
        calls = (tmp_path / "sweep" / t.user_attrs["workdir"] / "calls.txt").read_text()
        assert len(calls.split()) == 1
    with pytest.raises(SweepError, match="different sweep: space"):
        run(cfg, tmp_path, algorithm="random", num_trials=5,
            space={"optim.learning_rate": ("log_uniform", 1e-5, 1e-1)})
    cfg.model.d_model = 64
    with pytest.raises(SweepError, match="different config: model.d_model: study 32, now 64"):
        run(cfg, tmp_path, algorithm="random", num_trials=5)


def test_an_interrupted_trial_runs_again_in_its_own_workdir(cfg, tmp_path):
    def preempted(c, workdir, on_eval=None):  # SIGTERM arrived: the trainer saved and stopped
        fake_train(c, workdir, on_eval)
        raise Preempted(5)

    study, sweep, base = prepare(cfg, tmp_path, algorithm="random", num_trials=2)
    with pytest.raises(Preempted):
        run_worker(study, sweep, base, str(tmp_path / "sweep"), train_fn=preempted)
    (first,) = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"]
    study, sweep, ran = run(cfg, tmp_path, algorithm="random", num_trials=2)
    retry, other = sorted(current_trials(study), key=lambda t: t.number)
    assert ran == 2 and retry.user_attrs["retry_of"] == first.number
    assert retry.params == first.params and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["workdir"] == first.user_attrs["workdir"]  # so training resumes
    calls = tmp_path / "sweep" / retry.user_attrs["workdir"] / "calls.txt"
    assert len(calls.read_text().split()) == 2
    assert retried(study) == "1 retried after an interruption"


def test_a_metric_the_task_does_not_have_stops_the_sweep(cfg, tmp_path):
    with pytest.raises(SweepError, match=r"metric 'f1_macro' is not among this task's validation "
                                         r"metrics \(loss, accuracy\)"):
        run(cfg, tmp_path, metric="f1_macro", direction="maximize", num_trials=3)
    (trial,) = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path}/sweep/study.db"
                                 ).trials  # one trial, failed and not to be run again
    assert trial.state == TrialState.FAIL and not trial.user_attrs["interrupted"]


@pytest.mark.parametrize("fields, message", [
    (dict(algorithm="bayes"), "algorithm='bayes': use one of 'grid'"),
    (dict(num_trial=3), "unknown sweep field 'num_trial'; did you mean 'num_trials'"),
    (dict(space={"optim.learning_rate": ("loguniform", 1e-4, 1e-2)}), "start with one of"),
    (dict(space={"optim.learning_rate": ("log_uniform", 0.0, 1e-2)}), "low > 0"),
    (dict(algorithm="grid", space={"optim.learning_rate": ("uniform", 0.1, 0.2)}),
     "a grid needs the values to visit"),
    (dict(space={"optim.learning_rat": ("uniform", 0.1, 0.2)}),
     "no field 'optim.learning_rat'; did you mean 'optim.learning_rate'"),
    (dict(space={"optim.warmup_steps": ("uniform", 0.5, 20.0)}),
     r"optim.warmup_steps=0.5 does not fit the config field's type \(int\)"),
    (dict(space={"train.eval_every": ("int", 5, 20)}), "train.eval_every is both searched"),
])
def test_sweep_mistakes_fail_before_any_trial_with_the_field_named(cfg, tmp_path, fields, message):
    with pytest.raises(SweepError, match=message):
        sweep = load_sweep(write_sweep(tmp_path / "s.py", **fields))
        check_against_config(sweep, cfg, {})


def _worker_script(tmp_path) -> str:
    """A worker process on the fake trainer (sleeping FAKE_TRAIN_SECONDS per trial)."""
    script = tmp_path / "worker.py"
    script.write_text(f"""
import runpy, sys
from lmjax.sweep import load_sweep, open_study, run_worker
from lmjax.sweep.spec import with_values
fake_train = runpy.run_path({str(Path(__file__))!r})["fake_train"]
cfg = runpy.run_path({str(ROOT / "configs" / "gpt.py")!r})["get_config"]("tiny")
sweep = load_sweep(sys.argv[1])
base = with_values(cfg, {{"train.num_steps": sweep.num_steps, **sweep.overrides}}, "overrides")
study = open_study(sweep, base, sys.argv[2])
print("ran", run_worker(study, sweep, base, sys.argv[2], train_fn=fake_train), flush=True)
""")
    return str(script)


def _worker(tmp_path, sweep_file, seconds):
    env = dict(os.environ, FAKE_TRAIN_SECONDS=str(seconds), JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))  # the script lives in tmp_path
    return subprocess.Popen([sys.executable, _worker_script(tmp_path), sweep_file,
                             str(tmp_path / "sweep")], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _load(tmp_path):
    return optuna.load_study(study_name="sweep",
                             storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    lrs = [1e-3, 2e-3, 4e-3]
    sweep_file = write_sweep(tmp_path / "s.py", algorithm="grid", num_trials=0,
                             space={"optim.learning_rate": ("categorical", lrs)})
    proc = _worker(tmp_path, sweep_file, seconds=3)
    second = tmp_path / "sweep" / "trials" / "0001" / "calls.txt"
    deadline = time.time() + 120
    while not second.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # in the middle of trial 1: nothing can clean up
    proc.wait()
    states = {t.number: t.state for t in _load(tmp_path).trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.RUNNING}

    out, _ = _worker(tmp_path, sweep_file, seconds=0).communicate(timeout=120)
    assert "trial 1 was left running by a worker that died" in out, out
    trials = current_trials(_load(tmp_path))
    assert sorted(t.params["optim.learning_rate"] for t in trials) == lrs
    assert all(t.state == TrialState.COMPLETE for t in trials)
    calls = {t.params["optim.learning_rate"]:
             len((tmp_path / "sweep" / t.user_attrs["workdir"] / "calls.txt").read_text().split())
             for t in trials}
    # The finished trial ran once; the killed one ran again in its own workdir (so a real run
    # resumes from its checkpoint); the last one once.
    assert calls == {1e-3: 1, 2e-3: 2, 4e-3: 1}
    # The database keeps the killed trial as failed; the report says it was retried.
    monkeypatch.setattr(results, "plots", lambda study, out_dir: ([], []))  # 6 s, not needed
    report = write_report(_load(tmp_path), load_sweep(sweep_file), str(tmp_path / "sweep"),
                          "configs/gpt.py:tiny", {})
    assert "3 of 3 trials: 3 complete; 1 retried after its worker died." in report, report
    assert "failed" not in report and "| retry of trial 1 |" in report


@pytest.mark.slow
def test_two_worker_processes_share_one_study(tmp_path):
    sweep_file = write_sweep(tmp_path / "s.py", algorithm="random", num_trials=6)
    procs = [_worker(tmp_path, sweep_file, seconds=1.0) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trials = _load(tmp_path).trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both took part
    assert sorted(int(o.split("ran")[-1]) for o in outs)[0] >= 1
    assert len({t.params["optim.learning_rate"] for t in trials}) == 6  # distinct draws


@pytest.mark.slow
def test_the_command_runs_real_trials_and_writes_the_report(tmp_path, data_cache):
    sweep_file = write_sweep(
        tmp_path / "s.py", algorithm="grid", num_trials=0, num_steps=4, pruner="none",
        overrides={"train.eval_every": 2, "train.eval_examples": 8, "train.final_eval_examples": 8,
                   "optim.warmup_steps": 1, "optim.name": "adamw", "sample.num_samples": 0},
        space={"model.num_heads": ("categorical", [2, 3])})  # 3 does not divide d_model=32
    workdir = tmp_path / "sweep"
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "lmjax", "sweep", "--config=configs/gpt.py:tiny",
                        f"--sweep={sweep_file}", f"--workdir={workdir}",
                        f"--config.data.cache_dir={data_cache}",
                        "--config.mesh.host_cpu_devices=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 complete, 1 failed" in r.stdout
    assert "ConfigError: model.d_model=32 must be divisible by model.num_heads=3" in r.stdout
    best = (workdir / "best_command.txt").read_text()
    assert best.startswith("lmjax train --config=configs/gpt.py:tiny --config.train."
                           "num_steps=4 ") and "--config.model.num_heads=2 " in best
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{workdir / 'study.db'}")
    trial = workdir / study.best_trial.user_attrs["workdir"]  # an ordinary run
    assert (trial / "checkpoints" / "4").is_dir()
    info = json.loads((trial / "run_info.json").read_text())
    assert info["config"]["model"]["num_heads"] == 2 and info["config"]["train"]["num_steps"] == 4
    records = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["split"] == "val" and r["step"] == 4]
    assert study.best_value == pytest.approx(final[-1]["loss"])
    for name in ("history", "importances", "parallel_coordinates", "intermediate_values"):
        png = (workdir / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000, name
    import matplotlib.image
    assert matplotlib.image.imread(workdir / "plots" / "history.png").ndim == 3
