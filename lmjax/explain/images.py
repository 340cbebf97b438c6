"""One entry point for every image method: attributions of a batch of uint8 images for their
target classes, computed in chunks so that memory stays flat for any --examples range."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.explain import gradients as g
from lmjax.explain import lime as limelib
from lmjax.explain.occlusion import occlusion

METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "occlusion", "guided_backprop", "lime")


def probabilities_fn(model: g.Classifier):
    """uint8 batch -> class probabilities (NumPy), jitted once per batch shape."""
    fn = jax.jit(lambda m, x: jax.nn.softmax(m.logits(g.to_input(x)).astype(jnp.float32)))
    return lambda batch: np.asarray(fn(model, jnp.asarray(batch)))


def attribute(model: g.Classifier, images: np.ndarray, targets: np.ndarray, method: str, *,
              steps: int = 64, samples: int = 0, layer: str = "", seed: int = 0,
              segments: str = "grid:4", baseline: str = g.DEFAULT_BASELINE,
              chunk: int = 64) -> np.ndarray:
    """(batch, H, W, C or 1) attributions of `images` (uint8 NHWC) for `targets`.
    `samples`: SmoothGrad's noisy copies (default 25), LIME's samples (default 1000) or the
    uniform IG baseline's draws (default 4). `baseline`: IG's, one of gradients.BASELINES."""
    if method not in METHODS:
        raise ValueError(f"--method={method!r}: use one of {', '.join(METHODS)}.")
    if method == "ig" and baseline not in g.BASELINES:
        raise ValueError(f"--baseline={baseline!r}: use one of {', '.join(g.BASELINES)}.")
    if method == "gradcam":
        g.require_conv(model, layer or (model.conv_layers or ["block0"])[-1])
    if method == "lime":
        prob = probabilities_fn(model)
        return np.stack([limelib.explain_image(img, int(t), prob, samples or 1000, segments,
                                               seed).pixel_map()
                         for img, t in zip(images, targets)])
    out = []
    for start in range(0, len(images), chunk):
        x = g.to_input(images[start:start + chunk])
        t = jnp.asarray(targets[start:start + chunk], jnp.int32)
        black = g.to_input(np.zeros((1, *images.shape[1:]), np.uint8))
        if method == "saliency":
            a = g.saliency(model, x, t)
        elif method == "smoothgrad":
            a = g.smoothgrad(model, x, t, jax.random.key(seed), samples=samples or 25)
        elif method == "ig":
            a = g.integrated_gradients_from(model, x, t, baseline, jax.random.key(seed + start),
                                            steps=steps, samples=samples or 4)
        elif method == "gradcam":
            a = g.gradcam(model, x, t, layer)
        elif method == "occlusion":
            a = occlusion(model, x, t, black)
        else:
            a = g.guided_backprop(model, x, t)
        out.append(np.asarray(a))
    return np.concatenate(out)
