"""The decoder block of today's open models: Llama 3, Qwen 2/3, Mistral, Gemma 2/3.

One module, with the families' differences as config fields (`DecoderConfig`):

- rotary positions (lmjax/models/rope.py: theta, a partial rotary dimension, the 'linear',
  'llama3' and 'yarn' scalings), local layers with their own base (Gemma 3);
- RMSNorm, or Gemma's (1 + w) form with its embeddings scaled by sqrt(d_model);
- a gated MLP: SwiGLU (silu) or GeGLU (gelu_tanh, gelu);
- grouped-query attention (`num_kv_heads` below `num_heads`; 1 is multi-query), optional
  q/k/v biases (Qwen 2), RMSNorm over each head's queries and keys (Qwen 3, Gemma 3);
- sliding-window layers in a local/global pattern (Mistral: all local; Gemma 2: alternating;
  Gemma 3: five local, one global), attention-logit and final-logit soft-capping (Gemma 2),
  norms after each sub-block as well as before (Gemma 2/3), tied or untied embeddings.

Its call and decoding protocol are the GPT's (lmjax/models/gpt.py, lmjax/models/decoding.py):
tokens in, logits out; `init_cache` and `positions=`/`cache=` for decoding, whose cache holds
the key/value heads only; `segment_ids` for packed rows; `hidden=True` with `head_logits` for
the chunked loss. Parameters carry logical axis names (lmjax/parallel/mesh.py), the key/value
heads theirs ('kv_heads'). The parameter layout (block_0 ... or, scanned, blocks/block) is
the GPT's too. Hugging Face conversion: lmjax/convert/decoders.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.models import attention, rope
from lmjax.models.decoding import KVCache
from lmjax.models.gpt import REMAT_POLICIES, segment_mask
from lmjax.models.layers import ModelConfig, dense, require

# model.name: the family (what `convert to_hf` writes); every one is this module.
FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3")
ACTIVATIONS = {"silu": nn.silu, "gelu_tanh": functools.partial(nn.gelu, approximate=True),
               "gelu": functools.partial(nn.gelu, approximate=False)}
LOCAL, GLOBAL = "L", "G"


@dataclasses.dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """The decoder's shape and numerics: the `model` section of configs/llama.py, or of a run
    converted from Hugging Face (lmjax/convert/decoders.py), resolved. Fields at 0 that have a
    derived value (num_kv_heads, head_dim, mlp_dim, rotary_dim) are filled in."""
    IGNORED = ()
    AUTO_CUDNN = True  # causal attention: cuDNN's fused kernel where it runs
    name: str = "llama"            # the family: one of FAMILIES
    vocab_size: int = 0            # 0 until the tokenizer fills it in (with_vocab)
    block_size: int = 128          # context: the training length, the longest decode
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 0          # key/value heads: 0 is num_heads; fewer is grouped-query
    head_dim: int = 0              # 0: d_model // num_heads
    d_model: int = 128
    mlp_dim: int = 0               # gated MLP width; 0: 8/3 d_model rounded up to 8
    activation: str = "silu"       # the gate's: silu (SwiGLU), gelu_tanh or gelu (GeGLU)
    norm_eps: float = 1e-6
    norm_plus_one: bool = False    # Gemma's RMSNorm: x (1 + w), weights stored around 0
    embed_scale: bool = False      # Gemma: embeddings times sqrt(d_model)
    qkv_bias: bool = False         # biases on the query/key/value projections (Qwen 2)
    out_bias: bool = False         # ... on the attention output
    mlp_bias: bool = False         # ... on the MLP's three projections
    qk_norm: bool = False          # RMSNorm over each head's queries and keys (Qwen 3, Gemma 3)
    post_norms: bool = False       # norms after attention and MLP too (Gemma 2/3)
    tie_embeddings: bool = True    # the output layer is the input embedding
    rope_theta: float = 10000.0
    rope_local_theta: float = 0.0  # local layers' base, unscaled (Gemma 3); 0: as global ones
    rotary_dim: int = 0            # features rotated per head; 0: head_dim
    rope_type: str = "default"     # 'default' | 'linear' | 'llama3' | 'yarn' (rope.py)
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 0
    rope_beta_fast: float = 32.0
    rope_beta_slow: float = 1.0
    rope_attention_factor: float = 0.0
    rope_truncate: bool = True
    sliding_window: int = 0        # tokens a local layer sees, itself included; 0: none
    layer_pattern: str = GLOBAL    # 'L' (local) / 'G' (global) per layer, repeated: 'LG', ...
    attn_softcap: float = 0.0      # cap * tanh(score / cap) before the softmax; 0: none
    final_softcap: float = 0.0     # the same on the output logits
    attn_scalar: float = 0.0       # scores scaled by attn_scalar ** -0.5; 0: head_dim
    context_limit: int = 0         # positions the weights support (HF max_position_embeddings)
    init_std: float = 0.02
    dropout: float = 0.0
    dtype: Any = "float32"         # compute dtype
    param_dtype: Any = "float32"
    attention: str = "auto"        # 'auto' | 'xla' | 'cudnn' (layers.resolve_attention)
    scan_layers: bool = False
    remat: str = "none"            # 'none' | 'dots' | 'full'

    def __post_init__(self):
        require(self.name in FAMILIES, f"model.name={self.name!r}: the decoder families are "
                f"{', '.join(FAMILIES)}.")
        self._check_positive("block_size", "num_layers", "num_heads", "d_model", "norm_eps",
                             "rope_theta", "rope_factor")
        require(self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}: 0 (from the "
                "tokenizer) or more.")
        kv = self.num_kv_heads or self.num_heads
        require(kv > 0 and self.num_heads % kv == 0, f"model.num_kv_heads={self.num_kv_heads}"
                f": must divide model.num_heads={self.num_heads} (0: as many).")
        require(self.head_dim > 0 or self.d_model % self.num_heads == 0,
                f"model.d_model={self.d_model} is not divisible by model.num_heads="
                f"{self.num_heads}: set model.head_dim.")
        head_dim = self.head_dim or self.d_model // self.num_heads
        rotary = self.rotary_dim or head_dim
        require(0 < rotary <= head_dim and rotary % 2 == 0, f"model.rotary_dim="
                f"{self.rotary_dim}: an even number up to head_dim={head_dim} (0: all).")
        for name, value in (("num_kv_heads", kv), ("head_dim", head_dim),
                            ("mlp_dim", self.mlp_dim or -(-8 * self.d_model // 3 // 8) * 8),
                            ("rotary_dim", rotary)):
            object.__setattr__(self, name, value)
        require(self.mlp_dim > 0, f"model.mlp_dim={self.mlp_dim}: must be positive.")
        require(self.activation in ACTIVATIONS, f"model.activation={self.activation!r}: use "
                f"{', '.join(ACTIVATIONS)}.")
        require(self.rope_type in rope.KINDS, f"model.rope_type={self.rope_type!r}: use "
                f"{', '.join(rope.KINDS)}.")
        require(self.rope_type not in ("llama3", "yarn") or self.rope_original_context > 0,
                f"model.rope_type={self.rope_type!r} needs model.rope_original_context (the "
                "pretraining context).")
        require(bool(self.layer_pattern) and set(self.layer_pattern) <= {LOCAL, GLOBAL},
                f"model.layer_pattern={self.layer_pattern!r}: a string of L (local, sliding "
                "window) and G (global) layers, repeated over the depth.")
        require((LOCAL not in self.layer_pattern) == (self.sliding_window == 0),
                f"model.sliding_window={self.sliding_window} with model.layer_pattern="
                f"{self.layer_pattern!r}: local layers (L) need a window, and a window needs "
                "local layers.")
        for name in ("sliding_window", "attn_softcap", "final_softcap", "attn_scalar",
                     "rope_local_theta", "context_limit"):
            require(getattr(self, name) >= 0, f"model.{name}={getattr(self, name)}: must be "
                    ">= 0 (0: off).")
        require(not self.context_limit or self.block_size <= self.context_limit,
                f"model.block_size={self.block_size}: at most the {self.context_limit} "
                "positions these weights support (model.context_limit).")
        require(self.remat in REMAT_POLICIES, f"model.remat={self.remat!r}: use 'none', "
                "'dots' or 'full'.")
        self._check_dropout()
        self._set_dtypes()
        self._check_attention()

    @classmethod
    def from_section(cls, section, **overrides) -> "DecoderConfig":
        """As ModelConfig's, with the family's features (FAMILY_FEATURES) for the fields the
        section leaves out: `model.name='gemma3'` is Gemma 3's block."""
        values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
        values.update(overrides)
        features = FAMILY_FEATURES.get(values.get("name", cls.name), {})
        return super().from_section({**features, **values})

    @property
    def local_layers(self) -> tuple[bool, ...]:
        """Per layer, whether it is local (sliding window): the pattern repeated."""
        p = self.layer_pattern
        return tuple(p[i % len(p)] == LOCAL for i in range(self.num_layers))

    @property
    def scale(self) -> float:
        """What attention scores are multiplied by."""
        return (self.attn_scalar or self.head_dim) ** -0.5

    def ropes(self) -> dict[str, rope.Rope]:
        """The rotary frequencies of each layer kind: 'global', and 'local' when local layers
        have a base of their own (unscaled)."""
        out = {"global": rope.Rope(
            self.rotary_dim, self.rope_theta, self.rope_type, self.rope_factor,
            self.rope_low_freq_factor, self.rope_high_freq_factor, self.rope_original_context,
            self.rope_beta_fast, self.rope_beta_slow, self.rope_attention_factor,
            self.rope_truncate)}
        if self.rope_local_theta:
            out["local"] = rope.Rope(self.rotary_dim, self.rope_local_theta)
        return out


# What each family's Hugging Face class fixes (the rest is shape and RoPE): the features
# configs/llama.py's presets and the tests start from. A checkpoint's config.json may differ
# (a real Qwen 2.5 ties its embeddings or not): lmjax/convert/decoders.py reads it whole.
FAMILY_FEATURES = {
    "llama": {},
    "qwen2": {"qkv_bias": True},
    "qwen3": {"qk_norm": True},
    "mistral": {},
    "gemma2": {"norm_plus_one": True, "embed_scale": True, "post_norms": True,
               "activation": "gelu_tanh", "layer_pattern": "LG", "attn_softcap": 50.0,
               "final_softcap": 30.0},
    "gemma3": {"norm_plus_one": True, "embed_scale": True, "post_norms": True,
               "activation": "gelu_tanh", "layer_pattern": "LLLLLG", "qk_norm": True,
               "rope_theta": 1e6, "rope_local_theta": 1e4},
}


def family_config(name: str, **fields) -> DecoderConfig:
    """A DecoderConfig of family `name` with its class's features; `fields` win."""
    require(name in FAMILIES, f"model.name={name!r}: the decoder families are "
            f"{', '.join(FAMILIES)}.")
    return DecoderConfig(name=name, **{**FAMILY_FEATURES[name], **fields})


