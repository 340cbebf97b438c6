"""Post-training int8 weight quantization with qwix, and the int8 export directory.

Models: the GPT and the decoder families (Llama, Qwen, Mistral, Gemma: lmjax/models/decoder.py).
qwix rewrites the model's matrix products: every Dense kernel (the GPT's attention qkv and
output, MLP fc and proj; the decoder's q, k, v, o, gate, up, down and an untied lm_head) is
stored as int8 with one float32 scale per output channel (absmax), and qwix multiplies by
converting it to float first: on XLA:CPU that conversion is not fused into the product, so
int8 saves memory and disk, not decoding time (docs/serving.md measures why). A scanned model
is quantized as its unrolled twin (`unrolled`). A tied token embedding stays in its training
dtype: it is also read by a gather, which qwix's post-training rules do not intercept. Norms,
biases and position embeddings are vectors and stay as they are.

An export is a run directory (lmjax/rundir.py) whose run.json says `"weights": "int8"`, with
the run's tokenizer.json and `params/` (an Orbax checkpoint of the quantized parameters).
qwix is imported inside the functions that use it: it is an optional extra (`.[quant]`), and a
float run loads and generates without it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lmjax import rundir
from lmjax.models import gpt
from lmjax.models.decoder import Decoder
from lmjax.models.gpt import GPT, unstack_layers
from lmjax.tasks.lm import model_family

# qwix module paths of the Dense layers, e.g. block_0/attn/qkv: the GPT's (qkv, out, fc, proj)
# and the decoder's (q, k, v, o, gate, up, down, and lm_head at the top when it is untied).
DENSE_LAYERS = r"(.*/)?(qkv|out|fc|proj|q|k|v|o|gate|up|down|lm_head)$"
OLD_META = "quantized.json"  # the export format before run directories


def unrolled(model: nn.Module) -> nn.Module:
    """The model with its layers unrolled: qwix's per-channel scales of an nn.scan kernel
    ([layers, in, out]) would span the layers, so a scanned model is quantized, exported and
    decoded as its unrolled twin (same parameters, block_0 ... block_N; decoding gains nothing
    from the scan)."""
    if not isinstance(model, (GPT, Decoder)):
        raise ValueError("int8 quantization covers the GPT and the decoder families (their "
                         f"Dense layers), not a {type(model).__name__}.")
    return gpt.unrolled(model)


def quantized_model(model: nn.Module) -> nn.Module:
    import qwix  # noqa: lazy, optional extra

    model = unrolled(model)
    rules = [qwix.QuantizationRule(module_path=DENSE_LAYERS, weight_qtype=jnp.int8)]
    return qwix.quantize_model(model, qwix.PtqProvider(rules))


def _quantized_shapes(qmodel: nn.Module):
    """The quantized model's parameter shapes (what quantize_params fills), computing nothing."""
    dummy = jnp.zeros((1, 1), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(qmodel.init, jax.random.PRNGKey(0), dummy)["params"])


def quantize(model: nn.Module, params):
    """(qwix-wrapped model, int8 parameters) from a float model and its parameters."""
    import qwix  # noqa: lazy, optional extra

    qmodel = quantized_model(model)
    params = unstack_layers(params, model.cfg.num_layers)
    return qmodel, qwix.quantize_params(params, _quantized_shapes(qmodel))


def save_export(path: str, assets: rundir.Assets, qparams, source: str) -> None:
    """Writes an export directory (replacing one written before, never anything else)."""
    if os.path.exists(path):
        if not (rundir.exists(path) and rundir.read(path).weights == "int8"):
            raise FileExistsError(f"{path} exists and is not an int8 export: choose a new "
                                  "--out directory.")
        shutil.rmtree(path)
    os.makedirs(path)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.abspath(os.path.join(path, "params")), qparams)
    rundir.write(path, dataclasses.replace(assets, weights="int8", source=source))


def is_old_export(path: str) -> bool:
    return os.path.exists(os.path.join(path, OLD_META)) and not rundir.exists(path)


def load_export(path: str, assets: rundir.Assets):
    """(qwix-wrapped model, int8 parameters on one device) of an export directory."""
    import qwix  # noqa: lazy, optional extra

    family = model_family(assets.model)
    model = unrolled(family.module(family.config(**assets.model)))
    float_params = nn.meta.unbox(jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"])
    qmodel = quantized_model(model)
    shapes = _quantized_shapes(qmodel)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(lambda p: qwix.quantize_params(p, shapes), float_params))
    with ocp.StandardCheckpointer() as ckpt:
        qparams = ckpt.restore(os.path.abspath(os.path.join(path, "params")), target)
    return qmodel, qparams


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
