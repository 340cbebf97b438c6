import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models.gpt import GPT, GPTConfig

# `gpt_config` (tests/conftest.py): vocabulary 50, context 16, 2 layers of 2 heads, d_model 32.


def _init(cfg, seed=0):
    tokens = jnp.zeros((2, cfg.block_size), jnp.int32)
    return GPT(cfg).init(jax.random.PRNGKey(seed), tokens)["params"]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(dtype, gpt_config):
    cfg = gpt_config(dtype=dtype)
    params = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 10), 0, cfg.vocab_size)
    logits = GPT(cfg).apply({"params": params}, tokens)
    chex.assert_shape(logits, (3, 10, cfg.vocab_size))
    assert logits.dtype == dtype
    for leaf in jax.tree.leaves(nn.meta.unbox(params)):
        assert leaf.dtype == jnp.float32  # parameters stay float32 under bf16 compute


def test_causal_later_tokens_do_not_change_earlier_logits(gpt_config):
    cfg = gpt_config()
    params = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 16), 0, cfg.vocab_size)
    changed = tokens.at[0, 9].set((tokens[0, 9] + 1) % cfg.vocab_size)
    a = GPT(cfg).apply({"params": params}, tokens)
    b = GPT(cfg).apply({"params": params}, changed)
    np.testing.assert_array_equal(a[0, :9], b[0, :9])
    assert np.abs(np.asarray(a[0, 9:] - b[0, 9:])).max() > 1e-4


def test_every_parameter_has_logical_axis_names(gpt_config):
    params = _init(gpt_config())
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for box in leaves:
        assert len(box.names) == box.value.ndim and all(box.names)


def test_scanned_layers_compute_the_same_function(gpt_config):
    cfg, scfg = gpt_config(), gpt_config(scan_layers=True)
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


def test_dropout_is_active_only_in_training(gpt_config):
    cfg = gpt_config(dropout=0.5)
    params = _init(cfg)
    tokens = jnp.ones((2, 8), jnp.int32)
    model = GPT(cfg)
    eval_a = model.apply({"params": params}, tokens)
    eval_b = model.apply({"params": params}, tokens)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = model.apply({"params": params}, tokens, deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(0)})
    assert np.abs(np.asarray(train - eval_a)).max() > 1e-3


def test_too_long_input_is_refused(gpt_config):
    cfg = gpt_config()
    with pytest.raises(ValueError, match="block_size"):
        GPT(cfg).apply({"params": _init(cfg)}, jnp.zeros((1, 17), jnp.int32))


def _loss_and_grads(cfg, params, tokens):
    def loss(p):
        logits = GPT(cfg).apply({"params": p}, tokens)
        return -jax.nn.log_softmax(logits)[..., 0].mean()

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.slow
@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_compute_the_same_gradients(scan, gpt_config):
    # (What they save is device memory: XLA's CPU backend does not show it; the GPU bench does.)
    base = dict(num_layers=3, d_model=64, num_heads=4, block_size=64, scan_layers=scan)
    params = nn.meta.unbox(_init(gpt_config(**base)))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (4, 64), 0, 50)
    ref_loss, ref_grads = _loss_and_grads(gpt_config(**base, remat="none"), params, tokens)
    for policy in ("dots", "full"):
        loss, grads = _loss_and_grads(gpt_config(**base, remat=policy), params, tokens)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
        chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-6)


def test_gpt2_presets_have_gpt2_parameter_counts(load_config):
    # GPT-2's published sizes, counted with its 50,257-token vocabulary (tied embeddings).
    expected = {"gpt2_124m": 124_439_808, "gpt2_350m": 354_823_168, "gpt2_774m": 774_030_080}
    for preset, count in expected.items():
        c = load_config(preset)
        c.model.vocab_size = 50257
        cfg = GPTConfig.from_section(c.model).with_vocab(50257)
        shapes = jax.eval_shape(lambda: GPT(cfg).init(jax.random.PRNGKey(0),
                                                      jnp.zeros((1, 8), jnp.int32)))
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(shapes)))
        assert n == count, preset
