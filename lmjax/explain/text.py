"""Integrated gradients over a BERT classifier's token embeddings: each token's share of the
class logit, rendered as coloured HTML by render.text_html. The word embeddings' output is
replaced inside the model with `nn.intercept_methods`, so the path runs through the model's
own code (positions, segments, LayerNorm and attention unchanged)."""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


def _logits_from_embeddings(module: nn.Module, variables: dict, tokens, embeddings):
    def swap(next_fun, args, kwargs, context):
        if context.module.name == "word_embeddings" and context.method_name == "__call__":
            return embeddings
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(swap):
        return module.apply(variables, tokens)


def word_embeddings(module: nn.Module, variables: dict, tokens: jax.Array) -> jax.Array:
    """(batch, length, d_model): what the model's word embedding layer gives `tokens`."""
    table = nn.unbox(variables["params"])["bert"]["word_embeddings"]["embedding"]
    return jnp.take(table, tokens, axis=0)


@functools.partial(jax.jit, static_argnames=("module", "steps"))
def token_integrated_gradients(module: nn.Module, variables: dict, tokens: jax.Array,
                               target: jax.Array, baseline_id: int = 0,
                               steps: int = 64) -> jax.Array:
    """(batch, length): IG of logit[target] from the embeddings of `baseline_id` ([PAD]) to the
    tokens' own, summed over the embedding dimension (trapezoidal rule, `steps` intervals).
    The attention mask still sees the real tokens: only the embeddings move."""
    chex.assert_rank(tokens, 2)
    emb = word_embeddings(module, variables, tokens)
    base = word_embeddings(module, variables, jnp.full_like(tokens, baseline_id))

    def score(e):
        logits = _logits_from_embeddings(module, variables, tokens, e)
        return jnp.take_along_axis(logits, target[:, None], 1).sum()

    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.full((steps + 1,), 1.0 / steps).at[0].mul(0.5).at[-1].mul(0.5)

    def one(total, aw):
        a, w = aw
        return total + w * jax.grad(score)(base + a * (emb - base)), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(emb), (alphas, weights))
    return ((emb - base) * total).sum(-1)


def logits_at(module: nn.Module, variables: dict, tokens: jax.Array,
              embeddings: jax.Array) -> jax.Array:
    """The classifier's logits with `embeddings` in place of the tokens' word embeddings."""
    return _logits_from_embeddings(module, variables, tokens, embeddings)
