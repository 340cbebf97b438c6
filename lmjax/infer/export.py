"""Exporting a run as int8: quantize its weights, save the export directory, and compare sizes
and validation losses (the library of `lmjax quantize`)."""

from __future__ import annotations

import copy
import os
import tempfile

import orbax.checkpoint as ocp

from lmjax.eval.evaluate import evaluate
from lmjax.infer import int8
from lmjax.infer.load import load
from lmjax.parallel import mesh as meshlib
from lmjax.train import step as steplib
from lmjax.train.restore import ONE_DEVICE
from lmjax.train.state import TrainState


def validation_loss(loaded, model, params, max_examples: int = 0) -> float:
    """The run's validation loss (nats/token) with `model` in its place: the trainer's own
    evaluation, over the same windows."""
    task = copy.copy(loaded.task)
    task.model = model
    mesh = meshlib.make_mesh(ONE_DEVICE)  # where load() put the parameters
    everything = meshlib.replicated(mesh)  # one sharding for every leaf (a pytree prefix)
    shardings = TrainState(step=everything, params=everything, opt_state=everything,
                           model_state=everything)
    metrics = evaluate(task, steplib.jit_eval_step(task, shardings, mesh), params, {}, mesh,
                       max_examples, loaded.cfg.train.batch_size)
    return metrics["loss"]


def quantize_run(workdir: str, out: str, best: bool = False, eval_examples: int = 0,
                 log=print) -> dict:
    """Quantizes, saves and reports; returns the figures."""
    loaded = load(workdir, best=best)
    if loaded.task is None:
        raise ValueError(f"{workdir} is already a quantized export.")
    qmodel, qparams = int8.quantize(loaded.model, loaded.params)
    int8.save_export(out, loaded.assets, qparams, loaded.source)
    with tempfile.TemporaryDirectory() as tmp:  # the float weights alone, saved the same way
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(os.path.join(tmp, "params"), loaded.params)
        float_disk = int8.directory_bytes(tmp)
    report = {"float": int8.weight_bytes(loaded.params), "int8": int8.weight_bytes(qparams),
              "float_disk": float_disk,
              "int8_disk": int8.directory_bytes(os.path.join(out, "params"))}
    f, i = report["float"], report["int8"]
    log(f"Quantized {loaded.source} -> {out}")
    log(f"  weight matrices: {_mb(f['matrices'])} -> {_mb(i['matrices'])} "
        f"({f['matrices'] / i['matrices']:.2f}x smaller, int8 + per-channel float32 scales)")
    log(f"  all parameters:  {_mb(f['total'])} -> {_mb(i['total'])}")
    log(f"  on disk (params): {_mb(float_disk)} -> {_mb(report['int8_disk'])}")
    if eval_examples >= 0:
        before = validation_loss(loaded, loaded.model, loaded.params, eval_examples)
        after = validation_loss(loaded, qmodel, qparams, eval_examples)
        report.update(val_loss_float=before, val_loss_int8=after)
        log(f"  validation loss: {before:.4f} -> {after:.4f} "
            f"({100 * (after - before) / before:+.2f}%)")
    return report


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