class RMSNorm(nn.Module):
    """x / rms(x) times w (Llama: the normalised x cast to the compute dtype first), or times
    (1 + w) in float32 (Gemma: weights stored around 0)."""
    cfg: DecoderConfig
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
        w = self.param("scale", nn.with_logical_partitioning(init, (self.axis_name,)),
                       (x.shape[-1],), cfg.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
        if cfg.norm_plus_one:
            return (y * (1.0 + w.astype(jnp.float32))).astype(cfg.dtype)
        return w.astype(cfg.dtype) * y.astype(cfg.dtype)


def _residual_std(cfg: DecoderConfig) -> float:
    """Projections back into the residual stream start smaller with depth, as GPT-2's."""
    return cfg.init_std / (2 * cfg.num_layers) ** 0.5


def _select(local, on_local, on_global):
    """`local` a Python bool (layers unrolled) or a traced one (a scan over mixed layers)."""
    if isinstance(local, bool):
        return on_local if local else on_global
    return jax.tree.map(lambda a, b: jnp.where(local, a, b), on_local, on_global)


class Attention(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, local, tables: dict, cache: KVCache | None = None,
                 layer=0, mask: jax.Array | None = None):
        cfg = self.cfg
        h, kv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = dense((h, d), ("embed", "heads", "kv"), cfg, "q", cfg.init_std, cfg.qkv_bias)(x)
        k = dense((kv, d), ("embed", "kv_heads", "kv"), cfg, "k", cfg.init_std, cfg.qkv_bias)(x)
        v = dense((kv, d), ("embed", "kv_heads", "kv"), cfg, "v", cfg.init_std, cfg.qkv_bias)(x)
        if cfg.qk_norm:
            q = RMSNorm(cfg, "kv", name="q_norm")(q)
            k = RMSNorm(cfg, "kv", name="k_norm")(k)
        cos, sin = _select(local, tables.get("local", tables["global"]), tables["global"])
        q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
        window = None  # global layers; local ones see `sliding_window` tokens
        if cfg.sliding_window and isinstance(local, bool):
            window = cfg.sliding_window if local else None
        elif cfg.sliding_window:  # traced: a mask with an unbounded window for global layers
            window = jnp.where(local, cfg.sliding_window, jnp.iinfo(jnp.int32).max)
        if cache is not None:
            y, cache = attention.cached_attention(q, k, v, cache, layer, cfg.scale,
                                                  cfg.attn_softcap, window)
        elif cfg.attn_softcap or attention.capturing(self) or not (
                window is None or isinstance(window, int)):
            keep = attention.causal_keep(x.shape[1], window, mask)
            y = attention.attend(q, k, v, keep, cfg.scale, cfg.attn_softcap,
                                 sow=self if attention.capturing(self) else None)
        else:
            # One call that lets XLA, cuDNN or a TPU kernel pick the fused implementation; a
            # segment mask (packed rows) goes to XLA (cuDNN's is the unmasked causal case).
            y = jax.nn.dot_product_attention(
                q, k, v, mask=mask, scale=cfg.scale, is_causal=True,
                local_window_size=None if window is None else (window - 1, 0),
                implementation=cfg.attention_impl if mask is None else "xla")
        out = dense(cfg.d_model, ("heads", "kv", "embed"), cfg, "o", _residual_std(cfg),
                    cfg.out_bias, inputs=2)(y)
        out = nn.Dropout(cfg.dropout)(out, deterministic=deterministic)
        return out if cache is None else (out, cache)


class MLP(nn.Module):
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.cfg
        gate = dense(cfg.mlp_dim, ("embed", "mlp"), cfg, "gate", cfg.init_std, cfg.mlp_bias)(x)
        up = dense(cfg.mlp_dim, ("embed", "mlp"), cfg, "up", cfg.init_std, cfg.mlp_bias)(x)
        out = dense(cfg.d_model, ("mlp", "embed"), cfg, "down", _residual_std(cfg),
                    cfg.mlp_bias)(ACTIVATIONS[cfg.activation](gate) * up)
        return nn.Dropout(cfg.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
    """Pre-norm attention and MLP, each with a post-norm too when `post_norms` (Gemma)."""
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, local, tables: dict,
                 cache: KVCache | None = None, layer=0, mask: jax.Array | None = None):
        cfg = self.cfg
        h = Attention(cfg, name="attn")(RMSNorm(cfg, name="attn_norm")(x), deterministic, local,
                                        tables, cache, layer, mask)
        if cache is not None:
            h, cache = h
        if cfg.post_norms:
            h = RMSNorm(cfg, name="attn_post_norm")(h)
        x = x + h
        h = MLP(cfg, name="mlp")(RMSNorm(cfg, name="mlp_norm")(x), deterministic)
        if cfg.post_norms:
            h = RMSNorm(cfg, name="mlp_post_norm")(h)
        x = x + h
        return x if cache is None else (x, cache)


class ScannedBlock(nn.Module):
    """`Block` in the (carry, output) form `nn.scan` wants; `local` is per layer."""
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, x, deterministic: bool, local, tables: dict, mask=None):
        return Block(self.cfg, name="block")(x, deterministic, local, tables, mask=mask), None


