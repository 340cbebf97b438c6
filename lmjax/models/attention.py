"""Attention written out, for what one fused call does not cover: decoding from a KV cache,
soft-capped scores (Gemma 2), windows that differ per layer inside a scan, and the attention
maps lmjax/explain captures. GPT, BERT and the decoder family (lmjax/models/decoder.py) share it.

The computation is jax.nn.dot_product_attention's XLA path: scores in the compute dtype, the
softmax in float32. Queries may have more heads than keys and values (grouped-query attention):
query head h reads key/value head h // (heads / kv_heads), Hugging Face's `repeat_kv` order.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.decoding import KVCache


def capturing(module: nn.Module) -> bool:
    """Attention maps asked for: 'intermediates' mutable outside init."""
    return module.is_mutable_collection("intermediates") and not module.is_initializing()


def attend(q: jax.Array, k: jax.Array, v: jax.Array, keep: jax.Array | None, scale: float,
           softcap: float = 0.0, sow: nn.Module | None = None,
           kv_layout: str = "bskd") -> jax.Array:
    """softmax(q k^T * scale, capped, where `keep`) v.

    q (batch, queries, heads, d); k and v (batch, keys, kv_heads, d), or (batch, kv_heads,
    keys, d) with kv_layout 'bksd' (the cache's). `keep` is a boolean mask broadcastable to
    (batch, 1, queries, keys), or None (every key). `softcap` > 0 bounds the scores smoothly
    to (-softcap, softcap) before the mask, as Gemma 2 does. With `sow` (a module) the
    (batch, heads, queries, keys) weights are sown as intermediates/attention.
    """
    batch, length, heads, dim = q.shape
    kv_heads = k.shape[2] if kv_layout == "bskd" else k.shape[1]
    qg = q.reshape(batch, length, kv_heads, heads // kv_heads, dim)
    scores = jnp.einsum(f"btkgd,{kv_layout}->bkgts", qg, k) * jnp.asarray(scale, q.dtype)
    if softcap:
        scores = jnp.tanh(scores / softcap) * softcap
    scores = scores.astype(jnp.float32)
    if keep is not None:
        scores = jnp.where(keep[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    if sow is not None:
        sow.sow("intermediates", "attention", probs.reshape(batch, heads, length, -1))
    y = jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs.astype(v.dtype), v)
    return y.reshape(batch, length, heads, dim)


def causal_keep(length: int, window=None, segments: jax.Array | None = None) -> jax.Array:
    """(1 or batch, 1, length, length): causal, within `window` tokens (the query included)
    when given (an int, or a traced one: a scan's per-layer window), and within each row's
    segment when `segments` (batch, 1, length, length) is given."""
    i = jnp.arange(length)
    keep = (i[:, None] >= i[None, :])[None, None]
    if window is not None:
        keep = keep & ((i[:, None] - i[None, :]) < window)[None, None]
    return keep if segments is None else keep & segments


def write_cache(cache: KVCache, k: jax.Array, v: jax.Array, layer) -> KVCache:
    """This call's keys and values (batch, length, kv_heads, d) into `layer`'s slots: from
    `cache.index` on (a scalar: the same slots for every row), or each row from its own
    index (a scatter, in place; rows past the end, freed ones, are dropped)."""
    if cache.index.ndim == 0:
        where = (layer, 0, 0, cache.index, 0)
        new_k, new_v = (x.transpose(0, 2, 1, 3)[None].astype(cache.k.dtype) for x in (k, v))
        return cache.replace(k=jax.lax.dynamic_update_slice(cache.k, new_k, where),
                             v=jax.lax.dynamic_update_slice(cache.v, new_v, where))
    rows = jnp.arange(k.shape[0])[:, None]
    at = cache.index[:, None] + jnp.arange(k.shape[1])[None]  # (batch, length)
    return cache.replace(k=cache.k.at[layer, rows, :, at].set(k.astype(cache.k.dtype),
                                                              mode="drop"),
                         v=cache.v.at[layer, rows, :, at].set(v.astype(cache.v.dtype),
                                                              mode="drop"))


def cached_attention(q, k, v, cache: KVCache, layer, scale: float, softcap: float = 0.0,
                     window=None) -> tuple[jax.Array, KVCache]:
    """Writes this step's keys/values into `layer`'s slots, then attends over the cache in
    place: causal over slots, blind to each row's left padding, and within `window` tokens
    (the query included) when given. Returns (output (batch, length, heads, d), cache)."""
    cache = write_cache(cache, k, v, layer)
    keys = jax.lax.dynamic_index_in_dim(cache.k, layer, 0, keepdims=False).astype(q.dtype)
    values = jax.lax.dynamic_index_in_dim(cache.v, layer, 0, keepdims=False).astype(q.dtype)
    slots = jnp.arange(cache.k.shape[3])[None, None, :]
    q_slots = (jnp.reshape(cache.index, (-1, 1)) + jnp.arange(q.shape[1]))[:, :, None]
    keep = (slots <= q_slots) & (slots >= cache.start[:, None, None])  # (batch, queries, slots)
    if window is not None:
        keep = keep & (q_slots - slots < window)
    y = attend(q, keys, values, keep[:, None], scale, softcap, kv_layout="bksd")
    return y, cache
