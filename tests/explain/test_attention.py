"""Attention maps captured with sow: proper distributions, causal for the GPT, equal to the
softmax recomputed by hand from the same weights, and outputs unchanged by capturing."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.explain.attention import attention_maps, rollout, unscanned
from lmjax.models import bert, gpt


def _gpt(gpt_config, **kw):
    cfg = gpt_config(**kw)
    model = gpt.GPT(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, cfg.vocab_size)
    return cfg, model, model.init(jax.random.key(0), tokens), tokens


def test_gpt_maps_are_causal_distributions_and_match_a_manual_softmax(gpt_config):
    cfg, model, variables, tokens = _gpt(gpt_config)
    maps = attention_maps(model, variables, tokens)
    assert maps.shape == (2, 2, 2, 8, 8)  # layers, batch, heads, queries, keys
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(jnp.triu(maps, k=1)).max()) == 0.0
    # By hand for layer 0: embeddings, LayerNorm, the qkv projection, softmax(q k^T / sqrt(d)).
    p = nn.unbox(variables["params"])
    x = p["wte"]["embedding"][tokens] + p["wpe"][:8]
    ln = p["block_0"]["ln1"]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mu) / jnp.sqrt(var + 1e-5) * ln["scale"] + ln["bias"]
    qkv = jnp.einsum("btd,dshk->btshk", h, p["block_0"]["attn"]["qkv"]["kernel"]) + \
        p["block_0"]["attn"]["qkv"]["bias"]
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    scores = jnp.where(jnp.tril(jnp.ones((8, 8), bool)), scores, -jnp.inf)
    np.testing.assert_allclose(maps[0], jax.nn.softmax(scores, -1), atol=1e-5)
    # Capturing takes the explicit path; its logits equal the fused call's.
    logits, _ = model.apply(variables, tokens, mutable=["intermediates"])
    np.testing.assert_allclose(logits, model.apply(variables, tokens), atol=1e-5)


def test_scanned_gpt_gives_the_same_maps_unscanned(gpt_config):
    cfg, model, variables, tokens = _gpt(gpt_config)
    stacked = gpt.stack_layers(variables["params"], cfg.num_layers)
    module, params = unscanned(gpt.GPT(gpt_config(scan_layers=True)), stacked)
    np.testing.assert_allclose(attention_maps(module, {"params": params}, tokens),
                               attention_maps(model, variables, tokens), atol=1e-6)


def test_bert_maps_ignore_padding_and_rollout_rows_sum_to_one(bert_config):
    cfg = bert_config()
    model = bert.Classifier(cfg)
    tokens = jnp.array([[1, 5, 6, 7, 2, 0, 0, 0], [1, 9, 8, 7, 6, 5, 4, 2]])
    variables = model.init(jax.random.key(0), tokens)
    maps = attention_maps(model, variables, tokens)
    assert maps.shape == (2, 2, 2, 8, 8)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert float(maps[:, 0, :, :, 5:].max()) == 0.0  # nobody attends to padding
    r = rollout(maps)
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)
    # One layer of uniform attention over 2 tokens: rollout is 0.5 I + 0.5 uniform.
    uniform = jnp.full((1, 1, 1, 2, 2), 0.5)
    np.testing.assert_allclose(rollout(uniform)[0], [[0.75, 0.25], [0.25, 0.75]], atol=1e-6)
