"""Post-training int8 weight quantization with qwix, saved as its own directory.

qwix rewrites the model's matrix products: every Dense kernel (attention qkv and output, MLP
fc and proj) is stored as int8 with one float32 scale per output channel (absmax), and is
multiplied as such. The tied token embedding stays in its training dtype: it is also read by a
gather, which qwix's post-training rules do not intercept. Norms, biases and position
embeddings are vectors and stay as they are.

An export directory holds `quantized.json` (the training config and provenance),
`tokenizer.json` and `params/` (an Orbax checkpoint of the quantized parameters).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import qwix

from lmjax.infer.load import QUANTIZED_META, Loaded

# qwix module paths of the GPT's Dense layers (also under nn.scan: blocks/block/attn/qkv).
DENSE_LAYERS = r".*/(qkv|out|fc|proj)$"
FORMAT = "lmjax-int8-v1"


def quantized_model(model: nn.Module) -> nn.Module:
    rules = [qwix.QuantizationRule(module_path=DENSE_LAYERS, weight_qtype=jnp.int8)]
    return qwix.quantize_model(model, qwix.PtqProvider(rules))


def _quantized_shapes(qmodel: nn.Module):
    """The quantized model's parameter shapes (what quantize_params fills), computing nothing."""
    dummy = jnp.zeros((1, 1), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(qmodel.init, jax.random.PRNGKey(0), dummy)["params"])


def _abstract(qmodel: nn.Module, float_params):
    """The quantized parameter tree's shapes, without computing anything."""
    shapes = _quantized_shapes(qmodel)
    return jax.eval_shape(lambda p: qwix.quantize_params(p, shapes), float_params)


def quantize(model: nn.Module, params):
    """(qwix-wrapped model, int8 parameters) from a float model and its parameters."""
    qmodel = quantized_model(model)
    return qmodel, qwix.quantize_params(params, _quantized_shapes(qmodel))


def save_quantized(path: str, loaded: Loaded, qparams) -> None:
    """Writes an export directory (replacing one written before, never anything else)."""
    if os.path.exists(path):
        if not os.path.exists(os.path.join(path, QUANTIZED_META)):
            raise FileExistsError(f"{path} exists and is not a quantized export: choose a new "
                                  "--out directory.")
        shutil.rmtree(path)
    os.makedirs(path)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.abspath(os.path.join(path, "params")), qparams)
    loaded.tokenizer.save(path)
    with open(os.path.join(path, QUANTIZED_META), "w") as f:
        json.dump({"format": FORMAT, "source": loaded.source, "weights": "int8",
                   "layers": DENSE_LAYERS, "config": loaded.cfg.to_dict()}, f, indent=1)


def load_quantized(path: str) -> Loaded:
    from lmjax.data.tokenizers import load_tokenizer
    from lmjax.tasks.lm import model_config
    from lmjax.models.gpt import GPT

    with open(os.path.join(path, QUANTIZED_META)) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}/{QUANTIZED_META}: format {meta.get('format')!r}, expected "
                         f"{FORMAT!r}; re-export it with this version of python -m lmjax.quantize.")
    cfg = ml_collections.ConfigDict(meta["config"])
    tokenizer = load_tokenizer(path)
    model = GPT(model_config(cfg, tokenizer.vocab_size))
    float_params = nn.meta.unbox(jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"])
    qmodel = quantized_model(model)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          _abstract(qmodel, float_params))
    with ocp.StandardCheckpointer() as ckpt:
        qparams = ckpt.restore(os.path.abspath(os.path.join(path, "params")), target)
    return Loaded(model=qmodel, params=qparams, tokenizer=tokenizer, cfg=cfg,
                  source=f"{path} (int8 weights of {meta['source']})")


def weight_bytes(params) -> dict:
    """Bytes held by the weight matrices (Dense kernels, with their scales) and by everything."""
    matrices = total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        n = int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
        total += n
        if "kernel" in jax.tree_util.keystr(path):
            matrices += n
    return {"matrices": matrices, "total": total}


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def validation_loss(task, model: nn.Module, params, batch_size: int = 32,
                    max_windows: int = 0) -> float:
    """The task's validation loss (nats/token) with another model in its place (same metric,
    same windows as the trainer's final evaluation)."""
    swapped = copy.copy(task)
    swapped.model = model
    step = jax.jit(lambda p, b: swapped.eval_outputs(p, {}, b)["sums"])
    totals = None
    for batch in task.eval_batches(batch_size, max_windows):
        sums = jax.device_get(step(params, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    return float(totals["loss"]) / float(totals["count"])


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def quantize_run(workdir: str, out: str, best: bool = False, eval_windows: int = 0,
                 log=print) -> dict:
    """Quantizes, saves and reports; returns the figures."""
    from lmjax.infer.load import load

    loaded = load(workdir, best=best)
    if loaded.task is None:
        raise ValueError(f"{workdir} is already a quantized export.")
    qmodel, qparams = quantize(loaded.model, loaded.params)
    save_quantized(out, loaded, qparams)
    with tempfile.TemporaryDirectory() as tmp:  # the float weights alone, saved the same way
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(os.path.join(tmp, "params"), loaded.params)
        float_disk = directory_bytes(tmp)
    report = {"float": weight_bytes(loaded.params), "int8": weight_bytes(qparams),
              "float_disk": float_disk, "int8_disk": directory_bytes(os.path.join(out, "params"))}
    f, i = report["float"], report["int8"]
    log(f"Quantized {loaded.source} -> {out}")
    log(f"  weight matrices: {_mb(f['matrices'])} -> {_mb(i['matrices'])} "
        f"({f['matrices'] / i['matrices']:.2f}x smaller, int8 + per-channel float32 scales)")
    log(f"  all parameters:  {_mb(f['total'])} -> {_mb(i['total'])}")
    log(f"  on disk (params): {_mb(float_disk)} -> {_mb(report['int8_disk'])}")
    if eval_windows >= 0:
        before = validation_loss(loaded.task, loaded.model, loaded.params,
                                   max_windows=eval_windows)
        after = validation_loss(loaded.task, qmodel, qparams, max_windows=eval_windows)
        report.update(val_loss_float=before, val_loss_int8=after)
        log(f"  validation loss: {before:.4f} -> {after:.4f} "
            f"({100 * (after - before) / before:+.2f}%)")
    return report
