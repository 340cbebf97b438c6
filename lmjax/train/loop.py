"""The one training loop: every model family runs through `train_and_evaluate`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import tempfile
import threading
import time
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from lmjax import rundir
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import from_stored
from lmjax.data.prefetch import Prefetcher
from lmjax.eval import calibration, harness
from lmjax.eval.evaluate import evaluate
from lmjax.parallel import mesh as meshlib
from lmjax.train.logging import (MetricLogger, confusion_image, format_seconds, is_scalar,
                                 scalar_metrics)
from lmjax.train.restore import load_run
from lmjax.tasks import state_defining
from lmjax.tasks.base import DECODES
from lmjax.train.setup import Setup, setup

# Settings that change the shape or meaning of the saved state: a checkpoint written with other
# values cannot be resumed by this config. The whole model section counts, except the fields
# below, which only change how the same weights are computed; each training switch adds its own
# (lmjax/tasks/__init__.py: state_defining), with what a config without them means.
STATE_DEFINING = ("task", "model", "data.name", "data.tokenizer", "data.vocab_size", "optim.name")
COMPUTE_ONLY = ("dropout", "dtype", "attention", "remat")
# A loss that turns NaN within this many steps of a resume names the checkpoint as a suspect.
RESUME_WINDOW = 100


class Preempted(Exception):
    """Raised when SIGTERM stopped training after saving a checkpoint."""


class Diverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class _StopFlag:
    """Set by SIGTERM; the loop saves a checkpoint and stops at the next step boundary."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:  # every host must agree on the step to stop at
            return multihost_utils.reached_preemption_sync_point(step)
        return self.raised


def _incompatibilities(stored: dict, cfg: ml_collections.ConfigDict) -> list[str]:
    # Compared as JSON, which is how the checkpoint stored them (tuples come back as lists), in
    # today's field names.
    current = json.loads(json.dumps(cfg.to_dict()))
    stored = json.loads(json.dumps(from_stored(stored).to_dict()))
    switches = state_defining()

    def get(tree, path):
        for key in path.split("."):
            tree = tree.get(key) if isinstance(tree, dict) else None
        return tree

    diffs = []
    for path in STATE_DEFINING + tuple(switches):
        old, new = get(stored, path), get(current, path)
        old = switches.get(path) if old is None else old
        new = switches.get(path) if new is None else new
        if isinstance(new, dict):
            for f in sorted(set(old or {}) | set(new)):
                if f not in COMPUTE_ONLY and (old or {}).get(f) != new.get(f):
                    diffs.append(f"{path}.{f}: checkpoint {(old or {}).get(f)!r}, "
                                 f"config {new.get(f)!r}")
        elif old != new:
            diffs.append(f"{path}: checkpoint {old!r}, config {new!r}")
    return diffs


