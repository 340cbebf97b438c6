import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.models.gpt import GPT


def _cfg(**kw):
    c = dict(vocab_size=50, block_size=16, num_layers=2, num_heads=2, d_model=32, mlp_ratio=4,
             dropout=0.0, use_bias=True, dtype=jnp.float32, param_dtype=jnp.float32,
             attention=None, scan_layers=False)
    c.update(kw)
    return ml_collections.FrozenConfigDict(c)


def _init(cfg, seed=0):
    tokens = jnp.zeros((2, cfg.block_size), jnp.int32)
    return GPT(cfg).init(jax.random.PRNGKey(seed), tokens)["params"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(dtype):
    cfg = _cfg(dtype=dtype)
    params = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, cfg.vocab_size)
    logits = GPT(cfg).apply({"params": params}, tokens)
    chex.assert_shape(logits, (3, 10, cfg.vocab_size))
    assert logits.dtype == dtype
    for leaf in jax.tree.leaves(nn.meta.unbox(params)):
        assert leaf.dtype == jnp.float32  # parameters stay float32 under bf16 compute


def test_causal_later_tokens_do_not_change_earlier_logits():
    cfg = _cfg()
    params = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 16), 0, cfg.vocab_size)
    changed = tokens.at[0, 9].set((tokens[0, 9] + 1) % cfg.vocab_size)
    a = GPT(cfg).apply({"params": params}, tokens)
    b = GPT(cfg).apply({"params": params}, changed)
    np.testing.assert_array_equal(a[0, :9], b[0, :9])
    assert np.abs(np.asarray(a[0, 9:] - b[0, 9:])).max() > 1e-4


def test_every_parameter_has_logical_axis_names():
    params = _init(_cfg())
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for box in leaves:
        assert len(box.names) == box.value.ndim and all(box.names)


def test_scanned_layers_compute_the_same_function():
    cfg, scfg = _cfg(), _cfg(scan_layers=True)
    params = nn.meta.unbox(_init(cfg))
    # Stack the per-layer parameters along a leading axis: the layout nn.scan uses.
    blocks = [params[f"block_{i}"] for i in range(cfg.num_layers)]
    scanned = {k: v for k, v in params.items() if not k.startswith("block_")}
    scanned["blocks"] = {"block": jax.tree.map(lambda *x: jnp.stack(x), *blocks)}
    expected = jax.tree.map(jnp.shape, nn.meta.unbox(_init(scfg)))
    assert jax.tree.map(jnp.shape, scanned) == expected
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, cfg.vocab_size)
    np.testing.assert_allclose(GPT(scfg).apply({"params": scanned}, tokens),
                               GPT(cfg).apply({"params": params}, tokens), atol=1e-5)


def test_dropout_is_active_only_in_training():
    cfg = _cfg(dropout=0.5)
    params = _init(cfg)
    tokens = jnp.ones((2, 8), jnp.int32)
    model = GPT(cfg)
    eval_a = model.apply({"params": params}, tokens)
    eval_b = model.apply({"params": params}, tokens)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = model.apply({"params": params}, tokens, deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(0)})
    assert np.abs(np.asarray(train - eval_a)).max() > 1e-3


def test_too_long_input_is_refused():
    cfg = _cfg()
    with pytest.raises(ValueError, match="block_size"):
        GPT(cfg).apply({"params": _init(cfg)}, jnp.zeros((1, 17), jnp.int32))
