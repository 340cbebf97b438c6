"""One FedAvg round's local training speed against the plain training step, for a config's model.

    python benchmarks/federated.py --config=configs/fashion_mnist.py:fedavg --steps=20
    python benchmarks/federated.py --ways=step,map,shard --local_batch=50 --steps=12
    python benchmarks/federated.py --plot=runs/fed-iid,runs/fed-shards,runs/fedsgd \
        --out=docs/federated_accuracy.png      # validation accuracy against rounds

Prints images/s of local training for each way of running the sampled clients, interleaved in
one process (best of --repeats), on random images of the config's shape; no data is read:
- step: the plain jitted training step at the local batch, called from Python for each client
  and step (the reference: what a Python loop over models would cost);
- map / vmap: the round (`lmjax/tasks/federated.py:make_round`) with clients in turn (lax.map) or vmapped, on one device;
- map_raw / vmap_raw: the same without the canonical-convolution rewrite (the old round);
- shard: the round with the clients split over --devices CPU devices by shard_map, each
  device mapping over its share.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def plot(workdirs: list[str], out: str, metric: str = "accuracy") -> None:
    """One curve of the validation `metric` against rounds per run directory (metrics.jsonl)."""
    import json  # noqa: lazy: only the plot needs these

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for workdir in workdirs:
        rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
        rows = [r for r in rows if r.get("split") == "val" and metric in r]
        ax.plot([r["step"] for r in rows], [r[metric] for r in rows], marker="o",
                label=os.path.basename(workdir.rstrip("/")))
    ax.set_xlabel("round")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", default="", help="comma-separated run directories: plot them")
    ap.add_argument("--out", default="docs/federated_accuracy.png")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--config", default="configs/fashion_mnist.py:fedavg")
    ap.add_argument("--steps", type=int, default=20, help="local steps per client")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--local_batch", type=int, default=0, help="0: the config's")
    ap.add_argument("--devices", type=int, default=2, help="CPU devices for 'shard'")
    ap.add_argument("--ways", default="step,map,map_raw,vmap,shard")
    args = ap.parse_args()
    if args.plot:
        return plot(args.plot.split(","), args.out, args.metric)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    import jax  # noqa: lazy: after XLA_FLAGS, which JAX reads when it starts
    import jax.numpy as jnp
    import numpy as np

    from lmjax.config import load_config
    from lmjax.tasks import make_task
    from lmjax.tasks.federated import make_round
    from lmjax.train.state import split_variables

    cfg = load_config(args.config)
    if args.local_batch:
        cfg.federated.local_batch = args.local_batch
    f = cfg.federated
    federated = make_task(cfg, log=lambda s: None)
    task = federated.inner  # what each client trains
    params, state = split_variables(jax.tree.map(
        lambda x: getattr(x, "value", x), task.init_variables(jax.random.PRNGKey(0)),
        is_leaf=lambda x: hasattr(x, "value")))
    m, batch = federated.per_round, f.local_batch or 64
    n = m * args.steps * batch
    rng = np.random.default_rng(0)
    shape, dtype = task.example["shape"], task.example["dtype"]
    arrays = {"inputs": jnp.asarray(rng.integers(0, 255, (n, *shape)).astype(dtype)),
              "labels": jnp.asarray(rng.integers(0, task.num_outputs, n).astype(np.int32))}
    idx = np.arange(n, dtype=np.int32).reshape(m, args.steps, batch)
    valid = np.ones((m, args.steps), np.float32)
    weights = jnp.full((m,), 1.0 / m)
    key = jax.random.PRNGKey(1)
    mesh = jax.make_mesh((args.devices,), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)

    @jax.jit
    def step(p, ms, rows, k):
        (loss, (_, ms)), g = grad_fn(p, ms, task.gather(arrays, rows), k)
        return jax.tree.map(lambda w, gw: w - f.client_lr * gw, p, g), ms, loss

    def plain():
        for c in range(m):
            p, ms = params, state
            for s in range(args.steps):
                p, ms, _ = step(p, ms, idx[c, s], jax.random.fold_in(key, s))
        return p

    def round_fn(way: str):
        fn = jax.jit(make_round(task, f.client_lr,
                                clients_at_once="vmap" if way.startswith("vmap") else "map",
                                mesh=mesh if way == "shard" else None,
                                canonical=not way.endswith("_raw")), static_argnums=7)
        return lambda: fn(params, state, arrays, idx, valid, weights, key, m)[0]

    ways = {w: plain if w == "step" else round_fn(w) for w in args.ways.split(",")}
    best = {}
    for way, fn in ways.items():  # compile
        t = time.perf_counter()
        jax.block_until_ready(fn())
        print(f"{way}: first call (compile) {time.perf_counter() - t:.1f} s", file=sys.stderr)
    for _ in range(args.repeats):
        for way, fn in ways.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[way] = min(best.get(way, float("inf")), time.perf_counter() - t)
    for way, s in best.items():
        print(f"{way:8s} {m} clients x {args.steps} steps x batch {batch}: "
              f"{n / s:,.0f} images/s ({s:.2f} s)")


if __name__ == "__main__":
    main()
