"""DP-SGD step cost against a plain step, interleaved in one process (a shared machine slows
both alike): the whole jitted train step (gradients + optimizer) of the Fashion-MNIST `dp`
preset's CNN, with and without privacy.dp, on the same model and expected batch size.

    python benchmarks/dp.py                      # fashion_mnist.py:dp, batch 512, 10 rounds
    python benchmarks/dp.py --batch=256 --rounds=5
    python benchmarks/dp.py --plot runs/dp-eps1 runs/dp-eps3 runs/dp-eps8 --out=docs/dp.png

Variants (one line each, images/s counting the expected batch, i.e. real examples):
  plain   the preset with privacy.dp=False (plain mean gradient, batch `--batch`)
  dp      lmjax's DP step: vmap(grad) of batch-of-1 losses, optax.per_example_global_norm_clip,
          noise in the optimizer; runs on the padded Poisson batch
  optax   the same per-example gradients through optax.contrib.differentially_private_aggregate
          (clip + noise + mean in one transform; no Poisson mask), for comparison
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import optax  # noqa: E402

from lmjax.config import load_config  # noqa: E402
from lmjax.train.setup import setup  # noqa: E402


def plot(workdirs: list[str], out: str, reference: float | None) -> None:
    """Test accuracy against the epsilon each finished DP run spent, as a small PNG."""
    import json

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = []
    for w in workdirs:
        rows = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
        eps = [r["epsilon"] for r in rows if "epsilon" in r]
        test = [r["accuracy"] for r in rows if r["split"].endswith("test")]
        if eps and test:
            points.append((max(eps), test[-1], max(r["step"] for r in rows)))
            print(f"{w}: epsilon {max(eps):.3f}, test accuracy {test[-1]:.4f}")
    points.sort()
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ax.plot([p[0] for p in points], [100 * p[1] for p in points], "o", label="DP-SGD CNN")
    for eps, acc, steps in points:  # runs may differ in length: say which
        ax.annotate(f"{steps} steps", (eps, 100 * acc), fontsize=7, textcoords="offset points",
                    xytext=(4, -10))
    if reference is not None:
        ax.axhline(100 * reference, color="gray", ls="--", label="non-private CNN")
    ax.axhline(84, color="red", ls=":", lw=1, label="target at epsilon <= 3")
    ax.set(xlabel="epsilon (delta = 1e-5)", ylabel="test accuracy (%)",
           title="Fashion-MNIST: privacy vs accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", nargs="*", help="DP run directories: plot accuracy vs epsilon")
    ap.add_argument("--out", default="docs/dp_epsilon_accuracy.png")
    ap.add_argument("--reference", type=float, default=None,
                    help="the non-private model's test accuracy, drawn as a line")
    ap.add_argument("--config", default="configs/fashion_mnist.py:dp")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    args = ap.parse_args()
    if args.plot:
        return plot(args.plot, args.out, args.reference)

    def config(dp: bool):
        cfg = load_config(args.config)  # the dp preset: it has the privacy section
        cfg.train.batch_size = args.batch
        cfg.privacy.dp = dp
        cfg.privacy.target_epsilon = 0.0
        return cfg

    runs = {}
    for name, dp in (("plain", False), ("dp", True)):
        s = setup(config(dp), log=lambda *_: None)
        state, step = s.new_state(), s.train_step()
        runs[name] = [s, state, step, s.task.train_batch(0)]

    # optax's transform on the same per-example gradients (no Poisson mask: all rows real).
    s = runs["plain"][0]
    agg = optax.contrib.differentially_private_aggregate(1.0, 1.0, seed=0)
    tx = optax.chain(agg, optax.adam(1e-3))
    params = jax.tree.map(lambda x: x.copy(), runs["plain"][1].params)  # plain's are donated
    opt = tx.init(params)

    def per_example_step(params, opt, batch, rng):
        def one(ex, r):
            return jax.grad(lambda p: s.task.loss(p, {}, jax.tree.map(lambda x: x[None], ex),
                                                  r)[0])(params)
        grads = jax.vmap(one)(batch, jax.random.split(rng, batch["labels"].shape[0]))
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    optax_step = jax.jit(per_example_step)
    optax_batch = runs["plain"][3]

    timings = {k: 0.0 for k in ("plain", "dp", "optax")}
    for r in range(args.rounds + 1):  # round 0 compiles
        for name in ("plain", "dp"):
            s, state, step, batch = runs[name]
            t = time.perf_counter()
            for _ in range(args.steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(state)
            runs[name][1] = state
            if r:
                timings[name] += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(args.steps):
            params, opt = optax_step(params, opt, optax_batch, jax.random.PRNGKey(r))
        jax.block_until_ready(params)
        if r:
            timings["optax"] += time.perf_counter() - t
    n = args.rounds * args.steps * args.batch
    padded = runs["dp"][3]["dp_weights"].shape[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared)")
    print(f"config {args.config}, expected batch {args.batch} (DP pads to {padded}), "
          f"{args.rounds} rounds x {args.steps} steps, interleaved")
    for name, secs in timings.items():
        print(f"{name:6s} {n / secs:8.1f} images/s  {secs / (args.rounds * args.steps) * 1e3:8.1f} "
              f"ms/step  {secs / timings['plain']:.2f}x plain")


if __name__ == "__main__":
    main()
