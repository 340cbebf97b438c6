"""Robust accuracy over a whole evaluation split: the attack jitted once, every batch and every
eps through the same compiled program (eps is an argument, not a constant)."""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.robust import attacks


def robust_accuracy(apply_fn: Callable, variables, batches: Iterable[dict],
                    eps_values: list[float], attack: str = "pgd", *, steps: int = 20,
                    restarts: int = 1, step_size: float = 0.0, seed: int = 0) -> list[dict]:
    """[{eps, clean_accuracy, robust_accuracy, max_perturbation, examples}] for each eps.

    `apply_fn(variables, x)` gives logits for images `x` in [0, 1]; `batches` yield `pixels`
    (floats in [0, 1]), `labels` and a `weights` row mask (0 for padding rows).
    """
    eps_values = [attacks.check_eps(e) for e in eps_values]
    if attack not in ("fgsm", "pgd"):
        raise ValueError(f"attack={attack!r}: evaluate with fgsm or pgd.")
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps={steps}, restarts={restarts}: both must be at least 1.")

    @jax.jit
    def counts(variables, x, labels, weights, eps, key):
        fn = lambda x: apply_fn(variables, x)  # noqa: E731
        x_adv = attacks.attack(attack, fn, x, labels, eps, key, steps=steps,
                               step_size=step_size, restarts=restarts)
        clean = ((fn(x).argmax(-1) == labels) * weights).sum()
        robust = ((fn(x_adv).argmax(-1) == labels) * weights).sum()
        # The largest change of any pixel, and how far outside [0, 1] any pixel went.
        linf = (jnp.abs(x_adv - x).reshape(len(x), -1).max(-1) * weights).max()
        outside = jnp.maximum(-x_adv.min(), x_adv.max() - 1.0)
        return clean, robust, jnp.maximum(linf, 0.0), outside

    totals = {e: np.zeros(5) for e in eps_values}  # clean, robust, n, linf, outside
    key = jax.random.key(seed)
    for i, batch in enumerate(batches):
        for j, eps in enumerate(eps_values):
            c, r, linf, out = counts(variables, batch["pixels"], batch["labels"],
                                     batch["weights"], jnp.float32(eps),
                                     jax.random.fold_in(key, i * 1000 + j))
            t = totals[eps]
            t[:3] += [float(c), float(r), float(batch["weights"].sum())]
            t[3], t[4] = max(t[3], float(linf)), max(t[4], float(out))
    rows = []
    for eps, (c, r, n, linf, out) in totals.items():
        if n == 0:
            raise ValueError("no examples to attack: the split is empty.")
        rows.append({"eps": eps, "clean_accuracy": c / n, "robust_accuracy": r / n,
                     "max_perturbation": linf, "outside_unit_range": max(out, 0.0),
                     "examples": int(n)})
    return rows


def format_table(rows: list[dict], title: str) -> str:
    lines = [title, f"{'eps':>6}  {'clean':>7}  {'robust':>7}  {'max |delta|':>11}"]
    for r in rows:
        lines.append(f"{r['eps']:>6.3f}  {100 * r['clean_accuracy']:>6.2f}%  "
                     f"{100 * r['robust_accuracy']:>6.2f}%  {r['max_perturbation']:>11.4f}")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: str) -> None:
    """Robust accuracy against eps, one line per labelled result, as a small PNG."""
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed for the picture

    fig = Figure(figsize=(4.5, 3.2), dpi=100)  # not pyplot's: notebooks keep their plots
    ax = fig.subplots()
    for label, rows in results.items():
        eps = [0.0] + [r["eps"] for r in rows]
        acc = [100 * rows[0]["clean_accuracy"]] + [100 * r["robust_accuracy"] for r in rows]
        ax.plot(eps, acc, marker="o", label=label)
    ax.set_xlabel("L-infinity eps (pixels in [0, 1])")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
