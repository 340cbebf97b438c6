"""A GPT-2-style decoder: pre-LayerNorm blocks, GELU MLP, learned positions, tied embeddings.

Every parameter carries logical axis names ('embed', 'mlp', 'heads', ...); `lmjax.parallel`
maps them onto mesh axes, so the model itself knows nothing about devices.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections

Dtype = jnp.dtype


def _dense(features, axes, cfg, name, std=0.02):
    return nn.DenseGeneral(
        features, axis=-1, dtype=cfg.dtype, param_dtype=cfg.param_dtype, use_bias=cfg.use_bias,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]), name=name)


def _layer_norm(cfg, name):
    return nn.LayerNorm(
        epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, use_bias=cfg.use_bias,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


class Attention(nn.Module):
    cfg: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        head_dim = cfg.d_model // cfg.num_heads
        qkv = _dense((3, cfg.num_heads, head_dim), ("embed", "qkv", "heads", "kv"), cfg, "qkv")(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (batch, length, heads, head_dim)
        # One call that lets XLA, cuDNN or a TPU kernel pick the fused implementation.
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=cfg.attention)
        # Residual projections are scaled down with depth, as in GPT-2.
        std = 0.02 / (2 * cfg.num_layers) ** 0.5
        out = nn.DenseGeneral(
            cfg.d_model, axis=(-2, -1), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            use_bias=cfg.use_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std),
                                                     ("heads", "kv", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="out")(y)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class MLP(nn.Module):
    cfg: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        h = _dense(cfg.mlp_ratio * cfg.d_model, ("embed", "mlp"), cfg, "fc")(x)
        h = nn.gelu(h, approximate=True)
        std = 0.02 / (2 * cfg.num_layers) ** 0.5
        out = _dense(cfg.d_model, ("mlp", "embed"), cfg, "proj", std=std)(h)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
    cfg: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, deterministic: bool):
        x = x + Attention(self.cfg, name="attn")(_layer_norm(self.cfg, "ln1")(x), deterministic)
        x = x + MLP(self.cfg, name="mlp")(_layer_norm(self.cfg, "ln2")(x), deterministic)
        return x


class ScannedBlock(nn.Module):
    """`Block` in the (carry, output) form that `nn.scan` wants."""
    cfg: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x, deterministic: bool):
        return Block(self.cfg, name="block")(x, deterministic), None


class GPT(nn.Module):
    """Token ids (batch, length) in, next-token logits (batch, length, vocab) out."""
    cfg: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        batch, length = tokens.shape
        chex.assert_rank(tokens, 2)
        if length > cfg.block_size:
            raise ValueError(f"sequence length {length} exceeds model.block_size={cfg.block_size}")
        wte = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                        ("vocab", "embed")), name="wte")
        wpe = self.param("wpe", nn.with_logical_partitioning(nn.initializers.normal(0.01),
                                                              ("length", "embed")),
                         (cfg.block_size, cfg.d_model), cfg.param_dtype)
        x = wte(tokens) + wpe[:length].astype(cfg.dtype)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        if cfg.scan_layers:
            # One compiled block applied num_layers times: compile time stays flat in depth.
            x, _ = nn.scan(
                ScannedBlock, variable_axes={"params": 0}, split_rngs={"params": True,
                                                                      "dropout": True},
                in_axes=nn.broadcast, length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(
                    x, deterministic)
        else:
            for i in range(cfg.num_layers):
                x = Block(cfg, name=f"block_{i}")(x, deterministic)
        x = _layer_norm(cfg, "ln_f")(x)
        logits = wte.attend(x)  # tied input and output embeddings
        chex.assert_shape(logits, (batch, length, cfg.vocab_size))
        return logits


def matrix_dims(params):
    """How each weight is a matrix (for Muon): its input and output axes, or None (not one).

    Flax kernels are laid out (*inputs, *outputs). The attention output projection reads two
    axes (heads, head_dim); every other kernel one. Under nn.scan a leading layers axis is a
    batch of independent matrices. Embeddings, norms and biases are not matrices here.
    """
    from optax.contrib import MuonDimensionNumbers

    def dims(path, x):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if keys[-1] != "kernel":
            return None
        first = 1 if "blocks" in keys else 0  # the scanned layers axis
        n_in = 2 if keys[-2] == "out" else 1
        return MuonDimensionNumbers(reduction_axis=tuple(range(first, first + n_in)),
                                    output_axis=tuple(range(first + n_in, x.ndim)))

    return jax.tree_util.tree_map_with_path(dims, params)
