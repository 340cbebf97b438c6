"""One FedAvg round's cost, clients vmapped vs lax.map, for a config's model.

    python benchmarks/federated.py --config=configs/fashion_mnist.py:fedavg --steps=20
    python benchmarks/federated.py --local_batch=50 --steps=11

Prints images/s of local training for each way of running the sampled clients (interleaved,
best of --repeats), on random images of the config's shape; no data is read.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import load_config
from lmjax.tasks import make_task
from lmjax.train.federated import clients_per_round, make_round
from lmjax.train.state import split_variables


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/fashion_mnist.py:fedavg")
    ap.add_argument("--steps", type=int, default=20, help="local steps per client")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--local_batch", type=int, default=0, help="0: the config's")
    args = ap.parse_args()
    cfg = load_config(args.config)
    if args.local_batch:
        cfg.federated.local_batch = args.local_batch
    f = cfg.federated
    task = make_task(cfg, log=lambda s: None)
    params, state = split_variables(jax.tree.map(
        lambda x: getattr(x, "value", x), task.init_variables(jax.random.PRNGKey(0)),
        is_leaf=lambda x: hasattr(x, "value")))
    m, batch = clients_per_round(f), f.local_batch or 64
    n = m * args.steps * batch
    shape = task.example["shape"]
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(0, 255, (n, *shape)).astype(task.example["dtype"]))
    labels = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    idx = np.arange(n, dtype=np.int32).reshape(m, args.steps, batch)
    valid = np.ones((m, args.steps), np.float32)
    weights = jnp.full((m,), 1.0 / m)
    fns = {way: jax.jit(make_round(task, f.client_lr, f.server_lr, clients_at_once=way))
           for way in ("vmap", "map")}
    best = {way: float("inf") for way in fns}
    for way, fn in fns.items():  # compile
        jax.block_until_ready(fn(params, state, inputs, labels, idx, valid, weights,
                                 jax.random.PRNGKey(0)))
    for _ in range(args.repeats):
        for way, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(params, state, inputs, labels, idx, valid, weights,
                                     jax.random.PRNGKey(1)))
            best[way] = min(best[way], time.perf_counter() - t)
    for way, s in best.items():
        print(f"{way:5s} {m} clients x {args.steps} steps x batch {batch}: "
              f"{n / s:,.0f} images/s ({s:.2f} s)")


if __name__ == "__main__":
    main()
