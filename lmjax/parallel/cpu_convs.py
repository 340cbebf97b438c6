"""Convolution gradients in the layout XLA:CPU's fast kernels take, inside loops too.

XLA:CPU rewrites convolutions into the canonical layout (NHWC x HWIO -> NHWC) that its fast
convolution kernels take only in a program's entry computation, not inside loops
(ConvCanonicalization): the backward convolutions of a step inside `lax.scan` fall back to a
generic loop, 4x slower for the whole step (docs/federated.md). `canonical_convs(loss)` is the
same function with every plain 2-D convolution given a custom VJP that writes both backward
convolutions in the canonical layout: same values, same gradients, fast kernels. Federated
clients' local steps (a scan) use it; benchmarks/dp.py and benchmarks/ensemble.py measure it on
DP-SGD's per-example gradients and the ensemble's vmapped members.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # lhs, rhs, out specs of NHWC, HWIO, NHWC


def _conv(x, w, padding, precision):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, precision=precision,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def canonical_conv(x: jax.Array, w: jax.Array, padding: tuple, precision=None) -> jax.Array:
    """A stride-1 NHWC x HWIO convolution whose gradients are canonical convolutions too."""
    return _conv(x, w, padding, precision)


def _canonical_conv_fwd(x, w, padding, precision):
    return _conv(x, w, padding, precision), (x, w)


def _canonical_conv_bwd(padding, precision, res, g):
    x, w = res
    back = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(w.shape[:2], padding))
    dx = _conv(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), back, precision)
    # dw[a, b, i, o] = sum over n, h, w of x[n, h + a, w + b, i] g[n, h, w, o]: a convolution
    # with the input channels as the batch and the examples as the features.
    dw = _conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), padding, precision)
    return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def _is_plain_conv(params: dict) -> bool:
    d = params["dimension_numbers"]
    return (len(params["window_strides"]) == 2 and set(params["window_strides"]) == {1}
            and set(params["lhs_dilation"]) == {1} and set(params["rhs_dilation"]) == {1}
            and params["feature_group_count"] == 1 and params["batch_group_count"] == 1
            and params.get("preferred_element_type") is None
            and (tuple(d.lhs_spec), tuple(d.rhs_spec), tuple(d.out_spec)) == _NHWC)


def _eval_jaxpr(jaxpr, consts, *args):
    """jax.core.eval_jaxpr, with plain convolutions replaced by `canonical_conv`."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "conv_general_dilated" and _is_plain_conv(eqn.params):
            padding = tuple(tuple(p) for p in eqn.params["padding"])
            outs = [canonical_conv(*vals, padding, eqn.params["precision"])]
        elif name in ("pjit", "jit", "closed_call") and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            outs = _eval_jaxpr(inner.jaxpr, inner.consts, *vals)
        else:
            bind = eqn.primitive.get_bind_params(eqn.params)
            subfuns, bind = bind if isinstance(bind, tuple) else ((), bind)  # older jax: a pair
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *vals, **bind)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def canonical_convs(fn):
    """`fn` with its plain 2-D convolutions given canonical-layout gradients (same values)."""
    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped
