"""Sampling from a language model (GPT or RNN): one jitted loop over a fixed-size token buffer.

This is the simple, cache-free sampler used at the end of training: each step re-reads the last
`block_size` tokens. It is exact, and fast enough for a few samples from a small model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k"))
def generate(model, params, prompt: jax.Array, rng: jax.Array, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0) -> jax.Array:
    """prompt (batch, P) int32 -> (batch, P + max_new_tokens); temperature 0 means greedy."""
    batch, plen = prompt.shape
    total = plen + max_new_tokens
    window = min(model.cfg.block_size, total)
    buf = jnp.zeros((batch, total), jnp.int32).at[:, :plen].set(prompt)

    def body(pos, carry):
        buf, rng = carry
        start = jnp.clip(pos - window, 0, total - window)
        ctx = jax.lax.dynamic_slice_in_dim(buf, start, window, axis=1)
        logits = model.apply({"params": params}, ctx)
        logits = jax.lax.dynamic_index_in_dim(logits, pos - 1 - start, axis=1, keepdims=False)
        logits = logits.astype(jnp.float32)
        if top_k:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        rng, key = jax.random.split(rng)
        sampled = jax.random.categorical(key, logits / jnp.maximum(temperature, 1e-6))
        nxt = jnp.where(temperature > 0, sampled, logits.argmax(-1)).astype(jnp.int32)
        return buf.at[:, pos].set(nxt), rng

    buf, _ = jax.lax.fori_loop(plen, total, body, (buf, rng))
    return buf
