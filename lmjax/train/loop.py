"""The one training loop: every model family runs through `train_and_evaluate`."""

from __future__ import annotations

import json
import os
import signal
import threading
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from lmjax import optim
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import validate
from lmjax.infer.sample import generate
from lmjax.parallel import mesh as meshlib
from lmjax.train import step as steplib
from lmjax.train.logging import MetricLogger, format_seconds
from lmjax.train.state import create_state, state_shardings
from lmjax.train.tasks import make_task

# Settings that change the shape or meaning of the saved state: a checkpoint written with other
# values cannot be resumed by this config.
STATE_DEFINING = {
    "model": ("vocab_size", "block_size", "num_layers", "num_heads", "d_model", "mlp_ratio",
              "use_bias", "scan_layers", "param_dtype"),
    "data": ("name", "tokenizer", "vocab_size"),
    "optim": ("name",),
    "task": None,
}


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
    diffs = []
    for section, fields in STATE_DEFINING.items():
        if fields is None:
            if stored.get(section) != cfg[section]:
                diffs.append(f"{section}: checkpoint {stored.get(section)!r}, config {cfg[section]!r}")
            continue
        for f in fields:
            old, new = stored.get(section, {}).get(f), cfg[section][f]
            if old != new:
                diffs.append(f"{section}.{f}: checkpoint {old!r}, config {new!r}")
    return diffs


def evaluate(task, eval_step, params, mesh, max_windows: int, batch_size: int) -> dict:
    totals = None
    for batch in task.eval_batches(max_windows, batch_size):
        sums = eval_step(params, meshlib.global_batch(_local_rows(batch), mesh))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        # One batch in flight at a time: many independent evaluation steps queued at once can
        # deadlock XLA's CPU collectives (see the note in the training loop).
        jax.block_until_ready(totals)
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}


