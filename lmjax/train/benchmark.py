"""Timing the real train step of a config (the library of `lmjax bench`).

Compiles the same jitted, sharded step the trainer runs, excludes warm-up, synchronises the
device after every step and reports the median. MFU counts nanoGPT's/PaLM's model FLOPs:
6·N per token for the N parameters that multiply (all but the GPT's learned positions and an
untied input embedding, which are only gathered from), plus 12·L·d·T per token for attention
scores and values (L layers, d the query heads' width, context T), against the device's dense
peak.
For other families (CNN, MLP, LSTM) the FLOPs are XLA's cost analysis of the compiled step,
and throughput is in examples/s (tokens/s for language models).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from lmjax.models.layers import resolve_attention
from lmjax.parallel import mesh as meshlib
from lmjax.train.setup import setup

# Dense bf16 peak per device, TFLOP/s, by substring of jax's device_kind.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "TPU v6": 918.0,
               "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0}


def flops_per_token(model, n_params: int) -> float:
    """`model`: a transformer's typed config (GPT, decoder family) or its `model` section."""
    width = model.num_heads * (getattr(model, "head_dim", 0) or model.d_model // model.num_heads)
    if getattr(model, "name", "gpt") == "gpt":
        n = n_params - model.block_size * model.d_model  # learned positions: a gather
    elif not getattr(model, "tie_embeddings", True):  # the decoder's input table: a gather
        n = n_params - model.vocab_size * model.d_model
    else:  # rotary positions have no parameters; the tied table is the output layer
        n = n_params
    return 6.0 * n + 12.0 * model.num_layers * width * model.block_size


def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    match = next((v for k, v in PEAK_TFLOPS.items() if k.lower() in device_kind.lower()), None)
    return match * 1e12 if match else None


def benchmark(cfg, steps: int = 20, warmup: int = 3, peak_tflops: float = 0.0) -> dict:
    """Times the trainer's own jitted step (the one setup path builds it)."""
    s = setup(cfg, log=lambda line: None)
    task, mesh = s.task, s.mesh
    state, fn = s.new_state(), s.train_step()
    # The data pipeline is not timed: two batches, placed on the devices beforehand.
    batches = [meshlib.global_batch(task.train_batch(i), mesh) for i in range(2)]

    t = time.perf_counter()
    compiled = fn.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t)

    step_s = float(np.median(times))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    seq_len = task.tokens_per_example  # as the trainer counts: tokens, or examples
    unit = "tokens" if seq_len > 1 else "examples"
    items = cfg.train.batch_size * seq_len
    model = task.model_config
    if seq_len > 1 and hasattr(model, "num_heads"):  # a transformer LM: the formula above
        step_flops = flops_per_token(model, n_params) * items
    else:  # other families: XLA's own count of the compiled step's floating-point operations
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        step_flops = float((cost or {}).get("flops", 0.0)) * mesh.devices.size
    achieved = step_flops / step_s
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind, peak_tflops)
    stats = device.memory_stats() or {}
    return {
        "device": f"{mesh.devices.size} x {device.device_kind}",
        "params_M": n_params / 1e6,
        "compile_s": compile_s,
        "step_ms": step_s * 1e3,
        "step_ms_p90": float(np.percentile(times, 90)) * 1e3,
        "unit": unit,
        f"{unit}_per_s": items / step_s,  # the key the trainer's metrics and lmjax report use
        "model_tflops_per_s": achieved / 1e12,
        "mfu": achieved / (peak * mesh.devices.size) if peak else None,
        "peak_memory_GiB": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats
        else None,
        # Parameters + optimizer state on the busiest device: what FSDP divides.
        "state_MiB_per_device": max(meshlib.bytes_per_device(
            (state.params, state.opt_state)).values()) / 2**20,
        "loss": float(metrics["loss"]),
        "attention": _attention(task),
    }


def _attention(task) -> str:
    """Which attention kernel the model runs here, and why not cuDNN's ('' for non-attention
    models)."""
    cfg = task.model_config
    if getattr(cfg, "attention", None) is None:  # not a transformer
        return ""
    impl, why = resolve_attention(cfg)
    return "cuDNN fused" if impl == "cudnn" else why
