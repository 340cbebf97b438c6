"""Gradient attributions of an image classifier: saliency, SmoothGrad, integrated gradients,
guided backprop and Grad-CAM, each one jitted function over a batch.

Attributions are taken with respect to the model's float input (pixels already scaled and
standardised, `to_input`), for the logit of each example's `target` class. A model is a
`Classifier`: its Flax module and variables (params plus any batch-norm statistics).
"""

from __future__ import annotations

import contextlib
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from lmjax.models import baselines


def to_input(images: jax.Array) -> jax.Array:
    """uint8 pixels -> the model's float input (what the baselines do inside)."""
    return baselines.as_float(jnp.asarray(images))  # one place owns the scaling constants


@struct.dataclass
class Classifier:
    """A pytree: the variables are traced, the module is static (jit compiles once per model
    shape and reuses it for randomized or retrained weights)."""
    variables: dict
    module: nn.Module = struct.field(pytree_node=False)

    def logits(self, x: jax.Array) -> jax.Array:
        return self.module.apply(self.variables, x, deterministic=True)

    @property
    def conv_layers(self) -> list[str]:
        """The layers Grad-CAM can use: one per convolution block ('block0', ...)."""
        channels = getattr(self.module, "channels", None)
        return [f"block{i}" for i in range(len(channels))] if channels else []


def _target_score(logits: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]


def _grad(fn, x, target):
    """d logit[target] / dx per example (examples are independent, so the grad of the sum)."""
    return jax.grad(lambda v: _target_score(fn(v), target).sum())(x)


@jax.jit
def saliency(model: Classifier, x: jax.Array, target: jax.Array) -> jax.Array:
    chex.assert_rank(x, 4)
    return _grad(model.logits, x, target)


@functools.partial(jax.jit, static_argnames=("samples",))
def smoothgrad(model: Classifier, x: jax.Array, target: jax.Array, key: jax.Array,
               samples: int = 25, sigma: float = 0.15) -> jax.Array:
    """The mean gradient over `samples` noisy copies (noise std = sigma x each image's range;
    Smilkov et al. 2017)."""
    scale = sigma * (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True))

    def one(total, k):
        noisy = x + scale * jax.random.normal(k, x.shape, x.dtype)
        return total + _grad(model.logits, noisy, target), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(x), jax.random.split(key, samples))
    return total / samples


@functools.partial(jax.jit, static_argnames=("steps",))
def integrated_gradients(model: Classifier, x: jax.Array, target: jax.Array,
                         baseline: jax.Array, steps: int = 64) -> jax.Array:
    """(x - baseline) x the path integral of the gradient, by the trapezoidal rule over
    `steps` intervals (Sundararajan et al. 2017); sums to F(x) - F(baseline) as steps grow."""
    baseline = jnp.broadcast_to(baseline, x.shape)
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.full((steps + 1,), 1.0 / steps).at[0].mul(0.5).at[-1].mul(0.5)

    def one(total, aw):
        a, w = aw
        return total + w * _grad(model.logits, baseline + a * (x - baseline), target), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(x), (alphas, weights))
    return (x - baseline) * total


BASELINES = ("black", "blur", "uniform")
# The default passes the randomization checks (docs/explain.md): from the black image of the
# literature, (x - baseline) is 0 on Fashion-MNIST's black background for any weights, and
# |IG|'s rank order barely changes when the weights are re-drawn. `black` stays by name.
DEFAULT_BASELINE = "uniform"


