"""Recurrent language models: stacked LSTM or GRU layers over token embeddings.

The recurrence is `nn.RNN`, a `nn.scan` over time: one compiled cell, applied step by step
inside XLA. Same inputs and outputs as the GPT (token ids in, next-token logits out), so the
language-model task, its data and its sampler serve both.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class RNNLM(nn.Module):
    cfg: ml_collections.FrozenConfigDict  # name ('lstm'|'gru'), vocab_size, d_model, num_layers,
    #                                       dropout, block_size (the training/sampling window)

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        batch, length = tokens.shape
        x = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed")(tokens)
        for i in range(cfg.num_layers):
            x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
            cell = CELLS[cfg.name](cfg.d_model, name=f"{cfg.name}_{i}")
            x = nn.RNN(cell, name=f"layer_{i}")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(cfg.vocab_size, name="head")(x)
        chex.assert_shape(logits, (batch, length, cfg.vocab_size))
        return logits.astype(jnp.float32)
