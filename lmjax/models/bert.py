"""A BERT-style encoder with a masked-LM head and a sequence-classification head.

Post-LayerNorm blocks, exact GELU, learned positions, optional segment embeddings, LayerNorm
epsilon from the config: the arrangement of the original BERT, so that Hugging Face BERT weights
map onto these parameters one to one (query/key/value/out, fc/proj, the tied MLM decoder, the
tanh pooler). Pre-LN trains a little more forgivingly at high learning rates, but would make
every published BERT checkpoint unusable here; with warmup, post-LN trains well at this depth.

Parameters carry the logical axis names of `lmjax.models.gpt` ('vocab', 'embed', 'heads', 'kv',
'mlp', 'length'), so `lmjax.parallel.mesh.LOGICAL_RULES` shards this model too. Square
embed-to-embed matrices name their output axis None (replicated), since one mesh axis cannot
split both sides of a matrix.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from lmjax.models.gpt import capturing, sown_attention
from lmjax.models.layers import TransformerConfig, dense, require


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerConfig):
    """The encoder's shape and numerics (configs/bert.py's `model` section, resolved; the shared
    transformer fields are in lmjax/models/layers.py), plus the classifier's number of classes
    (0 for the masked-LM head alone)."""
    dropout: float = 0.1
    type_vocab_size: int = 2       # segment embeddings; 0: none
    layer_norm_eps: float = 1e-12
    pad_id: int = 0
    pooling: str = "cls"           # 'cls' | 'mean'
    num_classes: int = 0

    def __post_init__(self):
        super().__post_init__()
        require(self.type_vocab_size >= 0 and self.num_classes >= 0,
                "model.type_vocab_size and the number of classes must be >= 0.")
        require(self.pooling in ("cls", "mean"), f"model.pooling={self.pooling!r}: use 'cls' "
                "or 'mean'.")


def _layer_norm(cfg, name):
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def _dropout(cfg, x, deterministic):
    return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; keys where `mask` is False are never attended to."""
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.cfg
        shape = (cfg.num_heads, cfg.d_model // cfg.num_heads)
        q, k, v = (dense(shape, ("embed", "heads", "kv"), cfg, name)(x)
                   for name in ("query", "key", "value"))
        # (batch, 1, 1, keys): the same key mask for every head and query.
        if capturing(self):  # attention maps asked for (lmjax/explain)
            y = sown_attention(self, q, k, v, mask[:, None, None, :], causal=False)
        else:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :],
                                             implementation=cfg.attention_impl)
        out = nn.DenseGeneral(
            cfg.d_model, axis=(-2, -1), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            use_bias=cfg.use_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                     ("heads", "kv", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="out")(y)
        return _dropout(cfg, out, deterministic)


class Layer(nn.Module):
    """One post-LN encoder block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""
    cfg: BertConfig

    @nn.compact
    def __call__(self, x, mask, deterministic: bool):
        cfg = self.cfg
        x = _layer_norm(cfg, "attention_ln")(
            x + SelfAttention(cfg, name="attention")(x, mask, deterministic))
        h = nn.gelu(dense(cfg.mlp_ratio * cfg.d_model, ("embed", "mlp"), cfg, "fc")(x),
                    approximate=False)
        h = _dropout(cfg, dense(cfg.d_model, ("mlp", "embed"), cfg, "proj")(h), deterministic)
        return _layer_norm(cfg, "mlp_ln")(x + h)


class Encoder(nn.Module):
    """Token ids (batch, length) -> hidden states (batch, length, d_model).

    Padding is found from the ids (`cfg.pad_id`, 0 as in BERT): no position attends to a
    padding position, so real positions' outputs do not depend on how much padding follows.
    """
    cfg: BertConfig

    def setup(self):
        cfg = self.cfg
        embed = lambda n, name: nn.Embed(  # noqa: E731
            n, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                        ("vocab", "embed")), name=name)
        self.word_embeddings = embed(cfg.vocab_size, "word_embeddings")
        self.position_embeddings = self.param(
            "position_embeddings",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
            (cfg.block_size, cfg.d_model), cfg.param_dtype)
        if cfg.type_vocab_size:
            self.token_type_embeddings = embed(cfg.type_vocab_size, "token_type_embeddings")
        self.embeddings_ln = _layer_norm(cfg, "embeddings_ln")
        self.embeddings_dropout = nn.Dropout(cfg.dropout)
        self.layers = [Layer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]

    def __call__(self, tokens: jax.Array, segments: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        chex.assert_rank(tokens, 2)
        batch, length = tokens.shape
        if length > cfg.block_size:
            raise ValueError(f"sequence length {length} exceeds model.block_size={cfg.block_size}")
        x = self.word_embeddings(tokens) + self.position_embeddings[:length].astype(cfg.dtype)
        if cfg.type_vocab_size:
            segments = jnp.zeros_like(tokens) if segments is None else segments
            chex.assert_equal_shape((tokens, segments))
            x = x + self.token_type_embeddings(segments)
        x = self.embeddings_dropout(self.embeddings_ln(x), deterministic=deterministic)
        mask = tokens != cfg.pad_id
        for layer in self.layers:
            x = layer(x, mask, deterministic)
        chex.assert_shape(x, (batch, length, cfg.d_model))
        return x

    def attend(self, x: jax.Array) -> jax.Array:
        """Hidden states -> vocabulary logits through the (tied) word embeddings."""
        return self.word_embeddings.attend(x)


class MaskedLM(nn.Module):
    """Encoder + BERT's MLM head (dense, GELU, LN, tied decoder + bias).

    With `positions` (batch, P) only those positions are scored, logits (batch, P, vocab): the
    masked positions of a batch, which spares the vocabulary projection of the other ~85%.
    Without, every position is scored.
    """
    cfg: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 segments: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        encoder = Encoder(cfg, name="bert")
        x = encoder(tokens, segments, deterministic)
        if positions is not None:
            chex.assert_rank(positions, 2)
            x = jnp.take_along_axis(x, positions[:, :, None], axis=1)
        h = nn.gelu(dense(cfg.d_model, ("embed", None), cfg, "mlm_dense")(x), approximate=False)
        h = _layer_norm(cfg, "mlm_ln")(h)
        bias = self.param("mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                   ("vocab",)),
                          (cfg.vocab_size,), cfg.param_dtype)
        logits = encoder.attend(h) + bias.astype(cfg.dtype)
        chex.assert_shape(logits, (*x.shape[:2], cfg.vocab_size))
        return logits


class Classifier(nn.Module):
    """Encoder + a pooled sequence representation + a fresh linear head: logits (batch, classes).

    `cfg.pooling` 'cls' takes the [CLS] position through BERT's tanh pooler (the layout of
    Hugging Face's BertForSequenceClassification); 'mean' averages the non-padding positions
    first, which needs no pretraining of [CLS] (we pretrain without next-sentence prediction).
    """
    cfg: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, segments: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        x = Encoder(cfg, name="bert")(tokens, segments, deterministic)
        if cfg.pooling == "cls":
            pooled = x[:, 0]
        else:  # 'mean' (BertConfig checks the name)
            keep = (tokens != cfg.pad_id)[:, :, None].astype(x.dtype)
            pooled = (x * keep).sum(1) / jnp.maximum(keep.sum(1), 1.0)
        pooled = jnp.tanh(dense(cfg.d_model, ("embed", None), cfg, "pooler")(pooled))
        pooled = _dropout(cfg, pooled, deterministic)
        logits = dense(cfg.num_classes, ("embed", None), cfg, "classifier")(pooled)
        chex.assert_shape(logits, (tokens.shape[0], cfg.num_classes))
        return logits


def matrix_dims(params):
    """How each weight is a matrix, for Muon: kernels are (*inputs, *outputs); the attention
    output projection reads (heads, head_dim). qwix LoRA factors are matrices too."""
    from optax.contrib import MuonDimensionNumbers

    def dims(path, x):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if not keys[-1].startswith("kernel") or x.ndim < 2:
            return None
        n_in = 2 if keys[-1] == "kernel" and keys[-2] == "out" else 1
        return MuonDimensionNumbers(reduction_axis=tuple(range(n_in)),
                                    output_axis=tuple(range(n_in, x.ndim)))

    return jax.tree_util.tree_map_with_path(dims, params)