def _blur(x: jax.Array, black: jax.Array, sigma: float) -> jax.Array:
    """x Gaussian-blurred (std `sigma` pixels) per channel, beyond the border black: in pixel
    terms a blur with zero padding, which the input's affine scaling commutes with."""
    radius = max(1, int(3 * sigma + 0.5))  # SciPy gaussian_filter's, truncate=3
    taps = jnp.exp(-0.5 * (jnp.arange(-radius, radius + 1) / sigma) ** 2)
    taps = taps / taps.sum()
    c = x.shape[-1]
    v = x - black
    for kernel in (taps[:, None], taps[None, :]):  # separable: rows, then columns
        k = jnp.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, c))
        v = jax.lax.conv_general_dilated(v, k, (1, 1), "SAME", feature_group_count=c,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return v + black


def ig_baselines(x: jax.Array, kind: str, key: jax.Array | None = None, samples: int = 1,
                 sigma: float = 4.0) -> jax.Array:
    """(samples, *x.shape) integrated-gradients baselines for the model inputs `x`: 'black'
    (the all-zero image), 'blur' (x Gaussian-blurred, Sturmfels et al. 2020) or 'uniform'
    (pixels uniform over their range, `samples` draws averaged as in expected gradients).
    On Fashion-MNIST's black background a black baseline makes (x - baseline) zero there for
    any model; the others do not (blur only near the object)."""
    black = to_input(jnp.zeros((1, *x.shape[1:]), jnp.uint8))
    white = to_input(jnp.full((1, *x.shape[1:]), 255, jnp.uint8))
    if kind == "black":
        return jnp.broadcast_to(black, (1, *x.shape))
    if kind == "blur":
        return _blur(x, black, sigma)[None]
    if kind == "uniform":
        u = jax.random.uniform(key if key is not None else jax.random.key(0),
                               (samples, *x.shape))
        return black + u * (white - black)
    raise ValueError(f"--baseline={kind!r}: use one of {', '.join(BASELINES)}.")


def integrated_gradients_from(model: Classifier, x: jax.Array, target: jax.Array,
                              kind: str = DEFAULT_BASELINE, key: jax.Array | None = None,
                              steps: int = 64, samples: int = 1) -> jax.Array:
    """Integrated gradients from a baseline of `kind` (see `ig_baselines`), averaged over its
    draws: they add up to F(x) - mean F(baseline)."""
    base = ig_baselines(x, kind, key, samples)
    total = jnp.zeros_like(x)
    for b in base:
        total = total + integrated_gradients(model, x, target, b, steps=steps)
    return total / len(base)


@jax.custom_vjp
def _guided_relu(x):
    return jnp.maximum(x, 0)


def _guided_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, 0.0),)  # only positive signal through active units


_guided_relu.defvjp(_guided_fwd, _guided_bwd)


@contextlib.contextmanager
def _guided_relus():
    """While tracing, the baselines' nn.relu backpropagates the guided way (Springenberg et
    al. 2015). The models call nn.relu by attribute, so swapping it is enough."""
    saved = nn.relu
    nn.relu = _guided_relu
    try:
        yield
    finally:
        nn.relu = saved


def guided_backprop(model: Classifier, x: jax.Array, target: jax.Array) -> jax.Array:
    with _guided_relus():
        # A fresh trace each call (not cached under jit), so the swap is always seen.
        return jax.jit(lambda m, v, t: _grad(m.logits, v, t))(model, x, target)


def require_conv(model: Classifier, layer: str) -> None:
    layers = model.conv_layers
    if not layers:
        raise ValueError(f"Grad-CAM needs a convolutional model, and this run's model "
                         f"({type(model.module).__name__}) has no convolutions: use "
                         "--method=saliency, smoothgrad, ig, occlusion or lime instead.")
    if layer not in layers:
        raise ValueError(f"--layer={layer!r}: this CNN's Grad-CAM layers are "
                         f"{', '.join(layers)} (the output of each convolution block).")


def _with_perturbations(model: Classifier, x, layer):
    """Shapes of the 'perturbations' the model offers, zeroed, for a gradient at `layer`."""
    _, state = jax.eval_shape(lambda v: model.module.apply(
        model.variables, v, deterministic=True, mutable=["perturbations"]), x)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state["perturbations"])


@functools.partial(jax.jit, static_argnames=("layer",))
def gradcam_maps(model: Classifier, x: jax.Array, target: jax.Array,
                 layer: str) -> tuple[jax.Array, jax.Array]:
    """(activations A, d logit / dA) at the output of conv block `layer`, batched."""
    zeros = _with_perturbations(model, x, layer)

    def score(perturbations):
        logits, state = model.module.apply({**model.variables, "perturbations": perturbations},
                                           x, deterministic=True, mutable=["intermediates"])
        return _target_score(logits, target).sum(), state["intermediates"][layer][0]

    grads, acts = jax.grad(score, has_aux=True)(zeros)
    return acts, grads[layer]


def gradcam(model: Classifier, x: jax.Array, target: jax.Array, layer: str = "") -> jax.Array:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k mean(dy/dA_k) A_k) at conv block `layer`
    (default: the last), bilinearly resized to the image, (batch, H, W, 1), unnormalised."""
    require_conv(model, layer or (model.conv_layers or ["block0"])[-1])
    return _gradcam(model, x, target, layer or model.conv_layers[-1])


@functools.partial(jax.jit, static_argnames=("layer",))
def _gradcam(model, x, target, layer):
    acts, grads = gradcam_maps(model, x, target, layer)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * acts).sum(axis=-1))
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    return cam[..., None]
