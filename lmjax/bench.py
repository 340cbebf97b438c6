"""Benchmark the real train step of a config: `python -m lmjax.bench --config=configs/gpt.py`.

Compiles the same jitted, sharded step the trainer runs, excludes warm-up, synchronises the
device after every step and reports the median. MFU counts nanoGPT's/PaLM's model FLOPs:
6·N per token for the N non-position-embedding parameters, plus 12·L·d·T per token for
attention scores and values (L layers, width d, context T), against the device's dense peak.
For other families (CNN, MLP, LSTM) the FLOPs are XLA's cost analysis of the compiled step,
and throughput is in examples/s (tokens/s for language models).
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config to benchmark.",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s per device for MFU "
                           "(0: from the device kind; unknown kinds, e.g. CPUs, report no MFU).")

# Dense bf16 peak per device, TFLOP/s, by substring of jax's device_kind.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "TPU v6": 918.0,
               "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0}


def flops_per_token(cfg, n_params: int) -> float:
    m = cfg.model
    n = n_params - m.block_size * m.d_model  # position embeddings do no multiplies
    return 6.0 * n + 12.0 * m.num_layers * m.d_model * m.block_size


def peak_flops(device_kind: str, override_tflops: float = 0.0) -> float | None:
    if override_tflops > 0:
        return override_tflops * 1e12
    match = next((v for k, v in PEAK_TFLOPS.items() if k.lower() in device_kind.lower()), None)
    return match * 1e12 if match else None


def benchmark(cfg, steps: int = 20, warmup: int = 3, peak_tflops: float = 0.0) -> dict:
    import jax

    from lmjax import optim
    from lmjax.config import validate
    from lmjax.parallel import mesh as meshlib
    from lmjax.train import step as steplib
    from lmjax.train.state import create_state
    from lmjax.tasks import make_task

    validate(cfg)
    task = make_task(cfg, log=lambda s: None)
    mesh = meshlib.make_mesh(cfg.mesh)
    tx = optim.build_optimizer(cfg.optim, cfg.train.num_steps, matrix_dims=task.matrix_dims,
                               trainable=task.trainable)
    state, _, shardings = create_state(task, tx, mesh, jax.random.PRNGKey(cfg.seed))
    fn = steplib.jit_train_step(task, tx, optim.build_schedule(cfg.optim, cfg.train.num_steps),
                                cfg.train.grad_accum, jax.random.PRNGKey(1), shardings, mesh)
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
    seq_len = getattr(task, "seq_len", 1)  # as the trainer counts: tokens, or examples
    unit = "tokens" if seq_len > 1 else "examples"
    items = cfg.train.batch_size * seq_len
    if seq_len > 1 and "num_heads" in cfg.model:  # a transformer LM: the formula above
        step_flops = flops_per_token(cfg, n_params) * items
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
        f"{unit}_per_s": items / step_s,  # the key the trainer's metrics and lmjax.report use
        "model_tflops_per_s": achieved / 1e12,
        "mfu": achieved / (peak * mesh.devices.size) if peak else None,
        "peak_memory_GiB": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats
        else None,
        # Parameters + optimizer state on the busiest device: what FSDP divides.
        "state_MiB_per_device": max(meshlib.bytes_per_device(
            (state.params, state.opt_state)).values()) / 2**20,
        "loss": float(metrics["loss"]),
    }


def main(argv) -> None:
    del argv
    cfg = _CONFIG.value
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config=configs/gpt.py:gpt2_124m")
    from lmjax.parallel.mesh import split_host_cpu

    split_host_cpu(cfg)
    r = benchmark(cfg, _STEPS.value, _WARMUP.value, _PEAK.value)
    rows = [("device", r["device"]), ("parameters", f"{r['params_M']:.2f}M"),
            ("batch" + (" x context" if "block_size" in cfg.model else ""),
             f"{cfg.train.batch_size}" + (f" x {cfg.model.block_size}"
                                          if "block_size" in cfg.model else "")),
            ("compile time", f"{r['compile_s']:.1f} s"),
            ("step time (median, p90)", f"{r['step_ms']:.1f} ms, {r['step_ms_p90']:.1f} ms"),
            (f"{r['unit']}/s", f"{r[r['unit'] + '_per_s']:,.0f}"),
            ("model TFLOP/s", f"{r['model_tflops_per_s']:.3f}"),
            ("MFU", f"{r['mfu']:.1%}" if r["mfu"] is not None else
             "n/a (unknown peak: pass --peak_tflops)"),
            ("params + optimizer state per device", f"{r['state_MiB_per_device']:.1f} MiB"),
            ("peak device memory", f"{r['peak_memory_GiB']:.2f} GiB"
             if r["peak_memory_GiB"] is not None else "n/a (not reported by this backend)")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    app.run(main)
