"""Can XLA read int8 weights inside a batch-1 matrix product on this backend?

Decoding one token at batch 1 multiplies a vector by every weight matrix: the bytes read bound
the speed, so int8 weights should be up to 4x faster than float32 ones, if the product reads
the int8 bytes directly. This times GPT-2 124M's 48 block matrices (12 layers of qkv, out,
fc, proj: 85M weights) as a chain of matrix-vector products, written every way JAX can say it:

- float32 weights, a plain dot (what the float model does);
- int8 weights converted to float32, then a dot (what qwix's post-training int8 does on a
  backend that cannot fuse the conversion into the dot: a float copy is written first);
- int8 weights converted, multiplied and summed in one fusion, in [in, out] and [out, in]
  layouts (no float copy: the fusion reads int8);
- int8 weights and int8-quantized activations in an int8 x int8 -> int32 dot.

    python benchmarks/int8_matvec.py [--repeats=20]

It prints milliseconds per chain and the weight bytes read per second; the docs quote it
(docs/serving.md, batch-1 decoding).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

D, LAYERS = 768, 12
SHAPES = [(D, 3 * D), (D, D), (D, 4 * D), (4 * D, D)] * LAYERS  # (in, out)


def float_dot(x, w, s):
    return x @ w


def dequantized_dot(x, w, s):
    return (x @ w.astype(jnp.float32)) * s


def fused(x, w, s):
    return (x[0][:, None] * w.astype(jnp.float32)).sum(0)[None] * s


def fused_transposed(x, w, s):  # w is [out, in]
    return (w.astype(jnp.float32) * x[0][None, :]).sum(1)[None] * s


def int8_dot(x, w, s):
    a = jnp.max(jnp.abs(x)) / 127.0
    xq = jnp.round(x / a).astype(jnp.int8)
    y = jax.lax.dot_general(xq, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    return y.astype(jnp.float32) * a * s


def chain(product, transposed: bool):
    @jax.jit
    def run(x, weights, scales):
        total = jnp.zeros((), jnp.float32)
        for w, s in zip(weights, scales):
            n_in = w.shape[1] if transposed else w.shape[0]
            v = jnp.broadcast_to(x[:, :1], (1, n_in)) + total  # depends on the last product
            total = total + product(v, w, s).sum() * 1e-30
        return total

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    as_float = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in SHAPES]
    as_int8 = [jnp.asarray(rng.integers(-127, 128, s, dtype=np.int8)) for s in SHAPES]
    transposed = [jnp.asarray(np.ascontiguousarray(np.asarray(w).T)) for w in as_int8]
    scales = [jnp.ones((s[1],), jnp.float32) for s in SHAPES]
    x = jnp.ones((1, D), jnp.float32)
    print(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
          f"{len(SHAPES)} matrices, {sum(a * b for a, b in SHAPES) / 1e6:.1f}M weights")
    rows = [("float32 dot", float_dot, as_float, False),
            ("int8 -> float32 copy, dot", dequantized_dot, as_int8, False),
            ("int8 fused multiply-sum [in, out]", fused, as_int8, False),
            ("int8 fused multiply-sum [out, in]", fused_transposed, transposed, True),
            ("int8 x int8 -> int32 dot", int8_dot, as_int8, False)]
    base = None
    for name, product, weights, is_t in rows:
        run = chain(product, is_t)
        run(x, weights, scales).block_until_ready()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            run(x, weights, scales).block_until_ready()
            times.append(time.perf_counter() - t)
        ms = 1e3 * statistics.median(times)
        nbytes = sum(w.size * w.dtype.itemsize for w in weights)
        base = base or ms
        print(f"{name:36s} {ms:8.2f} ms  {nbytes / ms / 1e6:6.2f} GB/s of weights  "
              f"{base / ms:5.2f}x float32", flush=True)


if __name__ == "__main__":
    main()
