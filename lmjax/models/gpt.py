"""A GPT-2-style decoder: pre-LayerNorm blocks, GELU MLP, learned positions, tied embeddings.

Every parameter carries logical axis names ('embed', 'mlp', 'heads', ...); `lmjax.parallel`
maps them onto mesh axes, so the model itself knows nothing about devices.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from lmjax.models import attention
from lmjax.models.attention import capturing
from lmjax.models.decoding import KVCache
from lmjax.models.layers import TransformerConfig, dense, require


@dataclasses.dataclass(frozen=True)
class GPTConfig(TransformerConfig):
    """The GPT's shape and numerics: the `model` section of configs/gpt.py, resolved (the
    shared transformer fields are in lmjax/models/layers.py)."""
    AUTO_CUDNN = True  # causal and unmasked: cuDNN's fused attention where it runs
    scan_layers: bool = False
    remat: str = "none"            # 'none' | 'dots' | 'full'

    def __post_init__(self):
        super().__post_init__()
        require(self.remat in REMAT_POLICIES, f"model.remat={self.remat!r}: use 'none', "
                "'dots' or 'full'.")


def _layer_norm(cfg, name):
    return nn.LayerNorm(
        epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, use_bias=cfg.use_bias,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def sown_attention(module: nn.Module, q, k, v, mask, causal: bool):
    """jax.nn.dot_product_attention's XLA path written out (lmjax/models/attention.py), sowing
    its (batch, heads, queries, keys) weights as intermediates/attention: what
    lmjax/explain/attention.py captures when it makes 'intermediates' mutable (fused kernels
    never form the weights)."""
    keep = attention.causal_keep(q.shape[1], segments=mask) if causal else mask
    return attention.attend(q, k, v, keep, q.shape[-1] ** -0.5, sow=module)


class Attention(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, cache: KVCache | None = None, layer=0,
                 mask: jax.Array | None = None):
        cfg = self.cfg
        head_dim = cfg.d_model // cfg.num_heads
        qkv = dense((3, cfg.num_heads, head_dim), ("embed", "qkv", "heads", "kv"), cfg, "qkv")(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (batch, length, heads, head_dim)
        if cache is None and capturing(self):
            y = sown_attention(self, q, k, v, mask, causal=True)  # maps asked for: explicit
        elif cache is None:
            # One call that lets XLA, cuDNN or a TPU kernel pick the fused implementation. A
            # segment mask (packed sequences) goes to XLA: cuDNN's fused kernel is picked for
            # the causal, unmasked case only (resolve_attention).
            y = jax.nn.dot_product_attention(
                q, k, v, mask=mask, is_causal=True,
                implementation=cfg.attention_impl if mask is None else "xla")
        else:
            y, cache = attention.cached_attention(q, k, v, cache, layer, head_dim ** -0.5)
        # Residual projections are scaled down with depth, as in GPT-2.
        std = 0.02 / (2 * cfg.num_layers) ** 0.5
        out = nn.DenseGeneral(
            cfg.d_model, axis=(-2, -1), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            use_bias=cfg.use_bias,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std),
                                                     ("heads", "kv", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="out")(y)
        out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
        return out if cache is None else (out, cache)


class MLP(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        h = dense(cfg.mlp_ratio * cfg.d_model, ("embed", "mlp"), cfg, "fc")(x)
        h = nn.gelu(h, approximate=True)
        std = 0.02 / (2 * cfg.num_layers) ** 0.5
        out = dense(cfg.d_model, ("mlp", "embed"), cfg, "proj", std=std)(h)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, cache: KVCache | None = None, layer=0,
                 mask: jax.Array | None = None):
        h = Attention(self.cfg, name="attn")(_layer_norm(self.cfg, "ln1")(x), deterministic,
                                             cache, layer, mask)
        if cache is not None:
            h, cache = h
        x = x + h
        x = x + MLP(self.cfg, name="mlp")(_layer_norm(self.cfg, "ln2")(x), deterministic)
        return x if cache is None else (x, cache)


class ScannedBlock(nn.Module):
    """`Block` in the (carry, output) form that `nn.scan` wants."""
    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, mask: jax.Array | None = None):
        return Block(self.cfg, name="block")(x, deterministic, mask=mask), None


class ScannedDecodeBlock(nn.Module):
    """`Block` with the cache in the scan carry, so each layer updates its slice in place."""
    cfg: GPTConfig

    @nn.compact
    def __call__(self, carry, layer, deterministic: bool):
        x, cache = carry
        return Block(self.cfg, name="block")(x, deterministic, cache, layer), None


# Activation checkpointing (model.remat): what the backward pass may keep instead of recomputing.
REMAT_POLICIES = {
    "none": None,                  # keep every activation (fastest, most memory)
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
}


def _remat(block_cls, cfg):
    policy = cfg.remat
    if policy == "none":
        return block_cls
    # Argument 2 (after self and x) is `deterministic`, a Python bool.
    return nn.remat(block_cls, static_argnums=(2,), policy=REMAT_POLICIES[policy])


class GPT(nn.Module):
    """Token ids (batch, length) in, next-token logits (batch, length, vocab) out.

    Decoding passes a `KVCache` (`init_cache`) and each token's `positions` (batch, length);
    the call then returns (logits, the cache with these tokens appended): the protocol of
    lmjax/models/decoding.py. Training never passes one.
    Packed training rows pass `segment_ids` (batch, length): tokens attend only within their
    own segment (ids > 0; 0 is padding), and positions restart at 0 in each segment unless
    `positions` are given, so a packed example sees exactly what it would alone in a row.
    `hidden=True` returns the final normalised hidden states (batch, length, d_model) instead of
    logits: `head_logits` applies the output layer to a piece of them at a time (the chunked
    loss in lmjax/tasks/lm.py), so the full logits never need to exist at once.
    """
    cfg: GPTConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True, *,
                 positions: jax.Array | None = None, cache: KVCache | None = None,
                 hidden: bool = False, segment_ids: jax.Array | None = None):
        cfg = self.cfg
        batch, length = tokens.shape
        chex.assert_rank(tokens, 2)
        if cache is None and length > cfg.block_size:
            raise ValueError(f"sequence length {length} exceeds model.block_size={cfg.block_size}")
        wte = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                        ("vocab", "embed")), name="wte")
        wpe = self.param("wpe", nn.with_logical_partitioning(nn.initializers.normal(0.01),
                                                             ("length", "embed")),
                         (cfg.block_size, cfg.d_model), cfg.param_dtype)
        if cache is not None:
            chex.assert_shape(positions, (batch, length))
            # Padding (negative positions) takes position 0: the cache's `start` masks left
            # padding, and right padding's slots are overwritten before they are read.
            where = jnp.maximum(positions, 0)
            x = wte(tokens) + jnp.take(wpe, where, axis=0, mode="clip").astype(cfg.dtype)
            return self._decode(x, cache, wte, deterministic)
        mask, positions = segment_mask(segment_ids, positions)
        if positions is not None:
            chex.assert_shape(positions, (batch, length))
            x = wte(tokens) + jnp.take(wpe, positions, axis=0, mode="clip").astype(cfg.dtype)
        else:
            x = wte(tokens) + wpe[:length].astype(cfg.dtype)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        if cfg.scan_layers:
            # One compiled block applied num_layers times: compile time stays flat in depth.
            x, _ = nn.scan(
                _remat(ScannedBlock, cfg), variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast, length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(
                    x, deterministic, mask)
        else:
            block = _remat(Block, cfg)
            for i in range(cfg.num_layers):
                x = block(cfg, name=f"block_{i}")(x, deterministic, None, 0, mask)
        x = _layer_norm(cfg, "ln_f")(x)
        if hidden:
            return x
        logits = wte.attend(x)  # tied input and output embeddings
        chex.assert_shape(logits, (batch, length, cfg.vocab_size))
        return logits

    def init_cache(self, batch: int, slots: int, start: jax.Array | None = None) -> KVCache:
        """An empty cache for decoding (lmjax/models/decoding.py's protocol)."""
        cfg = self.cfg
        return KVCache.zeros(layers=cfg.num_layers, heads=cfg.num_heads,
                             head_dim=cfg.d_model // cfg.num_heads, batch=batch, slots=slots,
                             dtype=cfg.dtype, start=start)

    def _decode(self, x, cache: KVCache, wte, deterministic):
        """The layers with a cache; the same parameters (and names) as the training path."""
        cfg = self.cfg
        if cfg.scan_layers:
            (x, cache), _ = nn.scan(
                ScannedDecodeBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(0, nn.broadcast), length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(
                    (x, cache), jnp.arange(cfg.num_layers), deterministic)
        else:
            for i in range(cfg.num_layers):
                x, cache = Block(cfg, name=f"block_{i}")(x, deterministic, cache, i)
        x = _layer_norm(cfg, "ln_f")(x)
        return wte.attend(x), cache.replace(index=cache.index + x.shape[1])


def segment_mask(segment_ids: jax.Array | None, positions: jax.Array | None):
    """(attention mask (batch, 1, queries, keys) or None, positions) for packed rows: tokens
    see only their own segment, and count positions from its start unless given."""
    if segment_ids is None:
        return None, positions
    mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    return mask, segment_positions(segment_ids) if positions is None else positions


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Each token's position within its segment: 0, 1, ... restarting where the id changes."""
    idx = jnp.arange(segment_ids.shape[-1])
    starts = jnp.concatenate([jnp.ones_like(segment_ids[..., :1], bool),
                              segment_ids[..., 1:] != segment_ids[..., :-1]], axis=-1)
    first = jax.lax.cummax(jnp.where(starts, idx, 0), axis=segment_ids.ndim - 1)
    return idx - first


def head_logits(params, hidden: jax.Array, dtype) -> jax.Array:
    """The output layer (the tied embedding) on hidden states, as `GPT.__call__` applies it:
    both sides in the compute dtype."""
    embedding = params["wte"]["embedding"]
    return jnp.einsum("...d,vd->...v", hidden.astype(dtype), embedding.astype(dtype))


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


def unstack_layers(params: dict, num_layers: int) -> dict:
    """nn.scan's layout (blocks/block/..., a leading layers axis) -> block_0, block_1, ..."""
    if "blocks" not in params:
        return params
    rest = {k: v for k, v in params.items() if k != "blocks"}
    return {**rest, **{f"block_{i}": jax.tree.map(lambda x: x[i], params["blocks"]["block"])
                       for i in range(num_layers)}}


def stack_layers(params: dict, num_layers: int) -> dict:
    """block_0, block_1, ... -> nn.scan's layout."""
    rest = {k: v for k, v in params.items() if not k.startswith("block_")}
    blocks = [params[f"block_{i}"] for i in range(num_layers)]
    return {**rest, "blocks": {"block": jax.tree.map(lambda *x: jnp.stack(x), *blocks)}}


def unrolled(model: nn.Module) -> nn.Module:
    """A model of this layout (the GPT, a decoder family's `Decoder`) trained with scan_layers,
    as its twin with one block per layer, whose parameters `unstack_layers` gives: the same
    function, for what the scan gets in the way of (decoding, int8's per-layer scales, sown
    attention maps). Any other model is returned as it is."""
    cfg = getattr(model, "cfg", None)
    if not getattr(cfg, "scan_layers", False):
        return model
    return type(model)(cfg.replace(scan_layers=False, remat="none"))
