"""FGSM and PGD under an L-infinity budget, batched and jitted, on images in [0, 1].

Every attack takes `logits_fn(x) -> logits` for a batch `x` of floats in [0, 1] (the model with
its own pixel scaling folded in: `pixel_model` below) and returns adversarial images that stay
within `eps` of `x` and inside [0, 1]. The loss each attack climbs is the per-example
cross-entropy, summed, so every example's gradient is its own.

foolbox 3.3.4's `LinfPGD` is the reference (tests/robust/test_attacks.py); it runs JAX through
EagerPy one step at a time, so these are written in JAX and jitted whole.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from lmjax.models.baselines import as_float

LogitsFn = Callable[[jax.Array], jax.Array]


def check_eps(eps: float, name: str = "eps") -> float:
    """An L-infinity radius for images in [0, 1]: in (0, 1]."""
    eps = float(eps)
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"{name}={eps}: an L-infinity radius for pixels in [0, 1] must be in "
                         "(0, 1] (0.1 is about 25 of 255 grey levels).")
    return eps


def _loss(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array) -> jax.Array:
    logits = logits_fn(x).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()


def _project(x_adv: jax.Array, x: jax.Array, eps: float) -> jax.Array:
    return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def fgsm(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float) -> jax.Array:
    """Goodfellow et al. (2015): one step of size eps along the sign of the input gradient."""
    chex.assert_equal_shape_prefix([x, labels], 1)
    grad = jax.grad(_loss, argnums=1)(logits_fn, x, labels)
    return _project(x + eps * jnp.sign(grad), x, eps)


def fgsm_rs(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float,
            key: jax.Array, step_size: float = 0.0) -> jax.Array:
    """Wong et al. (2020), "Fast is better than free": FGSM from a uniform random start, with
    step 1.25 eps unless given."""
    step_size = step_size or 1.25 * eps
    start = _project(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), x, eps)
    grad = jax.grad(_loss, argnums=1)(logits_fn, start, labels)
    return _project(start + step_size * jnp.sign(grad), x, eps)


def pgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float, key: jax.Array, *,
        steps: int = 20, step_size: float = 0.0, restarts: int = 1,
        random_start: bool = True) -> jax.Array:
    """Madry et al. (2018): `steps` signed-gradient steps projected onto the eps-ball and [0, 1],
    from a uniform random start; step 2.5 eps / steps unless given (Madry's rule, as foolbox's
    default ratio). With `restarts` > 1, each example keeps its strongest run: one that
    misclassifies it if any does, else the one with the highest loss."""
    chex.assert_equal_shape_prefix([x, labels], 1)
    step_size = step_size or 2.5 * eps / steps
    per_example = jax.vmap(lambda lg, y: optax.softmax_cross_entropy_with_integer_labels(lg, y))
    grad_fn = jax.grad(_loss, argnums=1)

    def one_run(key):
        x_adv = x
        if random_start:
            x_adv = _project(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), x, eps)

        def step(_, x_adv):
            g = grad_fn(logits_fn, x_adv, labels)
            return _project(x_adv + step_size * jnp.sign(g), x, eps)

        x_adv = jax.lax.fori_loop(0, steps, step, x_adv)
        logits = logits_fn(x_adv).astype(jnp.float32)
        # Misclassified examples outrank any loss: a restart never undoes a success.
        score = per_example(logits, labels) + 1e6 * (logits.argmax(-1) != labels)
        return x_adv, score

    def restart(carry, key):
        best, best_score = carry
        x_adv, score = one_run(key)
        better = score > best_score
        mask = better.reshape((-1,) + (1,) * (x.ndim - 1))
        return (jnp.where(mask, x_adv, best), jnp.maximum(score, best_score)), None

    keys = jax.random.split(key, restarts)
    first = one_run(keys[0])
    (best, _), _ = jax.lax.scan(restart, first, keys[1:])
    return best


def attack(name: str, logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float,
           key: jax.Array, *, steps: int = 20, step_size: float = 0.0,
           restarts: int = 1) -> jax.Array:
    """The attack called `name`: 'fgsm', 'fgsm_rs' or 'pgd'."""
    if name == "fgsm":
        return fgsm(logits_fn, x, labels, eps)
    if name == "fgsm_rs":
        return fgsm_rs(logits_fn, x, labels, eps, key, step_size)
    if name == "pgd":
        return pgd(logits_fn, x, labels, eps, key, steps=steps, step_size=step_size,
                   restarts=restarts)
    raise ValueError(f"attack={name!r}: use fgsm, fgsm_rs or pgd.")


ATTACKS = ("fgsm", "fgsm_rs", "pgd")


def pixel_model(apply_fn: Callable[[jax.Array], jax.Array],
                example_dtype: str) -> LogitsFn:
    """`apply_fn` (which takes what the data feeds: uint8 pixels, or floats already in [0, 1])
    as a function of float images in [0, 1].

    lmjax's baselines scale uint8 pixels inside the model (x / 255, then standardise) and take
    floats as they are. That scaling is affine, so its two constants are read off the model's own
    scaling of 0 and 255 instead of copied here.
    """
    if example_dtype != "uint8":
        return apply_fn
    lo = as_float(jnp.zeros((), jnp.uint8))
    hi = as_float(jnp.full((), 255, jnp.uint8))
    return lambda x01: apply_fn(lo + (hi - lo) * x01)
