"""The decoder family's block (lmjax/models/decoder.py) against independent references: the
full forward pass for the cached one, repeated key/value heads for grouped-query attention,
separate rows for packed ones, one device for eight, and transformers' RoPE frequencies.
Parity with Hugging Face's own models is tests/convert/test_decoders.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.models import rope
from lmjax.models.decoder import FAMILIES, Decoder
from lmjax.models.decoding import KVCache
from lmjax.models.gpt import stack_layers, unstack_layers
from lmjax.parallel import mesh as meshlib

# `decoder_config` (tests/conftest.py): 61 tokens, context 32, 2 layers of 4 heads over 2
# key/value heads of 8, d_model 32; windows of 8 where the family slides.


def _init(cfg, seed=0):
    variables = Decoder(cfg).init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))
    # Norms start at their identity, biases at zero: move them so that they count.
    noise = jax.random.PRNGKey(seed + 1)
    return jax.tree.map(lambda x: x + 0.1 * jax.random.normal(noise, x.shape)
                        if x.ndim == 1 else x, nn.meta.unbox(variables["params"]))


def _slow(*values):
    """A parametrization the full suite runs (the fast tier keeps one case of most tests)."""
    return pytest.param(*values, marks=pytest.mark.slow)


def _tokens(cfg, batch=2, length=None, seed=0):
    length = length or cfg.block_size
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, length)))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_has_logical_axis_names(decoder_config, family):
    cfg = decoder_config(family)
    boxed = Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    known = {name for name, _ in meshlib.LOGICAL_RULES}
    for box in leaves:
        assert len(box.names) == box.value.ndim and set(box.names) <= known
    attn = boxed["block_0"]["attn"]
    assert attn["k"]["kernel"].names == ("embed", "kv_heads", "kv")
    assert attn["k"]["kernel"].value.shape == (32, 2, 8)  # key/value heads, not query heads


# All in the full suite: the GPT's scan test is in the fast tier, and this one compiles four
# models (scanned and not, forward and backward).
@pytest.mark.parametrize("family,remat", [_slow("gemma3", "none"), _slow("gemma3", "full"),
                                          _slow("mistral", "none"), _slow("mistral", "full"),
                                          _slow("qwen2", "none"), _slow("qwen2", "full")])
def test_scanned_layers_compute_the_same_function(decoder_config, family, remat):
    """Gemma 3 with 4 layers mixes local and global ones inside the scan (2 layers are enough
    for the others, and compile in half the time)."""
    cfg = decoder_config(family, num_layers=4 if family == "gemma3" else 2,
                         layer_pattern="LG" if family == "gemma3" else
                         decoder_config(family).layer_pattern, remat=remat)
    params = _init(cfg)
    scanned = cfg.replace(scan_layers=True)
    stacked = stack_layers(params, cfg.num_layers)
    want = jax.tree.map(jnp.shape, nn.meta.unbox(Decoder(scanned).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]))
    assert jax.tree.map(jnp.shape, stacked) == want
    tokens = _tokens(cfg)
    np.testing.assert_allclose(Decoder(scanned).apply({"params": stacked}, tokens),
                               Decoder(cfg).apply({"params": params}, tokens), atol=2e-5)
    grads = jax.grad(lambda p: Decoder(scanned).apply(
        {"params": p}, tokens, deterministic=False).sum())(stacked)
    ref = jax.grad(lambda p: Decoder(cfg).apply({"params": p}, tokens).sum())(params)
    for a, b in zip(jax.tree.leaves(unstack_layers(grads, cfg.num_layers)),
                    jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family,scan", [_slow("gemma2", False), _slow("gemma3", True),
                                         ("mistral", False), _slow("qwen3", True)])
def test_cached_decoding_equals_the_full_forward_pass(decoder_config, family, scan):
    """A prompt of 11 tokens after 3 of left padding, then one token at a time past the
    window of 8: the same logits as the whole sequence at once."""
    cfg = decoder_config(family, num_layers=3, scan_layers=scan)
    params = _init(cfg.replace(scan_layers=False))
    params = stack_layers(params, 3) if scan else params
    model, tokens, pad = Decoder(cfg), _tokens(cfg, batch=1, length=24), 3
    full = model.apply({"params": params}, tokens)
    padded = jnp.concatenate([jnp.zeros((1, pad), tokens.dtype), tokens], axis=1)
    cache = model.init_cache(1, 32, start=jnp.array([pad]))
    positions = (jnp.arange(pad + 11) - pad)[None]
    logits, cache = model.apply({"params": params}, padded[:, :pad + 11],
                                positions=jnp.where(positions < 0, -1, positions), cache=cache)
    got = [logits[:, pad:]]
    for i in range(pad + 11, pad + 24):
        step, cache = model.apply({"params": params}, padded[:, i:i + 1],
                                  positions=jnp.array([[i - pad]]), cache=cache)
        got.append(step)
    assert isinstance(cache, KVCache) and cache.k.shape == (3, 1, 2, 32, 8)  # KV heads
    np.testing.assert_allclose(jnp.concatenate(got, axis=1), full, atol=2e-5)


@pytest.mark.parametrize("softcap", [0.0, 2.0])  # the fused call, and the written-out path
def test_a_local_layer_sees_only_its_window(decoder_config, softcap):
    cfg = decoder_config("mistral", num_layers=1, layer_pattern="L", sliding_window=6,
                         attn_softcap=softcap)
    params, tokens = _init(cfg), _tokens(cfg, batch=1)
    changed = tokens.at[0, 4].set((tokens[0, 4] + 1) % cfg.vocab_size)
    a, b = (Decoder(cfg).apply({"params": params}, t) for t in (tokens, changed))
    diff = np.abs(np.asarray(a - b)).max(axis=-1)[0]
    assert (diff[:4] == 0).all() and (diff[4:10] > 1e-4).all() and (diff[10:] == 0).all()


def test_grouped_query_attention_is_attention_with_repeated_heads(decoder_config):
    """Two key/value heads shared by four query heads compute what four key/value heads do
    when each pair holds the same weights (query head h reads key/value head h // 2)."""
    gqa = decoder_config("llama", num_kv_heads=2)
    mha = gqa.replace(num_kv_heads=4)
    params = _init(gqa)
    full = jax.tree.map(lambda x: x, params)
    for i in range(gqa.num_layers):
        for name in ("k", "v"):
            kernel = params[f"block_{i}"]["attn"][name]["kernel"]
            full[f"block_{i}"]["attn"][name] = {"kernel": jnp.repeat(kernel, 2, axis=1)}
    tokens = _tokens(gqa)
    np.testing.assert_allclose(Decoder(gqa).apply({"params": params}, tokens),
                               Decoder(mha).apply({"params": full}, tokens), atol=1e-5)


@pytest.mark.slow  # the GPT's packing test is in the fast tier; this block's in the full suite
def test_packed_rows_equal_separate_rows(decoder_config):
    cfg = decoder_config("gemma2", num_layers=2)
    params = _init(cfg)
    a, b = _tokens(cfg, 1, 13, seed=1), _tokens(cfg, 1, 19, seed=2)
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.asarray([[1] * 13 + [2] * 19])
    out = Decoder(cfg).apply({"params": params}, packed, segment_ids=segments)
    np.testing.assert_allclose(out[:, :13], Decoder(cfg).apply({"params": params}, a), atol=2e-5)
    np.testing.assert_allclose(out[:, 13:], Decoder(cfg).apply({"params": params}, b), atol=2e-5)


def test_attention_maps_come_from_the_same_attention(decoder_config):
    """Capturing maps takes the written-out path: same outputs as the fused call, rows that
    sum to one, nothing outside each local layer's window."""
    cfg = decoder_config("gemma3", num_layers=2, layer_pattern="LG")
    params, tokens = _init(cfg), _tokens(cfg)
    plain = Decoder(cfg).apply({"params": params}, tokens)
    out, state = Decoder(cfg).apply({"params": params}, tokens, mutable=["intermediates"])
    np.testing.assert_allclose(out, plain, atol=2e-5)
    local = state["intermediates"]["block_0"]["attn"]["attention"][0]  # (batch, heads, q, k)
    assert local.shape == (2, 4, 32, 32)
    np.testing.assert_allclose(local.sum(-1), 1.0, atol=1e-5)
    q, k = np.indices((32, 32))
    assert np.asarray(local)[..., (k > q) | (q - k >= 8)].max() == 0.0


def test_final_softcap_bounds_the_logits(decoder_config):
    cfg = decoder_config("gemma2", final_softcap=0.1)
    logits = Decoder(cfg).apply({"params": _init(cfg)}, _tokens(cfg))
    assert 0.09 < float(jnp.abs(logits).max()) < 0.1  # about 0.35 uncapped


@pytest.mark.parametrize("layout,kv_heads", [
    (dict(data=2, fsdp=1, tensor=4), 2),   # fewer key/value heads than the tensor axis
    _slow(dict(data=1, fsdp=4, tensor=2), 4),   # more: they shard
    _slow(dict(data=2, fsdp=2, tensor=2), 1),   # multi-query
])
def test_sharded_equals_single_device(decoder_config, layout, kv_heads):
    cfg = decoder_config("qwen3", num_heads=8, num_kv_heads=kv_heads, d_model=64,
                         vocab_size=64, mlp_dim=64)
    boxed = Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    params, tokens = _init(cfg), _tokens(cfg, batch=4)

    def loss(p, t):
        return jnp.mean(Decoder(cfg).apply({"params": p}, t) ** 2)

    ref = jax.jit(jax.value_and_grad(loss))(params, tokens)
    mesh = meshlib.make_mesh(ml_collections.ConfigDict(layout))
    shardings = meshlib.logical_shardings(boxed, mesh)
    k = shardings["block_0"]["attn"]["k"]["kernel"].spec
    assert k[1] == ("tensor" if kv_heads % layout["tensor"] == 0 else None)
    sharded = jax.device_put(params, shardings)
    got = jax.jit(jax.value_and_grad(loss))(sharded, jax.device_put(
        tokens, meshlib.batch_sharding(mesh)))
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1])):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("params", [
    dict(kind="default", theta=1e6),
    dict(kind="linear", theta=1e4, factor=8.0),
    dict(kind="llama3", theta=5e5, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_context=8192),
    dict(kind="yarn", theta=1e6, factor=4.0, original_context=32768),
    dict(kind="yarn", theta=1e4, factor=8.0, original_context=4096, beta_fast=16.0,
         attention_factor=1.3, truncate=False),
])
def test_rope_frequencies_match_transformers(params):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    r = rope.Rope(64, **params)
    hf = {"rope_type": r.kind, "rope_theta": r.theta, "factor": r.factor,
          "low_freq_factor": r.low_freq_factor, "high_freq_factor": r.high_freq_factor,
          "original_max_position_embeddings": r.original_context, "beta_fast": r.beta_fast,
          "beta_slow": r.beta_slow, "truncate": r.truncate}
    if r.attention_factor:
        hf["attention_factor"] = r.attention_factor
    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64,
                                      max_position_embeddings=131072, rope_parameters=hf)
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    init = ROPE_INIT_FUNCTIONS.get(r.kind, LlamaRotaryEmbedding.compute_default_rope_parameters)
    inv, scale = init(config)
    np.testing.assert_allclose(r.inv_frequencies(), inv.numpy(), rtol=1e-6)
    assert r.scaling == pytest.approx(scale)


def test_partial_rotary_rotates_the_first_features_only():
    r = rope.Rope(4, theta=100.0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 2, 6)), jnp.float32)
    cos, sin = r.tables(jnp.arange(3)[None])
    out = np.asarray(rope.apply(x, cos, sin))
    np.testing.assert_array_equal(out[..., 4:], np.asarray(x)[..., 4:])
    inv = 1.0 / 100.0 ** (np.arange(0, 4, 2) / 4)
    for t in range(3):  # each pair (i, i + 2) turned by t * inv[i]
        c, s = np.cos(t * inv), np.sin(t * inv)
        a, b = np.asarray(x)[0, t, :, :2], np.asarray(x)[0, t, :, 2:4]
        np.testing.assert_allclose(out[0, t, :, :2], a * c - b * s, atol=1e-6)
        np.testing.assert_allclose(out[0, t, :, 2:4], b * c + a * s, atol=1e-6)
