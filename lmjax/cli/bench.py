"""Benchmark the real train step of a config: compile time, median step, tokens/s (examples/s
for other families), model TFLOP/s, MFU, parameters + optimizer state per device, peak memory.

    lmjax bench --config=configs/gpt.py --steps=30
    lmjax bench --config=configs/gpt.py:gpt2_124m --config.train.batch_size=16

How it measures: lmjax/train/benchmark.py.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from lmjax.cli.common import require
from lmjax.parallel.mesh import split_host_cpu
from lmjax.train.benchmark import benchmark

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config to benchmark.",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after warm-up).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s per device for MFU "
                           "(0: from the device kind; unknown kinds, e.g. CPUs, report no MFU).")


def main(args: list[str]) -> None:
    cfg = require(_CONFIG.value, "--config is required, e.g. --config=configs/gpt.py:gpt2_124m")
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
    if r["attention"]:
        rows.append(("attention", r["attention"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
