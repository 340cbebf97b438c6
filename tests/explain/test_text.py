"""Integrated gradients over a tiny BERT classifier's token embeddings: complete (they add up
to the logit's change from the [PAD] embeddings) and rendered as HTML."""

import jax
import pytest
import jax.numpy as jnp
import numpy as np

from lmjax.explain import render, text
from lmjax.models import bert

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite


def test_token_ig_is_complete_and_renders(bert_config):
    module = bert.Classifier(bert_config())
    tokens = jnp.array([[1, 5, 6, 7, 2, 0], [1, 9, 8, 7, 6, 2]])
    variables = module.init(jax.random.key(0), tokens)
    target = jnp.array([0, 2])
    ig = text.token_integrated_gradients(module, variables, tokens, target, steps=64)
    assert ig.shape == (2, 6)
    emb = text.word_embeddings(module, variables, tokens)
    np.testing.assert_allclose(text.logits_at(module, variables, tokens, emb),
                               module.apply(variables, tokens), atol=1e-5)
    base = text.word_embeddings(module, variables, jnp.zeros_like(tokens))
    gap = (text.logits_at(module, variables, tokens, emb) -
           text.logits_at(module, variables, tokens, base))[jnp.arange(2), target]
    np.testing.assert_allclose(ig.sum(-1), gap, rtol=0.01, atol=1e-4)
    page = render.text_html(["[CLS]", "a", "<b>", "c", "[SEP]", "[PAD]"], ig[0], "class 0")
    assert "&lt;b&gt;" in page and page.count("<span") == 6