class Monitor:
    """Watches one validation metric: remembers the best value and when patience runs out."""

    def __init__(self, cfg: ml_collections.ConfigDict, progress: dict | None = None):
        t = cfg.train
        self.metric, self.mode, self.patience = t.early_stopping_metric, t.early_stopping_mode, \
            t.patience
        progress = progress or {}
        self.best = progress.get("best")
        self.best_step = progress.get("best_step")
        self.bad_evals = progress.get("bad_evals", 0)

    @property
    def active(self) -> bool:
        return bool(self.metric)

    def update(self, step: int, metrics: dict) -> bool:
        """True when `metrics` is the best so far."""
        if not self.active:
            return False
        if self.metric not in metrics:
            raise ValueError(f"train.early_stopping_metric={self.metric!r} is not a validation "
                             f"metric of this task; it has {', '.join(sorted(metrics))}.")
        value = metrics[self.metric]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.active and self.patience > 0 and self.bad_evals >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       on_eval: Callable[[int, dict], None] | None = None) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the final metrics.

    `on_eval(step, metrics)` is called after every periodic validation (hyperparameter sweeps
    report to their pruner there); an exception it raises stops training. (k-fold
    cross-validation calls this once per fold: lmjax/train/crossval.py.)
    """
    meshlib.initialize_distributed(cfg.distributed)
    main_process = jax.process_index() == 0
    echo = (lambda s: tqdm.write(s)) if main_process else (lambda s: None)
    _check_writable(workdir)
    s = setup(cfg, log=echo)
    echo(f"Devices: {jax.device_count()} x {jax.devices()[0].device_kind} in "
         f"{jax.process_count()} process(es); mesh {dict(s.mesh.shape)}")
    os.makedirs(workdir, exist_ok=True)
    if main_process:  # before the first step: what inference needs, without the data
        rundir.write(workdir, s.task.run_assets())
    with Checkpointer(rundir.checkpoint_dir(workdir), keep=cfg.checkpoint.keep) as ckpt, \
            Checkpointer(rundir.checkpoint_dir(workdir, best=True), keep=1) as best_ckpt:
        latest = ckpt.latest_step() if cfg.checkpoint.restore else None
        restore_step = cfg.checkpoint.get("restore_step", -1)
        if restore_step >= 0 and restore_step not in ckpt.all_steps():
            raise CheckpointError(
                f"checkpoint.restore_step={restore_step}: {ckpt.directory} has no checkpoint at "
                f"that step (it has {ckpt.all_steps() or 'none'}).")
        if restore_step >= 0:
            latest = restore_step
        progress = {}
        if latest is None:
            state = s.new_state()
            if cfg.init_from:
                state = _init_from(cfg.init_from, s, state, echo)
        else:
            diffs = _incompatibilities(ckpt.stored_config(latest), cfg)
            if diffs:
                raise CheckpointError(
                    f"The checkpoint in {ckpt.directory} (step {latest}) was written by a "
                    f"different setup: {'; '.join(diffs)}. Use the same settings to resume, or "
                    "another --workdir.")
            state = s.restore(ckpt, latest)
            progress = _with_best(ckpt.progress(latest), best_ckpt, latest)
            echo(f"Resumed from step {latest} ({ckpt.directory}).")
            if restore_step >= 0:  # only once the chosen step has restored whole
                moved = ckpt.set_aside_after(restore_step)
                if moved:
                    echo(f"checkpoint.restore_step={restore_step}: the later checkpoints were "
                         f"renamed, not deleted: {', '.join(moved)}. Leave the flag out of "
                         "later runs, which resume from this run's own checkpoints.")
        run = _Run(cfg=cfg, workdir=workdir, setup=s, task=s.task, mesh=s.mesh, ckpt=ckpt,
                   best_ckpt=best_ckpt, echo=echo, on_eval=on_eval,
                   monitor=Monitor(cfg, progress), train_step=s.train_step(),
                   eval_step=s.eval_step())
        return _train(run, state)


def _with_best(progress: dict, best_ckpt: Checkpointer, latest: int) -> dict:
    """The monitor's progress at `latest`, with the best evaluation the best checkpoint holds:
    a run's final evaluation can find a new best after its last regular save, and a run
    trained further must compare against it."""
    step = best_ckpt.latest_step()
    best = best_ckpt.progress(step) if step is not None else {}
    if best.get("best_step") is not None and best["best_step"] <= latest and (
            progress.get("best_step") is None or best["best_step"] > progress["best_step"]):
        return {**progress, "best": best["best"], "best_step": best["best_step"]}
    return progress


def _check_writable(workdir: str) -> None:
    """Training writes checkpoints and metrics: a workdir it cannot write to stops it before any
    work is done, with nothing in it changed. (Reading a run needs no write access.)"""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise CheckpointError(
            f"Cannot write to the workdir {workdir} ({e.strerror or e}): training needs it for "
            "checkpoints and metrics. Nothing in it was changed; make it writable or pass "
            "another --workdir.") from None


def _init_from(source: str, s: Setup, state, echo):
    """Starting weights from another run (pretraining -> fine-tuning): its best checkpoint if it
    kept one, else its latest."""
    best = rundir.has_best(source)
    _, _, source_state = load_run(source, s.mesh, best=best)
    params = s.task.load_pretrained(state.params, source_state.params)
    echo(f"Initialised from {source} ({'best' if best else 'latest'} checkpoint, step "
         f"{int(source_state.step)}).")
    return state.replace(params=jax.device_put(params, s.shardings.params))


@dataclasses.dataclass
class _Run:
    """Everything the loop needs besides the state that changes."""
    cfg: ml_collections.ConfigDict
    workdir: str
    setup: Setup
    task: object
    mesh: object
    ckpt: Checkpointer
    best_ckpt: Checkpointer
    echo: Callable[[str], None]
    on_eval: Callable[[int, dict], None] | None
    monitor: Monitor
    train_step: Callable
    eval_step: Callable
    logger: MetricLogger | None = None

    def evaluate(self, state, step: int, max_examples: int, split: str = "val",
                 label: str | None = None) -> dict:
        t = time.time()
        metrics = evaluate(self.task, self.eval_step, state.params, state.model_state, self.mesh,
                           max_examples, self.cfg.train.batch_size, split)
        metrics.update(self.task.extra_metrics(step))  # e.g. DP-SGD's epsilon spent by now
        scalars, shown = scalar_metrics(metrics)
        self.logger.write(step, label or split, scalars, f"{shown} | {time.time() - t:.1f}s")
        for k, v in metrics.items():
            if not is_scalar(v):  # per-class tables and confusion matrices
                self.logger.text(step, f"{label or split}/{k}", json.dumps(v))
        if "confusion_matrix" in metrics:
            self.logger.image(step, f"{label or split}/confusion_matrix",
                              confusion_image(metrics["confusion_matrix"]))
        if "reliability" in metrics and (label or split != "val") and jax.process_index() == 0:
            # The reliability diagram of the final evaluations, as a PNG and in TensorBoard.
            tag = label or split
            self.logger.image(step, f"{tag}/reliability", calibration.reliability_figure(
                metrics["reliability"], os.path.join(self.workdir, f"reliability_{tag}.png"),
                tag))
        return metrics

    def harness(self, state, step: int) -> dict:
        """lm-eval's tasks of eval.harness_tasks on the current weights, in process
        (lmjax/eval/harness.py), logged as the split 'harness'; returns the scores."""
        t, e = time.time(), self.cfg.eval
        model, params = self.task.plain_model(state.params)
        results = harness.run(
            model, params, self.task.tokenizer, harness.tasks(self.cfg),
            include_path=e.harness_include_path, limit=e.harness_limit,
            num_fewshot=e.harness_num_fewshot, batch_size=e.harness_batch_size,
            max_gen_toks=e.harness_max_gen_toks, seed=self.cfg.seed)
        scalars, shown = scalar_metrics(harness.scalars(results))
        self.logger.write(step, "harness", scalars, f"{shown} | {time.time() - t:.1f}s")
        return scalars

    def save(self, step: int, state, force: bool = False) -> bool:
        return self.ckpt.save(step, state, self.cfg.to_dict(), self.monitor.state(), force=force)


def _train(run: _Run, state) -> dict:
    """The loop proper, from a created or restored state to the final evaluation."""
    cfg, task, echo = run.cfg, run.task, run.echo
    main_process = jax.process_index() == 0
    num_steps = cfg.train.num_steps
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    echo(f"Model: {n_params / 1e6:.2f}M parameters; data: {task.describe()}")
    if main_process:
        with open(os.path.join(run.workdir, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=1)
    if harness.tasks(cfg) and (DECODES not in task.capabilities or jax.process_count() > 1):
        raise ValueError("eval.harness_tasks evaluates a model that generates text (task lm or "
                         "sft), in one process; leave it empty for this run.")

    start = int(state.step)
    run.logger = logger = MetricLogger.for_run(cfg, run.workdir, echo=echo, start_step=start)
    examples_per_step = cfg.train.batch_size * task.tokens_per_example
    unit = "tok" if task.tokens_per_example > 1 else "ex"
    pidx, pcount = jax.process_index(), jax.process_count()
    bar = tqdm(total=num_steps, initial=start, disable=not (cfg.log.progress_bar and main_process),
               unit="step", dynamic_ncols=True, leave=False)
    t_run = time.time()
    stopped_early = False
    try:
        def make_batch(step: int) -> dict:
            return meshlib.global_batch(task.train_batch(step, pidx, pcount), run.mesh)

        with _StopFlag() as stop, \
                Prefetcher(make_batch, start, num_steps, cfg.data.prefetch) as batches:
            t_last, step_last, metrics = None, start, None
            for step, batch in batches:
                previous = metrics if step > start else None
                state, metrics = run.train_step(state, batch)
                done = step + 1
                if previous is not None:
                    # At most two steps in flight: with unbounded async dispatch, XLA's CPU
                    # collectives can starve each other's threads and deadlock (seen on 2 devices).
                    jax.block_until_ready(previous)
                if t_last is None:  # the first step compiled: time from here on
                    jax.block_until_ready(state)
                    echo(f"Compiled and ran the first step in {time.time() - t_run:.1f}s")
                    t_last, step_last = time.time(), done
                bar.update(1)
                if done % cfg.train.log_every == 0 or done == num_steps:
                    m = jax.device_get(metrics)
                    if not math.isfinite(m["loss"]):
                        raise Diverged(_diverged(m["loss"], done, start, run))
                    now = time.time()
                    line = f"loss {m['loss']:.4f} | lr {m['lr']:.2e}"
                    if done > step_last:  # not right after compiling, evaluating or saving
                        rate = (done - step_last) / max(now - t_last, 1e-9)
                        m[f"{'tokens' if unit == 'tok' else 'examples'}_per_s"] = \
                            rate * examples_per_step
                        eta = format_seconds((num_steps - done) / rate)
                        per_s = rate * examples_per_step
                        shown = f"{per_s / 1e3:.1f}k" if per_s >= 1e3 else f"{per_s:.0f}"
                        line += f" | {shown} {unit}/s | ETA {eta}"
                    logger.write(done, "train", m, line)
                    bar.set_postfix(loss=f"{m['loss']:.3f}")
                    t_last, step_last = now, done
                paused = False
                if done % cfg.train.eval_every == 0 and done != num_steps:
                    val = run.evaluate(state, done, cfg.train.eval_examples)
                    if task.may_be_best(done) and run.monitor.update(done, val):
                        run.best_ckpt.save(done, state, cfg.to_dict(), run.monitor.state(),
                                           force=True)
                    if run.on_eval is not None:
                        run.on_eval(done, val)
                    paused = True
                    if run.monitor.should_stop:
                        echo(f"Early stopping at step {done}: validation "
                             f"{run.monitor.metric} has not improved for {run.monitor.patience} "
                             f"evaluations (best {run.monitor.best:.4f} at step "
                             f"{run.monitor.best_step}).")
                        run.save(done, state, force=True)
                        stopped_early = True
                        break
                if harness.due(cfg, done) and done != num_steps:
                    run.harness(state, done)
                    paused = True
                if done % cfg.checkpoint.every == 0 or done == num_steps:
                    paused |= run.save(done, state)
                if paused:  # keep evaluation and saving out of the throughput figures
                    t_last, step_last = time.time(), done
                if stop.should_stop(done):
                    run.save(done, state, force=True)
                    run.ckpt.wait()
                    echo(f"SIGTERM: saved a checkpoint at step {done}. "
                         "Run the same command to resume.")
                    raise Preempted(done)
        bar.close()
        if start >= num_steps:
            echo(f"The checkpoint is at step {start}, train.num_steps={num_steps}: nothing to "
                 "train; evaluating it. Raise --config.train.num_steps to train further.")
        elif run.monitor.should_stop and not stopped_early:
            echo("This run had already stopped early; evaluating it.")
        run.ckpt.wait()
        summary = _final_evaluation(run, state)
        if harness.tasks(cfg):
            scores = run.harness(state, int(state.step))
            summary.update({f"harness_{k}": v for k, v in scores.items()})
        final, texts = task.end_of_training(state.params, state.model_state)
        if final:
            logger.write(int(state.step), "final", final)
            summary.update(final)
        for i, text in enumerate(texts):
            echo(f"--- sample {i} ---\n{text}")
            logger.text(int(state.step), f"sample_{i}", text)
    finally:
        bar.close()
        logger.close()
    summary["wall_time_s"] = time.time() - t_run
    echo(f"Done: validation loss {summary['val_loss']:.4f} after {int(state.step)} steps "
         f"({format_seconds(summary['wall_time_s'])}). Outputs in {run.workdir}")
    return summary


def _diverged(loss: float, step: int, start: int, run: _Run) -> str:
    """The message for a NaN or infinite loss; soon after a resume, the checkpoint it came from
    is a suspect too (its bytes may have been damaged before lmjax kept digests)."""
    fix = ("lower optim.learning_rate, raise optim.warmup_steps or set optim.clip_norm; "
           "resuming restarts from the last checkpoint.")
    if not start or step - start > max(RESUME_WINDOW, run.cfg.train.log_every):
        return f"The training loss is {loss} at step {step}. {fix[0].upper()}{fix[1:]}"
    earlier = [s for s in run.ckpt.all_steps() if s < start]
    other = (f" (resume from an earlier one with --config.checkpoint.restore_step="
             f"{earlier[-1]})" if earlier else "")
    return (f"The training loss is {loss} at step {step}, soon after resuming from the "
            f"checkpoint of step {start}: that checkpoint may be damaged{other}, or the run is "
            f"unstable: {fix}")


def _final_evaluation(run: _Run, state) -> dict:
    """The last state on the whole validation split; then the model the run delivers (the best
    checkpoint when a metric is monitored, else the last state) on every evaluation split."""
    cfg, step = run.cfg, int(state.step)
    val = run.evaluate(state, step, cfg.train.final_eval_examples)
    summary = {"step": step, **{f"val_{k}": v for k, v in val.items() if is_scalar(v)}}
    if run.task.may_be_best(step) and run.monitor.update(step, val):
        run.best_ckpt.save(step, state, cfg.to_dict(), run.monitor.state(), force=True)
    run.best_ckpt.wait()
    delivered, label = state, ""
    if run.monitor.active and run.monitor.best_step is None:
        run.echo("No state of this run may count as the best (e.g. pruning never reached its "
                 "target sparsity): the last state is what the run delivers.")
    elif run.monitor.active and run.monitor.best_step != step:
        best_step = run.best_ckpt.latest_step()
        delivered = run.setup.restore(run.best_ckpt, best_step)
        val = run.evaluate(delivered, step, cfg.train.final_eval_examples, label="best_val")
        summary.update({f"val_{k}": v for k, v in val.items() if is_scalar(v)})
        summary["best_step"], label = best_step, "best_"
    elif run.monitor.active:
        summary["best_step"] = step
    for split in run.task.splits:
        if split != "val":
            test = run.evaluate(delivered, step, 0, split, label=label + split)
            summary.update({f"{split}_{k}": v for k, v in test.items() if is_scalar(v)})
    return summary
