"""Recurrent language models: stacked LSTM or GRU layers over token embeddings.

The recurrence is `nn.RNN`, a `nn.scan` over time: one compiled cell, applied step by step
inside XLA. Same inputs and outputs as the GPT (token ids in, next-token logits out), so the
language-model task, its data and its sampler serve both.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models.layers import ModelConfig, require

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


@dataclasses.dataclass(frozen=True)
class RNNConfig(ModelConfig):
    """configs/lstm.py's `model` section, resolved."""
    IGNORED = ()
    name: str = "lstm"             # 'lstm' | 'gru'
    vocab_size: int = 0            # 0 until the tokenizer fills it in (with_vocab)
    block_size: int = 128          # the training and sampling window
    d_model: int = 256             # hidden units per layer
    num_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self):
        require(self.name in CELLS, f"model.name={self.name!r}: use 'lstm' or 'gru'.")
        self._check_positive("block_size", "d_model", "num_layers")
        require(self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}: 0 (from the "
                "tokenizer) or more.")
        self._check_dropout()


class RNNLM(nn.Module):
    cfg: RNNConfig

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
