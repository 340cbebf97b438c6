"""LIME: the vectorised sampler gives lime's own explanation exactly; text LIME finds the
token that decides a toy classifier."""

import jax
import numpy as np

from lmjax.explain import gradients as g
from lmjax.explain import lime as limelib
from lmjax.explain.images import probabilities_fn
from lmjax.models.baselines import CNN


def test_fast_image_lime_equals_the_lime_package():
    module = CNN(num_outputs=3, channels=(4,), convs_per_block=1)
    image = np.random.default_rng(0).integers(0, 255, (12, 12, 1)).astype(np.uint8)
    model = g.Classifier(variables=module.init(jax.random.key(0), image[None]), module=module)
    prob = probabilities_fn(model)
    ours = limelib.explain_image(image, 1, prob, samples=200, segments="grid:4", seed=3)
    ref = limelib.explain_image_with_lime(image, 1, prob, samples=200, segments="grid:4", seed=3)
    np.testing.assert_allclose(ours.weights, ref.weights, rtol=1e-5, atol=1e-7)
    assert ours.score == ref.score and ours.segments.max() == 8  # 3 x 3 cells
    assert ours.pixel_map().shape == (12, 12, 1)


def test_text_lime_finds_the_deciding_token():
    def prob(texts):
        p = np.array([0.9 if "great" in t.split() else 0.2 for t in texts])
        return np.stack([1 - p, p], 1)

    words, r = limelib.explain_text("the film was great and long", 1, prob, samples=300)
    assert words == ["the", "film", "was", "great", "and", "long"]
    assert int(np.argmax(r.weights)) == 3 and r.score > 0.9
