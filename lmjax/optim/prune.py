"""Gradual magnitude pruning as an optax transformation whose state holds the masks.

Zhu & Gupta (2017), "To prune, or not to prune": the sparsity rises from 0 at `start_step` to
`target_sparsity` at `end_step` along s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3); every
`every` steps (and at `end_step`) the masks are recomputed from the weights' magnitudes, per
layer or over all prunable weights at once. Between mask updates the pruned weights are held at
exactly zero: the transformation rewrites each update so that `params + update` is masked.

jaxpruner (not installable here) does the same as `sparsity.wrap_optax`; this is the small subset
lmjax needs, tested against a NumPy reference (tests/optim/test_prune.py).

Prunable: weight matrices and convolution kernels (leaves named `kernel`), except, by default,
the first convolution and the classifier (the top-level `Conv_*` with the lowest index and the
top-level `Dense_*` with the highest), which hold few weights and cost the most accuracy.
Embeddings, biases and norms are never pruned. The masks are a tree shaped like the parameters
(all True where nothing is pruned), so `optax.tree_map_params` gives them the parameters'
shardings and checkpoints keep them.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class PruneState(NamedTuple):
    count: jax.Array  # updates applied so far (the 0-based step of the next update)
    masks: Any        # bool, shaped like the parameters


def sparsity_at(step, target: float, start: int, end: int):
    """Zhu & Gupta's cubic schedule: the sparsity in force after the mask update at `step`."""
    span = max(end - start, 1)
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - start) / span, 0.0, 1.0)
    return target * (1.0 - (1.0 - progress) ** 3)


def _name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def prunable(params, keep_ends: bool = True):
    """A tree of Python bools shaped like `params`: which leaves magnitude pruning may touch."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    tops = {_name(path[0]) for path, _ in leaves}
    index = lambda kind: sorted(int(m.group(1)) for t in tops  # noqa: E731
                                if (m := re.fullmatch(kind + r"_(\d+)", t)))
    excluded = set()
    if keep_ends:
        convs, denses = index("Conv"), index("Dense")
        if convs:
            excluded.add(f"Conv_{convs[0]}")
        if denses:
            excluded.add(f"Dense_{denses[-1]}")

    def keep(path, leaf) -> bool:
        return (_name(path[-1]) == "kernel" and np.ndim(leaf) >= 2
                and _name(path[0]) not in excluded)

    return jax.tree_util.tree_map_with_path(keep, params)


def _ranked_mask(magnitude: jax.Array, sparsity) -> jax.Array:
    """True for all but the floor(sparsity * n) smallest entries (ties: lowest index first)."""
    flat = magnitude.reshape(-1)
    n_prune = jnp.floor(sparsity * flat.size).astype(jnp.int32)
    ranks = jnp.zeros(flat.size, jnp.int32).at[jnp.argsort(flat, stable=True)].set(
        jnp.arange(flat.size, dtype=jnp.int32))
    return (ranks >= n_prune).reshape(magnitude.shape)


def compute_masks(params, which, sparsity, scope: str = "layer"):
    """Masks keeping the largest-magnitude weights of the prunable leaves (`which`), at
    `sparsity` per leaf ('layer') or over all of them together ('global')."""
    leaves, treedef = jax.tree.flatten(params)
    flags = treedef.flatten_up_to(which)
    masks = [jnp.ones(p.shape, bool) for p in leaves]
    chosen = [i for i, f in enumerate(flags) if f]
    if not chosen:
        return treedef.unflatten(masks)
    if scope == "global":
        mags = jnp.concatenate([jnp.abs(leaves[i]).reshape(-1).astype(jnp.float32)
                                for i in chosen])
        joint, offset = _ranked_mask(mags, sparsity), 0
        for i in chosen:
            size = leaves[i].size
            masks[i] = joint[offset:offset + size].reshape(leaves[i].shape)
            offset += size
    else:
        for i in chosen:
            masks[i] = _ranked_mask(jnp.abs(leaves[i]).astype(jnp.float32), sparsity)
    return treedef.unflatten(masks)


def magnitude_pruning(target_sparsity: float, start_step: int, end_step: int, every: int,
                      scope: str = "layer", keep_ends: bool = True
                      ) -> optax.GradientTransformation:
    """Chain it after the optimizer: it turns the optimizer's updates into pruned ones."""

    def init(params):
        # jax.tree.map (not a Python loop) so that optax.tree_map_params' placeholder passes
        return PruneState(count=jnp.zeros((), jnp.int32),
                          masks=jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("magnitude pruning needs the parameters: call tx.update(grads, "
                             "state, params).")
        step = state.count
        new_params = optax.apply_updates(params, updates)
        due = ((step >= start_step) & (step <= end_step)
               & (((step - start_step) % every == 0) | (step == end_step)))
        which = prunable(params, keep_ends)
        masks = jax.lax.cond(
            due, lambda: compute_masks(new_params, which,
                                       sparsity_at(step, target_sparsity, start_step, end_step),
                                       scope),
            lambda: state.masks)
        # params + update is exactly 0 where the mask is off (p + (-p) == 0 in floating point)
        updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype),
                               updates, params, masks)
        return updates, PruneState(count=step + 1, masks=masks)

    return optax.GradientTransformation(init, update)


def resolve_end(section, num_steps: int) -> int:
    """`prune.end_step`, where -1 means 3/4 of the training steps."""
    return int(section.end_step) if section.end_step >= 0 else int(0.75 * num_steps)


def wrap(tx: optax.GradientTransformation, section, num_steps: int
         ) -> optax.GradientTransformation:
    """`tx` followed by magnitude pruning when `prune.target_sparsity` > 0; else `tx` itself
    (so dense runs and their checkpoints keep the optimizer state they always had)."""
    if section is None or not section.get("target_sparsity", 0.0):
        return tx
    return optax.chain(tx, magnitude_pruning(
        float(section.target_sparsity), int(section.start_step), resolve_end(section, num_steps),
        int(section.every), str(section.scope), bool(section.get("keep_ends", True))))


def sparsity_report(params, keep_ends: bool = True) -> dict:
    """Zeros counted in the weights themselves (a saved checkpoint's): over the prunable
    leaves, over all parameters, and per prunable leaf."""
    which = prunable(params, keep_ends)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    flags = jax.tree.leaves(which)
    total = zeros = p_total = p_zeros = 0
    layers = {}
    for (path, leaf), flag in zip(flat, flags):
        arr = np.asarray(leaf)
        z = int(arr.size - np.count_nonzero(arr))
        total, zeros = total + arr.size, zeros + z
        if flag:
            p_total, p_zeros = p_total + arr.size, p_zeros + z
            layers["/".join(_name(e) for e in path)] = z / max(arr.size, 1)
    return {"prunable_sparsity": p_zeros / max(p_total, 1), "prunable_params": p_total,
            "overall_sparsity": zeros / max(total, 1), "params": total, "layers": layers}


def describe(report: dict) -> str:
    return (f"Sparsity counted in the weights: {report['prunable_sparsity']:.2%} of the "
            f"{report['prunable_params']:,} prunable weights, {report['overall_sparsity']:.2%} "
            f"of all {report['params']:,} parameters.")