def _local_rows(batch: dict) -> dict:
    """The rows of an evaluation batch that belong to this process."""
    n, i = jax.process_count(), jax.process_index()
    return jax.tree.map(lambda x: x[i * (len(x) // n):(i + 1) * (len(x) // n)], batch)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str,
                       on_eval: Callable[[int, dict], None] | None = None) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the final metrics.

    `on_eval(step, metrics)` is called after every periodic validation (hyperparameter sweeps
    report to their pruner there); an exception it raises stops training.
    """
    meshlib.initialize_distributed(cfg.distributed)
    validate(cfg)
    main_process = jax.process_index() == 0
    echo = (lambda s: tqdm.write(s)) if main_process else (lambda s: None)
    mesh = meshlib.make_mesh(cfg.mesh)
    echo(f"Devices: {jax.device_count()} x {jax.devices()[0].device_kind} in "
         f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}")
    if cfg.train.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must divide evenly over the "
            f"{mesh.shape['data'] * mesh.shape['fsdp']} data-parallel devices (mesh.data x mesh.fsdp).")

    task = make_task(cfg, log=echo)
    num_steps = cfg.train.num_steps
    tx = optim.build_optimizer(cfg.optim, num_steps, matrix_dims=task.matrix_dims)
    schedule = optim.build_schedule(cfg.optim, num_steps)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))

    os.makedirs(workdir, exist_ok=True)
    with Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.checkpoint.keep) as ckpt:
        latest = ckpt.latest_step() if cfg.checkpoint.restore else None
        if latest is None:
            state, abstract, shardings = create_state(task, tx, mesh, init_rng)
        else:
            abstract, shardings = state_shardings(task, tx, mesh, init_rng)
            diffs = _incompatibilities(ckpt.stored_config(latest), cfg)
            if diffs:
                raise CheckpointError(
                    f"The checkpoint in {ckpt.directory} (step {latest}) was written by a "
                    f"different setup: {'; '.join(diffs)}. Use the same settings to resume, or "
                    "another --workdir.")
            state = ckpt.restore(latest, abstract, shardings)
            echo(f"Resumed from step {latest} ({ckpt.directory}).")
        train_step = steplib.jit_train_step(task, tx, schedule, cfg.train.grad_accum,
                                            dropout_rng, shardings, mesh)
        eval_step = steplib.jit_eval_step(task, shardings.params, mesh)
        return _train(cfg, workdir, task, mesh, ckpt, state, train_step, eval_step, echo, on_eval)


def _train(cfg, workdir, task, mesh, ckpt, state, train_step, eval_step, echo, on_eval) -> dict:
    """The loop proper, from a created or restored state to the final evaluation."""
    main_process = jax.process_index() == 0
    num_steps = cfg.train.num_steps
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    echo(f"Model: {n_params / 1e6:.2f}M parameters; data: {task.data.meta['train_tokens']:,} "
         f"training and {task.data.meta['val_tokens']:,} validation tokens "
         f"(held out: {', '.join(task.data.meta['val_names'])})")
    if main_process:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=1)

    logger = MetricLogger(workdir, cfg.log.tensorboard, echo=echo)

    def run_eval(step, max_windows, split="val"):
        t = time.time()
        metrics = evaluate(task, eval_step, state.params, mesh, max_windows, cfg.train.batch_size)
        logger.write(step, split, metrics,
                     f"loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.4f} | "
                     f"{time.time() - t:.1f}s")
        return metrics

    start = int(state.step)
    tokens_per_step = cfg.train.batch_size * task.seq_len
    pidx, pcount = jax.process_index(), jax.process_count()
    bar = tqdm(total=num_steps, initial=start, disable=not (cfg.log.progress_bar and main_process),
               unit="step", dynamic_ncols=True, leave=False)
    t_run = time.time()
    val = None
    try:
        with _StopFlag() as stop:
            t_last, step_last, metrics = None, start, None
            for step in range(start, num_steps):
                batch = meshlib.global_batch(task.train_batch(step, pidx, pcount), mesh)
                previous = metrics if step > start else None
                state, metrics = train_step(state, batch)
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
                        raise Diverged(
                            f"The training loss is {m['loss']} at step {done}. Lower "
                            "optim.learning_rate, raise optim.warmup_steps or set "
                            "optim.clip_norm; resuming restarts from the last checkpoint.")
                    now = time.time()
                    line = f"loss {m['loss']:.4f} | lr {m['lr']:.2e}"
                    if done > step_last:  # not right after compiling, evaluating or saving
                        rate = (done - step_last) / max(now - t_last, 1e-9)
                        m["tokens_per_s"] = rate * tokens_per_step
                        eta = format_seconds((num_steps - done) / rate)
                        line += f" | {m['tokens_per_s'] / 1e3:.1f}k tok/s | ETA {eta}"
                    logger.write(done, "train", m, line)
                    bar.set_postfix(loss=f"{m['loss']:.3f}")
                    t_last, step_last = now, done
                paused = False
                if done % cfg.train.eval_every == 0 and done != num_steps:
                    val = run_eval(done, cfg.train.eval_windows)
                    if on_eval is not None:
                        on_eval(done, val)
                    paused = True
                if done % cfg.checkpoint.every == 0 or done == num_steps:
                    paused |= ckpt.save(done, state, cfg.to_dict())
                if paused:  # keep evaluation and saving out of the throughput figures
                    t_last, step_last = time.time(), done
                if stop.should_stop(done):
                    ckpt.save(done, state, cfg.to_dict(), force=True)
                    ckpt.wait()
                    echo(f"SIGTERM: saved a checkpoint at step {done}. "
                         "Run the same command to resume.")
                    raise Preempted(done)
        bar.close()
        if start >= num_steps:
            echo(f"The checkpoint is at step {start}, train.num_steps={num_steps}: nothing to "
                 "train; evaluating it. Raise --config.train.num_steps to train further.")
        ckpt.wait()
        val = run_eval(int(state.step), cfg.train.final_eval_windows)
        samples = _samples(cfg, task, state.params)
        for i, s in enumerate(samples):
            echo(f"--- sample {i} ---\n{s}")
            logger.text(num_steps, f"sample_{i}", s)
    finally:
        bar.close()
        logger.close()
    summary = {"step": int(state.step), "wall_time_s": time.time() - t_run,
               **{f"val_{k}": v for k, v in val.items()}}
    echo(f"Done: validation loss {val['loss']:.4f} nats/token after {summary['step']} steps "
         f"({format_seconds(summary['wall_time_s'])}). Outputs in {workdir}")
    return summary


def _samples(cfg, task, params) -> list[str]:
    n = cfg.sample.num_samples
    if n == 0 or cfg.sample.max_new_tokens == 0:
        return []
    prompt = np.asarray(task.tokenizer.encode(cfg.sample.prompt), np.int32)
    prompt = np.tile(prompt[None], (n, 1))
    params = jax.device_get(params)  # sampling is small: one device does it
    out = generate(task.model, params, jnp.asarray(prompt), jax.random.PRNGKey(cfg.seed),
                   max_new_tokens=cfg.sample.max_new_tokens,
                   temperature=cfg.sample.temperature, top_k=cfg.sample.top_k)
    return [task.tokenizer.decode(row) for row in np.asarray(out)]
