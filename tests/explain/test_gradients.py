"""Image attributions on a tiny CNN: integrated gradients and Grad-CAM against PAIR's
`saliency` library, IG's completeness, occlusion against a loop, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.explain import checks, gradients as g
from lmjax.explain.images import attribute
from lmjax.explain.occlusion import occlusion
from lmjax.models.baselines import CNN, MLP


@pytest.fixture(scope="module")
def cnn():
    module = CNN(num_outputs=3, channels=(4, 8), convs_per_block=1)
    pixels = np.random.default_rng(0).integers(0, 255, (3, 12, 12, 1)).astype(np.uint8)
    return g.Classifier(variables=module.init(jax.random.key(0), pixels), module=module), pixels


def _call_model(model, target):
    """PAIR's interface: gradients (and Grad-CAM's layer values) for a batch."""
    import saliency.core as saliency

    def call(x, call_model_args=None, expected_keys=None):
        x = jnp.asarray(x, jnp.float32)
        t = jnp.full((len(x),), target)
        if saliency.base.CONVOLUTION_LAYER_VALUES in expected_keys:
            acts, grads = g.gradcam_maps(model, x, t, "block1")
            return {saliency.base.CONVOLUTION_LAYER_VALUES: np.asarray(acts),
                    saliency.base.CONVOLUTION_OUTPUT_GRADIENTS: np.asarray(grads)}
        return {saliency.base.INPUT_OUTPUT_GRADIENTS: np.asarray(g.saliency(model, x, t))}

    return call


@pytest.mark.slow
def test_integrated_gradients_are_complete_and_agree_with_pair(cnn):
    import saliency.core as saliency

    model, pixels = cnn
    x, t = g.to_input(pixels), jnp.array([0, 1, 2])
    base = g.to_input(np.zeros((1, 12, 12, 1), np.uint8))
    ig = g.integrated_gradients(model, x, t, base, steps=128)
    assert np.median(checks.completeness(model, x, t, base, ig)) < 0.01
    # PAIR's Riemann sum with 400 points converges to the same integral.
    ref = saliency.IntegratedGradients().GetMask(
        np.asarray(x[0]), _call_model(model, 0), x_baseline=np.asarray(base[0]), x_steps=400,
        batch_size=400)
    np.testing.assert_allclose(ig[0], ref, atol=0.02 * np.abs(ref).max())


def test_gradcam_matches_pair_and_mlp_has_none(cnn):
    import saliency.core as saliency

    model, pixels = cnn
    x = g.to_input(pixels)
    cam = g.gradcam(model, x, jnp.array([1, 1, 1]), "block1")
    assert cam.shape == (3, 12, 12, 1) and float(cam.min()) >= 0
    ref = saliency.GradCam().GetMask(np.asarray(x[0]), _call_model(model, 1),
                                     should_resize=False, three_dims=False)
    acts, grads = g.gradcam_maps(model, x[:1], jnp.array([1]), "block1")
    ours = jax.nn.relu((grads.mean((1, 2), keepdims=True) * acts).sum(-1))[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="block0, block1"):
        g.gradcam(model, x, jnp.array([1, 1, 1]), "block7")
    mlp = MLP(num_outputs=3, hidden=(8,))
    flat = g.Classifier(variables=mlp.init(jax.random.key(0), pixels), module=mlp)
    with pytest.raises(ValueError, match="Grad-CAM needs a convolutional model"):
        attribute(flat, pixels, np.array([0, 0, 0]), "gradcam")


@pytest.mark.slow
def test_occlusion_equals_a_loop_and_guided_backprop_differs(cnn):
    model, pixels = cnn
    x, t = g.to_input(pixels[:1]), jnp.array([2])
    base = g.to_input(np.zeros((1, 12, 12, 1), np.uint8))
    ours = np.asarray(occlusion(model, x, t, base, size=4, stride=4))[0, :, :, 0]
    logits = jax.jit(lambda m, v: m.logits(v))
    full = float(logits(model, x)[0, 2])
    for r in (0, 4, 8):
        for c in (0, 4, 8):
            y = x.at[:, r:r + 4, c:c + 4].set(base[:, r:r + 4, c:c + 4])
            assert ours[r, c] == pytest.approx(full - float(logits(model, y)[0, 2]), abs=1e-4)
    guided = g.guided_backprop(model, x, t)
    assert guided.shape == x.shape and not np.allclose(guided, g.saliency(model, x, t))


@pytest.mark.slow
def test_every_method_gives_one_map_per_image_and_deletion_runs(cnn):
    model, pixels = cnn
    targets = np.array([0, 1, 2])
    for method in ("saliency", "smoothgrad", "occlusion", "lime"):
        n = 1 if method == "lime" else 3
        out = attribute(model, pixels[:n], targets[:n], method,
                        samples=100 if method == "lime" else 4, segments="grid:4")
        assert out.shape[:3] == (n, 12, 12) and np.isfinite(out).all()
    x = g.to_input(pixels)
    d, i = checks.deletion_insertion(model, x, jnp.asarray(targets), None,
                                     g.to_input(np.zeros((1, 12, 12, 1), np.uint8)),
                                     jax.random.key(0), steps=4)
    assert d.shape == i.shape == (3,) and ((d >= 0) & (d <= 1)).all()
    order = checks.layer_order(model, pixels)
    assert order[0] == "Dense_0" and order[-1] == "Conv_0"


@pytest.mark.slow
def test_blurred_and_uniform_baselines(cnn):
    from scipy.ndimage import gaussian_filter

    model, pixels = cnn
    x, t = g.to_input(pixels), jnp.array([0, 1, 2])
    # The blur equals SciPy's Gaussian filter of the pixels with a black border.
    blur = g.ig_baselines(x, "blur", sigma=1.5)
    ref = gaussian_filter(pixels[..., 0].astype(np.float64), (0, 1.5, 1.5), mode="constant",
                          truncate=3.0)
    np.testing.assert_allclose(blur[0, ..., 0], (ref / 255.0 - 0.29) / 0.35, atol=1e-4)
    uniform = g.ig_baselines(x, "uniform", jax.random.key(1), samples=2)
    assert uniform.shape == (2, *x.shape)
    black, white = g.to_input(np.zeros((1,), np.uint8)), g.to_input(np.full((1,), 255, np.uint8))
    assert float(uniform.min()) >= float(black[0]) and float(uniform.max()) <= float(white[0])
    # Averaged over the draws, IG adds up to F(x) - mean F(baseline).
    a = g.integrated_gradients_from(model, x, t, "uniform", jax.random.key(1), 128, samples=2)
    assert np.median(checks.completeness(model, x, t, uniform, a)) < 0.01
    with pytest.raises(ValueError, match="--baseline='gray': use one of black, blur, uniform"):
        attribute(model, pixels, np.array([0, 1, 2]), "ig", baseline="gray")


def test_the_default_ig_baseline_passes_the_randomization_check_and_black_stays_selectable():
    # Fashion-MNIST's layout: an object on an exactly black background. Two independently
    # initialised CNNs stand for the trained and the re-drawn model of Adebayo et al.'s check:
    # the rank order of |IG| should depend on the weights.
    rng = np.random.default_rng(1)
    pixels = np.zeros((8, 12, 12, 1), np.uint8)
    pixels[:, 3:9, 3:9] = rng.integers(60, 256, (8, 6, 6, 1))
    module = CNN(num_outputs=3, channels=(4, 8), convs_per_block=1)
    first, second = (g.Classifier(variables=module.init(jax.random.key(seed), pixels),
                                  module=module) for seed in (1, 2))
    targets = np.zeros(8, np.int32)

    def rank_correlation(**baseline):
        return checks.spearman(attribute(first, pixels, targets, "ig", steps=16, **baseline),
                               attribute(second, pixels, targets, "ig", steps=16,
                                         **baseline)).mean()

    default, black = rank_correlation(), rank_correlation(baseline="black")
    assert default <= 0.3 and black >= 0.6  # the check's target: Spearman <= 0.3
    np.testing.assert_array_equal(attribute(first, pixels, targets, "ig", steps=16),
                                  attribute(first, pixels, targets, "ig", steps=16,
                                            baseline=g.DEFAULT_BASELINE))
    assert g.DEFAULT_BASELINE == "uniform"
    # From black, the background's attribution is exactly 0 whatever the weights.
    from_black = attribute(first, pixels, targets, "ig", steps=16, baseline="black")
    assert (from_black[pixels == 0] == 0).all() and (from_black[pixels > 0] != 0).any()
