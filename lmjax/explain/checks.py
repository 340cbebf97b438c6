"""Checks that attributions mean something: integrated gradients' completeness, Adebayo et
al.'s (2018) model-randomization and shuffled-label tests, deletion/insertion curves (Petsiuk
et al. 2018) and LIME's fit and stability. benchmarks/explain_checks.py runs them on a trained
Fashion-MNIST CNN."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.explain import gradients as g
from lmjax.explain import lime as limelib
from lmjax.explain.render import heat


def completeness(model: g.Classifier, x: jax.Array, target: jax.Array, baseline: jax.Array,
                 attributions: jax.Array) -> np.ndarray:
    """|sum(attributions) - (F(x) - F(baseline))| / |F(x) - F(baseline)| per example. A
    baseline with a leading axis of draws (gradients.ig_baselines) compares with their mean F."""
    draws = baseline if baseline.ndim == x.ndim + 1 else baseline[None]
    f_base = jnp.mean(jnp.stack([g._target_score(model.logits(jnp.broadcast_to(b, x.shape)),
                                                 target) for b in draws]), 0)
    gap = g._target_score(model.logits(x), target) - f_base
    total = attributions.reshape(len(x), -1).sum(-1)
    return np.asarray(jnp.abs(total - gap) / jnp.maximum(jnp.abs(gap), 1e-12))


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per example, the Spearman rank correlation of |a| and |b| (channels summed; ties take
    their average rank, as Grad-CAM's ReLU leaves many zeros)."""
    from scipy.stats import spearmanr  # lazy: scipy comes with scikit-learn, an optional extra

    out = []
    for u, v in zip(a, b):
        u, v = heat(u).ravel(), heat(v).ravel()
        r = spearmanr(u, v).statistic if u.std() > 0 and v.std() > 0 else 0.0
        out.append(float(r))
    return np.array(out)


def layer_order(model: g.Classifier, example: jax.Array) -> list[str]:
    """The model's top-level layers that hold weights, from the logits down, in the order the
    model calls them (the params dict is sorted by name, not by depth)."""
    called = []

    def record(next_fun, args, kwargs, context):
        path = context.module.scope.path if context.module.scope else ()
        if len(path) == 1 and path[0] not in called:  # a direct child of the model
            called.append(path[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.module.apply(v, x), model.variables, example[:1])
    return [name for name in called if name in model.variables["params"]][::-1]


def randomized(model: g.Classifier, key: jax.Array, layers: list[str],
               example: jax.Array) -> g.Classifier:
    """The model with `layers` re-drawn from their initialisers (batch-norm statistics reset
    with them): one stage of the cascading randomization. `example`: one input, for shapes."""
    fresh = jax.jit(model.module.init)(key, example[:1])
    variables = {}
    for collection, values in model.variables.items():
        values = dict(values)
        for name in layers:
            if name in values:
                values[name] = fresh[collection][name]
        variables[collection] = values
    return g.Classifier(variables=variables, module=model.module)


def cascade(model: g.Classifier, key: jax.Array,
            example: jax.Array) -> list[tuple[str, g.Classifier]]:
    """[(top layer randomized so far, model)] from the logits down to the input."""
    order = layer_order(model, example)
    return [(order[i], randomized(model, key, order[:i + 1], example))
            for i in range(len(order))]


@functools.partial(jax.jit, static_argnames=("steps",))
def _curves(model: g.Classifier, x, target, ranks, baseline, steps: int):
    """Probability of the target class as pixels are deleted (set to the baseline) or inserted
    (into the baseline) in rank order; (steps + 1, batch) each."""
    n = ranks.shape[1]
    b = jnp.broadcast_to(baseline, x.shape)

    def at(k):
        keep = (ranks >= (k * n) // steps).reshape(x.shape[:3])[..., None]  # not yet removed
        deleted = jnp.where(keep, x, b)
        inserted = jnp.where(keep, b, x)

        def prob(v):
            return jnp.take_along_axis(jax.nn.softmax(model.logits(v)), target[:, None], 1)[:, 0]

        return prob(deleted), prob(inserted)

    return jax.lax.map(at, jnp.arange(steps + 1))


def deletion_insertion(model: g.Classifier, x: jax.Array, target: jax.Array,
                       attributions: np.ndarray | None, baseline: jax.Array, key=None,
                       steps: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """(deletion AUC, insertion AUC) per example, pixels taken most-attributed first (or in a
    random order when `attributions` is None); AUC by the trapezoid over fractions 0..1."""
    batch = len(x)
    if attributions is None:
        scores = np.asarray(jax.random.uniform(key, (batch, int(np.prod(x.shape[1:3])))))
    else:
        scores = np.stack([heat(a).ravel() for a in attributions])
    ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)  # 0 = first out
    dele, ins = _curves(model, x, target, jnp.asarray(ranks), baseline, steps)

    def auc(curve):
        return np.asarray((curve[1:] + curve[:-1]).sum(0) / (2 * steps))

    return auc(dele), auc(ins)


def lime_stability(image: np.ndarray, target: int, probabilities, seeds=(0, 1, 2, 3, 4),
                   samples: int = 1000, segments: str = "grid:4",
                   k: int = 5) -> tuple[float, float, list[float]]:
    """(mean pairwise top-k Jaccard across seeds, median R², seconds per explanation)."""
    import time

    results, seconds = [], []
    for s in seeds:
        start = time.perf_counter()
        results.append(limelib.explain_image(image, target, probabilities, samples, segments, s))
        seconds.append(time.perf_counter() - start)
    tops = [r.top(k) for r in results]
    pairs = [limelib.jaccard(tops[i], tops[j]) for i in range(len(tops))
             for j in range(i + 1, len(tops))]
    return float(np.mean(pairs)), float(np.median([r.score for r in results])), seconds
