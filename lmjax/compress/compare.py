"""The compression table: a run and its compressed variants side by side (the library of
`lmjax compress_report`).

For each run directory: size on disk (its parameters and model state saved alone, as Orbax
writes them), parameters and the nonzero ones among them, the sparsity of the prunable weights
counted in the checkpoint, inference throughput (the jitted forward pass of the task's model in
evaluation mode on one device, median of timed batches after warm-up), and the test metric
(accuracy on the test split for classifiers; validation loss in nats/token for language
models, which have no test split). Variants are other run directories (pruned, distilled,
structured, combined); `int8` adds the weight-quantized model of the run itself: GPT and
decoder-family runs through lmjax's qwix export (lmjax/infer/export.py), CNN/MLP runs as
per-output-channel absmax int8 kernels dequantized at load (accuracy and size only: the
arithmetic stays float).
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lmjax import rundir
from lmjax.eval.evaluate import evaluate
from lmjax.infer import export
from lmjax.optim import prune
from lmjax.tasks.base import DECODES
from lmjax.train.restore import load_setup

COLUMNS = ("variant", "disk_MB", "params", "nonzero", "sparsity", "throughput", "metric")


def _disk_bytes(tree) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(os.path.join(tmp, "w"), tree)
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(tmp)
                   for f in files)


def _forward(task, params, model_state, batch_size: int):
    """(a call running the model's forward pass in evaluation mode once, items per call,
    unit), compiled and warmed up."""
    batch = next(iter(task.eval_batches(batch_size, batch_size, "val")))
    inputs = jnp.asarray(batch["inputs"])
    if DECODES in task.capabilities:  # a language model: tokens, its loss
        fn = jax.jit(lambda p, x: task.model.apply({"params": p}, x, deterministic=True))
        args, unit, items = (params, inputs), "tokens/s", inputs.size
    else:
        fn = jax.jit(lambda p, s, x: task.model.apply({"params": p, **s}, x))
        args, unit, items = (params, model_state, inputs), "images/s", inputs.shape[0]
    call = lambda: jax.block_until_ready(fn(*args))  # noqa: E731
    call()
    return call, items, unit


def interleaved_throughput(forwards: list, repeats: int) -> list[float]:
    """Items/s of each forward pass, timed in turns (one call of each per round), so that a
    machine shared with other work slows them all alike; median over the rounds."""
    times = [[] for _ in forwards]
    for _ in range(repeats):
        for i, (call, _, _) in enumerate(forwards):
            t = time.perf_counter()
            call()
            times[i].append(time.perf_counter() - t)
    return [items / float(np.median(ts)) for (_, items, _), ts in zip(forwards, times)]


def _metric(s, params, model_state) -> tuple[float, str]:
    split = "test" if "test" in s.task.splits else "val"
    m = evaluate(s.task, s.eval_step(), params, model_state, s.mesh, 0,
                 s.cfg.train.batch_size, split)
    if DECODES in s.task.capabilities:
        return float(m["loss"]), f"{split} loss"
    return float(m["accuracy"]), f"{split} accuracy"


def int8_weights(params):
    """Kernels as int8 with a float32 scale per output channel (absmax), and back: (the
    dequantized params, the quantized tree as it would be stored)."""
    stored, restored = {}, {}

    def one(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        a = np.asarray(leaf)
        if name != "kernel" or a.ndim < 2:
            return a, a
        scale = np.abs(a).reshape(-1, a.shape[-1]).max(0) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        q = np.clip(np.round(a / scale), -127, 127).astype(np.int8)
        return (q * scale).astype(a.dtype), {"q": q, "scale": scale}

    pairs = jax.tree_util.tree_map_with_path(one, params)
    is_pair = lambda x: isinstance(x, tuple)  # noqa: E731
    restored = jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair)
    stored = jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair)
    return restored, stored


def measure(variants: list[tuple[str, str]], repeats: int = 20, with_int8: bool = False,
            log=print) -> list[dict]:
    """One row per (name, run directory), plus the first run's int8 model when `with_int8`."""
    rows, forwards = [], []
    count = lambda t: sum(int(np.size(x)) for x in jax.tree.leaves(t))  # noqa: E731
    for i, (name, workdir) in enumerate(variants):
        s, state = load_setup(workdir, best=rundir.has_best(workdir))
        params, model_state = state.params, state.model_state
        sparsity = prune.sparsity_report(params)
        log(f"{name} ({workdir}): {prune.describe(sparsity)}")
        forwards.append(_forward(s.task, params, model_state, s.cfg.train.batch_size))
        metric, metric_name = _metric(s, params, model_state)
        row = {"variant": name, "workdir": workdir,
               "disk_MB": _disk_bytes((params, model_state)) / 1e6, "params": count(params),
               "nonzero": sum(int(np.count_nonzero(np.asarray(x)))
                              for x in jax.tree.leaves(params)),
               "sparsity": sparsity["prunable_sparsity"], "unit": forwards[-1][2],
               "metric": metric, "metric_name": metric_name}
        rows.append(row)
        if with_int8 and i == 0:
            rows.append(_int8_row(workdir, s, params, model_state, row, log))
    rates = iter(interleaved_throughput(forwards, repeats))
    for row in rows:
        row["throughput"] = None if row["variant"].endswith(" int8") else next(rates)
    return rows


def _int8_row(workdir, s, params, model_state, row, log) -> dict:
    if DECODES in s.task.capabilities:
        with tempfile.TemporaryDirectory() as tmp:
            r = export.quantize_run(workdir, os.path.join(tmp, "int8"), best=rundir.has_best(
                workdir), eval_examples=0, log=log)
        return {**row, "variant": f"{row['variant']} int8", "disk_MB": r["int8_disk"] / 1e6,
                "metric": r["val_loss_int8"], "metric_name": "val loss", "throughput": None}
    restored, stored = int8_weights(params)
    metric, name = _metric(s, jax.device_put(restored, s.shardings.params), model_state)
    return {**row, "variant": f"{row['variant']} int8", "disk_MB":
            _disk_bytes((stored, model_state)) / 1e6, "metric": metric, "metric_name": name,
            "throughput": None}


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows."""
    unit = rows[0]["unit"] if rows else ""
    out = [f"| variant | disk (MB) | parameters | nonzero | sparsity | {unit} | "
           f"{rows[0]['metric_name'] if rows else 'metric'} |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = "same as float" if r["throughput"] is None else f"{r['throughput']:,.0f}"
        metric = (f"{r['metric']:.2%}" if "accuracy" in r["metric_name"]
                  else f"{r['metric']:.4f}")
        out.append(f"| {r['variant']} | {r['disk_MB']:.2f} | {r['params']:,} | "
                   f"{r['nonzero']:,} | {r['sparsity']:.1%} | {rate} | {metric} |")
    return "\n".join(out)
