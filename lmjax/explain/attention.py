"""Attention maps of the GPT, the decoder families' model and BERT, captured with Flax `sow`
from the models' own attention (lmjax/models/attention.py:attend, no second implementation),
and attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from lmjax.models import gpt


def _layer_key(path: tuple) -> list:
    """Natural order of layer names: block_2 before block_10."""
    return [int(t) if t.isdigit() else t for part in path for t in re.split(r"(\d+)", str(part))]


def unscanned(module: nn.Module, params: dict) -> tuple[nn.Module, dict]:
    """A GPT or decoder with scanned layers as one module per layer (sow inside nn.scan would
    need the scan's variable axes): the same weights, so the same maps."""
    if not getattr(getattr(module, "cfg", None), "scan_layers", False):
        return module, params
    return gpt.unrolled(module), gpt.unstack_layers(params, module.cfg.num_layers)


def apply_with_attention(module: nn.Module, variables: dict, tokens: jax.Array,
                         **kwargs) -> tuple[jax.Array, jax.Array]:
    """(the module's output, its attention maps): one forward pass gives both. The maps are
    (layers, batch, heads, queries, keys), each layer's attention weights for `tokens`."""
    chex.assert_rank(tokens, 2)
    out, state = module.apply(variables, tokens, mutable=["intermediates"], **kwargs)
    flat = traverse_util.flatten_dict(state.get("intermediates", {}))
    maps = [v[0] for k, v in sorted(flat.items(), key=lambda kv: _layer_key(kv[0]))
            if k[-1] == "attention"]
    if not maps:
        raise ValueError(f"{type(module).__name__} sows no attention maps: attention maps are "
                         "for the GPT, decoder-family and BERT models.")
    return out, jnp.stack(maps)


def attention_maps(module: nn.Module, variables: dict, tokens: jax.Array,
                   **kwargs) -> jax.Array:
    """(layers, batch, heads, queries, keys): each layer's attention weights for `tokens`."""
    return apply_with_attention(module, variables, tokens, **kwargs)[1]


def rollout(maps: jax.Array, residual: float = 0.5) -> jax.Array:
    """(batch, queries, keys): how much each position draws on each input token through all
    layers. Per layer, the heads' mean mixed with the identity for the residual stream, rows
    renormalised, multiplied from the first layer up."""
    layers, batch, _, t, _ = maps.shape
    eye = jnp.eye(t, dtype=jnp.float32)
    out = jnp.broadcast_to(eye, (batch, t, t))
    for layer in range(layers):
        a = residual * maps[layer].mean(1) + (1 - residual) * eye
        a = a / a.sum(-1, keepdims=True)
        out = a @ out
    return out
