"""DP-SGD's three parts (Abadi et al. 2016): Poisson-sampled batches, per-example clipped
gradients, Gaussian noise on their sum.

- Batches: every example joins a step's batch independently with probability q (what the
  accountant assumes), drawn from (seed, step) so that a resumed run sees the same batches. The
  batch is padded to a fixed size with weight-0 rows (one compiled step); the rare sample larger
  than the pad is truncated, which only lowers its sensitivity.
- Gradients: `vmap(grad)` over batch-of-1 losses, clipped by optax's
  `per_example_global_norm_clip` and summed (benchmarks/dp.py measures its cost; jax-privacy's
  `clipped_grad` measured about 5x slower than `vmap(grad)` + clip on this CPU, stack notes).
- Noise: std sigma * C on the summed gradients, once per optimizer step (after gradient
  accumulation), then divided with them by the expected batch size q * N.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


def padded_size(expected: float, multiple: int = 1, sds: float = 5.0) -> int:
    """A fixed batch size that a Poisson sample of mean `expected` exceeds with probability
    about 3e-7 (5 standard deviations), rounded up to a multiple of `multiple`."""
    size = math.ceil(expected + sds * math.sqrt(expected) + 1)
    return -(-size // multiple) * multiple


def poisson_sample(seed: int, step: int, num_examples: int, rate: float,
                   size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(indices, weights, drawn): example indices of one Poisson-sampled batch, padded to `size`
    (padding rows repeat index 0 with weight 0), and how many were drawn before truncation.

    Each of the n examples is in with probability `rate`: the size is Binomial(n, rate) and,
    given the size, the subset is uniform, which is the same distribution."""
    rng = np.random.default_rng([seed, step, 0x5EED_D9])
    drawn = int(rng.binomial(num_examples, rate))
    ids = rng.choice(num_examples, size=min(drawn, size), replace=False)
    indices = np.zeros(size, np.int64)
    indices[:len(ids)] = np.sort(ids)
    weights = np.zeros(size, np.float32)
    weights[:len(ids)] = 1.0
    return indices, weights, drawn


def clipped_value_and_grad(loss_fn: Callable, clip_norm: float, normalizer: float,
                           weight_key: str = "dp_weights") -> Callable:
    """A `Task.value_and_grad()` for DP-SGD: each example's gradient (a batch-of-1 loss,
    weighted by `batch[weight_key]`, 0 for padding) clipped to `clip_norm`, summed, divided by
    `normalizer` (the expected batch size). Loss and metrics are weighted means over the real
    rows. The model state is returned unchanged: per-example gradients need models without
    cross-example state (no batch norm)."""

    def one(params, model_state, example, weight, rng):
        def weighted(p):
            batch = jax.tree.map(lambda x: x[None], example)
            loss, (aux, _) = loss_fn(p, model_state, batch, rng)
            return loss * weight, (loss, aux)
        return jax.grad(weighted, has_aux=True)(params)

    per_example = jax.vmap(one, in_axes=(None, None, 0, 0, 0))

    def value_and_grad(params, model_state, batch, rng):
        batch = dict(batch)
        weights = batch.pop(weight_key)
        chex.assert_rank(weights, 1)
        rngs = jax.random.split(rng, weights.shape[0])
        grads, (losses, aux) = per_example(params, model_state, batch, weights, rngs)
        summed, _ = optax.per_example_global_norm_clip(grads, clip_norm)
        count = jnp.maximum(weights.sum(), 1.0)
        mean = lambda v: (v * weights).sum() / count  # noqa: E731
        grads = jax.tree.map(lambda g: g / normalizer, summed)
        aux = {k: mean(v) for k, v in aux.items()}
        aux["batch_size"] = weights.sum()
        return (mean(losses), (aux, model_state)), grads

    return value_and_grad


def per_example_norms(loss_fn: Callable, params, model_state, batch: dict, rng,
                      clip_norm: float) -> jax.Array:
    """The L2 norm of every example's clipped gradient (for tests and diagnostics)."""
    def one(example, r):
        g = jax.grad(lambda p: loss_fn(p, model_state, jax.tree.map(lambda x: x[None], example),
                                       r)[0])(params)
        return g
    n = jax.tree.leaves(batch)[0].shape[0]
    grads = jax.vmap(one)(batch, jax.random.split(rng, n))
    norms = jax.vmap(optax.tree.norm)(grads)
    return norms * jnp.minimum(1.0, clip_norm / norms)


class NoiseState(NamedTuple):
    count: jax.Array  # steps taken: the noise of step t is drawn from (seed, t)


def add_gaussian_noise(std: float, seed: int) -> optax.GradientTransformation:
    """Adds N(0, std^2) to every gradient coordinate, a fresh draw each step, keyed by
    (seed, step) so that a resumed run draws the same noise. (optax.add_noise keeps a typed
    PRNG key in its state, which checkpoint digests cannot read.)"""

    def init(params):
        del params
        return NoiseState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
        noise = optax.tree.random_like(key, updates, jax.random.normal)
        updates = jax.tree.map(lambda u, n: u + std * n.astype(u.dtype), updates, noise)
        return updates, NoiseState(count=state.count + 1)

    return optax.GradientTransformation(init, update)
