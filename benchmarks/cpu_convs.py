"""Does the canonical-convolution rewrite (lmjax/parallel/cpu_convs.py) speed up more than the
federated clients' scan? DP-SGD's per-example gradients and an ensemble's vmapped members also
differentiate convolutions inside a batched (vmapped) computation.

    python benchmarks/cpu_convs.py                      # the dp preset's CNN, batch 64
    python benchmarks/cpu_convs.py --batch=256 --members=5 --repeats=5

Prints images/s of one jitted gradient computation, each way with and without the rewrite,
timed in interleaved rounds (best of --repeats) on random images: no data is read.
- dp: per-example clipped gradients (lmjax/privacy/dp.py) of the dp preset's CNN;
- ensemble: --members CNNs (the cnn preset's) vmapped, each its own gradient;
- step: the plain batch gradient of the cnn preset (what XLA already does fast).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    import jax  # noqa: lazy: after XLA_FLAGS, which JAX reads when it starts
    import numpy as np

    from lmjax.config import load_config
    from lmjax.models import baselines
    from lmjax.parallel.cpu_convs import canonical_convs
    from lmjax.privacy import dp
    from lmjax.tasks.classification import classification_loss
    from lmjax.tasks.ensemble import member_keys

    rng = np.random.default_rng(0)
    images = jax.numpy.asarray(rng.integers(0, 255, (args.batch, 28, 28, 1)).astype(np.uint8))
    labels = jax.numpy.asarray(rng.integers(0, 10, args.batch).astype(np.int32))
    batch = {"inputs": images, "labels": labels}

    def model_loss(preset: str):
        model = baselines.from_section(load_config(f"configs/fashion_mnist.py:{preset}").model,
                                       10)
        variables = model.init(jax.random.PRNGKey(0), images[:1])
        params, state = variables["params"], {k: v for k, v in variables.items()
                                              if k != "params"}

        def loss(p, s, b, r):
            logits, new = model.apply({"params": p, **s}, b["inputs"].astype(np.float32) / 255,
                                      deterministic=False, rngs={"dropout": r},
                                      mutable=list(s))
            return classification_loss(logits, b["labels"])[0], ({}, new)

        return loss, params, state

    ways = {}
    dp_loss, dp_params, _ = model_loss("dp")
    for name, fn in (("dp", dp_loss), ("dp canonical", canonical_convs(dp_loss))):
        grad = jax.jit(dp.clipped_value_and_grad(fn, 1.0, args.batch))
        dp_batch = {**batch, "dp_weights": jax.numpy.ones(args.batch)}
        ways[name] = (lambda g=grad: g(dp_params, {}, dp_batch, jax.random.PRNGKey(1)),
                      args.batch)
    cnn_loss, cnn_params, cnn_state = model_loss("cnn")
    m = args.members
    stacked, states = jax.tree.map(lambda x: jax.numpy.stack([x] * m), (cnn_params, cnn_state))
    for name, fn in (("ensemble", cnn_loss), ("ensemble canonical", canonical_convs(cnn_loss))):
        grad = jax.jit(jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(0, 0, None, 0)))
        ways[name] = (lambda g=grad: g(stacked, states, batch,
                                       member_keys(jax.random.PRNGKey(1), m)), args.batch * m)
    for name, fn in (("step", cnn_loss), ("step canonical", canonical_convs(cnn_loss))):
        grad = jax.jit(jax.value_and_grad(fn, has_aux=True))
        ways[name] = (lambda g=grad: g(cnn_params, cnn_state, batch, jax.random.PRNGKey(1)),
                      args.batch)

    for name, (call, _) in ways.items():  # compile
        jax.block_until_ready(call())
    best = {}
    for _ in range(args.repeats):
        for name, (call, _) in ways.items():
            t = time.perf_counter()
            jax.block_until_ready(call())
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    for name, (_, images_per_call) in ways.items():
        print(f"{name:20s} {images_per_call / best[name]:10,.0f} images/s "
              f"({best[name] * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
