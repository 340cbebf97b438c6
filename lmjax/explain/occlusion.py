"""Occlusion (Zeiler & Fergus 2014): how much the target logit drops when a square patch is
replaced by the baseline, spread back over the pixels the patch covered. Every patch of every
image goes through the model in one jitted, batched sweep."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from lmjax.explain.gradients import Classifier, _target_score


@functools.partial(jax.jit, static_argnames=("size", "stride"))
def occlusion(model: Classifier, x: jax.Array, target: jax.Array, baseline: jax.Array,
              size: int = 4, stride: int = 2) -> jax.Array:
    """(batch, H, W, 1): the mean drop of logit[target] over the patches covering each pixel."""
    chex.assert_rank(x, 4)
    b, h, w, _ = x.shape
    baseline = jnp.broadcast_to(baseline, x.shape)
    rows = jnp.arange(0, h - size + 1, stride)
    cols = jnp.arange(0, w - size + 1, stride)
    corners = jnp.stack(jnp.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    ii, jj = jnp.arange(h)[:, None], jnp.arange(w)[None, :]

    def mask(corner):
        r, c = corner
        return ((ii >= r) & (ii < r + size) & (jj >= c) & (jj < c + size)).astype(x.dtype)

    masks = jax.vmap(mask)(corners)                                    # (patches, H, W)
    full = _target_score(model.logits(x), target)

    def drop(m):
        occluded = x * (1 - m[None, :, :, None]) + baseline * m[None, :, :, None]
        return full - _target_score(model.logits(occluded), target)   # (batch,)

    drops = jax.lax.map(drop, masks)                                   # (patches, batch)
    total = jnp.einsum("pb,phw->bhw", drops, masks)
    count = jnp.maximum(masks.sum(0), 1.0)
    return (total / count)[..., None]