class ScannedDecodeBlock(nn.Module):
    """`Block` with the cache in the scan carry, so each layer updates its slice in place."""
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, carry, layer_and_local, deterministic: bool, tables: dict):
        x, cache = carry
        layer, local = layer_and_local
        return Block(self.cfg, name="block")(x, deterministic, local, tables, cache, layer), None


def _remat(block_cls, cfg: DecoderConfig, static_local: bool):
    if cfg.remat == "none":
        return block_cls
    # Arguments 2 and 3 (after self and x): `deterministic`, and `local` where it is a Python
    # bool (not in a scan over mixed layers, where it is the scanned per-layer flag).
    return nn.remat(block_cls, static_argnums=(2, 3) if static_local else (2,),
                    policy=REMAT_POLICIES[cfg.remat])


class Decoder(nn.Module):
    """Token ids (batch, length) in, next-token logits (batch, length, vocab) out; the GPT's
    protocol (see `GPT`): `positions=` and `cache=` decode, `segment_ids=` packs, `hidden=True`
    returns the final normalised hidden states for `head_logits`."""
    cfg: DecoderConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True, *,
                 positions: jax.Array | None = None, cache: KVCache | None = None,
                 hidden: bool = False, segment_ids: jax.Array | None = None):
        cfg = self.cfg
        batch, length = tokens.shape
        chex.assert_rank(tokens, 2)
        if cache is None and length > cfg.block_size:
            raise ValueError(f"sequence length {length} exceeds model.block_size={cfg.block_size}")
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         embedding_init=nn.with_logical_partitioning(
                             nn.initializers.normal(cfg.init_std), ("vocab", "embed")),
                         name="embed")
        x = embed(tokens)
        if cfg.embed_scale:
            x = x * jnp.asarray(cfg.d_model ** 0.5, cfg.dtype)
        mask, positions = segment_mask(segment_ids, positions)
        if cache is not None:
            # Padding (negative positions) rotates as position 0: the cache's `start` masks
            # left padding, and right padding's slots are overwritten before they are read.
            positions = jnp.maximum(positions, 0)
        elif positions is None:
            positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
        chex.assert_shape(positions, (batch, length))
        tables = {kind: r.tables(positions) for kind, r in cfg.ropes().items()}
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        kinds = cfg.local_layers
        mixed = len(set(kinds)) > 1
        if cache is not None:
            x, cache = self._layers_with_cache(x, cache, tables, deterministic)
        elif cfg.scan_layers:
            # One compiled block applied num_layers times; a mixed local/global pattern scans
            # each layer's kind along with its parameters.
            local = jnp.asarray(kinds) if mixed else kinds[0]
            x, _ = nn.scan(
                _remat(ScannedBlock, cfg, not mixed), variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, 0 if mixed else nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(
                    cfg, name="blocks")(x, deterministic, local, tables, mask)
        else:
            block = _remat(Block, cfg, True)
            for i in range(cfg.num_layers):
                x = block(cfg, name=f"block_{i}")(x, deterministic, kinds[i], tables, None, 0, mask)
        x = RMSNorm(cfg, name="final_norm")(x)
        if hidden:
            return x
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = dense(cfg.vocab_size, ("embed", "vocab"), cfg, "lm_head", cfg.init_std,
                           False)(x)
        logits = _cap(logits, cfg.final_softcap)
        if cache is not None:
            return logits, cache.replace(index=cache.index + length)
        chex.assert_shape(logits, (batch, length, cfg.vocab_size))
        return logits

    def _layers_with_cache(self, x, cache: KVCache, tables: dict, deterministic: bool):
        """The layers with a cache; the same parameters (and names) as the training path."""
        cfg = self.cfg
        kinds = cfg.local_layers
        if cfg.scan_layers:
            mixed = len(set(kinds)) > 1
            local = jnp.asarray(kinds) if mixed else jnp.full((cfg.num_layers,), kinds[0])
            (x, cache), _ = nn.scan(
                ScannedDecodeBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(0, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(
                    (x, cache), (jnp.arange(cfg.num_layers), local), deterministic, tables)
            return x, cache
        for i in range(cfg.num_layers):
            x, cache = Block(cfg, name=f"block_{i}")(x, deterministic, kinds[i], tables, cache, i)
        return x, cache

    def init_cache(self, batch: int, slots: int, start: jax.Array | None = None) -> KVCache:
        """An empty cache for decoding (lmjax/models/decoding.py's protocol): the key/value
        heads of every layer, local layers' included (their window is a mask)."""
        cfg = self.cfg
        return KVCache.zeros(layers=cfg.num_layers, heads=cfg.num_kv_heads,
                             head_dim=cfg.head_dim, batch=batch, slots=slots, dtype=cfg.dtype,
                             start=start)


def _cap(logits: jax.Array, cap: float) -> jax.Array:
    return logits if not cap else jnp.tanh(logits / cap) * cap


def head_logits(params, hidden: jax.Array, cfg: DecoderConfig) -> jax.Array:
    """The output layer on hidden states, as `Decoder.__call__` applies it (the chunked loss in
    lmjax/tasks/lm.py): the tied embedding or lm_head, then the final soft-cap."""
    if cfg.tie_embeddings:
        w = params["embed"]["embedding"].astype(cfg.dtype)
        logits = jnp.einsum("...d,vd->...v", hidden.astype(cfg.dtype), w)
    else:
        w = params["lm_head"]["kernel"].astype(cfg.dtype)
        logits = jnp.einsum("...d,dv->...v", hidden.astype(cfg.dtype), w)
    return _cap(logits, cfg.final_softcap)


def matrix_dims(params):
    """How each weight is a matrix (for Muon), as gpt.matrix_dims: the attention output reads
    two axes (heads, head_dim); the untied output layer, like the embedding, is no matrix
    here (Muon is for hidden layers)."""
    from optax.contrib import MuonDimensionNumbers  # noqa: lazy, as gpt.matrix_dims (start-up)

    def dims(path, x):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        if keys[-1] != "kernel" or keys[0] == "lm_head":
            return None
        first = 1 if "blocks" in keys else 0  # the scanned layers axis
        n_in = 2 if keys[-2] == "o" else 1
        return MuonDimensionNumbers(reduction_axis=tuple(range(first, first + n_in)),
                                    output_axis=tuple(range(first + n_in, x.ndim)))

    return jax.tree_util.tree_map_with_path(dims, params)
