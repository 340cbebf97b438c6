"""Recurrent language models: stacked LSTM or GRU layers over token embeddings.

The recurrence is `nn.RNN`, a `nn.scan` over time: one compiled cell, applied step by step
inside XLA. Same inputs and outputs as the GPT (token ids in, next-token logits out), so the
language-model task and its data serve both; and the same decoding protocol
(lmjax/models/decoding.py), whose cache here is every layer's recurrent state.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import flax.struct
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


@flax.struct.dataclass
class RecurrentState:
    """An RNN's decoding cache: each layer's carry after the tokens so far. Its size does not
    grow with the text, so it has no slots."""
    carry: tuple  # per layer, the cell's carry: (c, h) for an LSTM, h for a GRU; (batch, d)

    def per_row(self) -> "RecurrentState":
        return self  # every row's state is its own already

    def insert(self, row: "RecurrentState", slot: jax.Array, length: jax.Array):
        return RecurrentState(jax.tree.map(lambda a, b: a.at[slot].set(b[0]), self.carry,
                                           row.carry))


def _masked_step(cell, carry, inputs):
    """One cell step; rows at padding (valid False) keep their carry."""
    x, valid = inputs
    new, y = cell(carry, x)
    return jax.tree.map(lambda n, c: jnp.where(valid[:, None], n, c), new, carry), y


class RNNLM(nn.Module):
    """Token ids (batch, length) in, next-token logits out. Decoding passes a `RecurrentState`
    (`init_cache`) and `positions` (negative: padding, which leaves the state as it was) and
    gets (logits, the state after these tokens)."""
    cfg: RNNConfig

    def init_cache(self, batch: int, slots: int, start: jax.Array | None = None):
        """Every layer's initial carry; `slots` and `start` do not matter to a recurrence."""
        cfg = self.cfg
        cell = CELLS[cfg.name](cfg.d_model, parent=None)
        carry = cell.initialize_carry(jax.random.PRNGKey(0), (batch, cfg.d_model))
        return RecurrentState(tuple(carry for _ in range(cfg.num_layers)))

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True, *,
                 positions: jax.Array | None = None,
                 cache: RecurrentState | None = None) -> jax.Array:
        cfg = self.cfg
        batch, length = tokens.shape
        x = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed")(tokens)
        if cache is not None:
            return self._decode(x, positions >= 0, cache)
        for i in range(cfg.num_layers):
            x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
            cell = CELLS[cfg.name](cfg.d_model, name=f"{cfg.name}_{i}")
            x = nn.RNN(cell, name=f"layer_{i}")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        logits = nn.Dense(cfg.vocab_size, name="head")(x)
        chex.assert_shape(logits, (batch, length, cfg.vocab_size))
        return logits.astype(jnp.float32)

    def _decode(self, x, valid, cache: RecurrentState):
        """The layers from the cached state, step by step; the same parameters as training
        (the cells belong to this module, whatever drives them over time)."""
        cfg = self.cfg
        scan = nn.scan(_masked_step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
        carries = []
        for i in range(cfg.num_layers):
            carry, x = scan(CELLS[cfg.name](cfg.d_model, name=f"{cfg.name}_{i}"),
                            cache.carry[i], (x, valid))
            carries.append(carry)
        logits = nn.Dense(cfg.vocab_size, name="head")(x)
        return logits.astype(jnp.float32), RecurrentState(tuple(carries))
