"""The BERT encoder: bidirectional, blind to padding, consistent heads, sharded by logical names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.models import bert
from lmjax.parallel import mesh as meshlib


# `bert_config` (tests/conftest.py): vocabulary 40, 2 layers of 2 heads, d_model 16, 3 classes.

TOKENS = jnp.array([[2, 11, 12, 13, 14, 3, 0, 0, 0, 0],
                    [2, 21, 22, 3, 0, 0, 0, 0, 0, 0]], jnp.int32)


@pytest.fixture(scope="module")
def mlm(bert_config):
    model = bert.MaskedLM(bert_config())
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), TOKENS))["params"]
    return model, params


def hidden(model, params, tokens):
    """The encoder's output for `tokens`, through the MLM model's parameters."""
    return jax.jit(bert.Encoder(model.cfg).apply)({"params": params["bert"]}, tokens)


@pytest.mark.slow
def test_bidirectional_a_later_token_changes_an_earlier_position(mlm):
    model, params = mlm
    changed = TOKENS.at[0, 4].set(30)
    a, b = hidden(model, params, TOKENS), hidden(model, params, changed)
    assert np.abs(np.asarray(a[0, 1] - b[0, 1])).max() > 1e-4  # position 1 sees position 4
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)  # the other row is untouched


def test_padding_gets_no_attention(mlm):
    """Real positions give the same output with or without trailing padding."""
    model, params = mlm
    unpadded = TOKENS[:1, :6]
    np.testing.assert_allclose(hidden(model, params, TOKENS[:1])[0, :6],
                               hidden(model, params, unpadded)[0], atol=1e-5)
    # An all-padding row (as in padded evaluation batches) stays finite.
    assert np.isfinite(np.asarray(hidden(model, params, jnp.zeros((1, 8), jnp.int32)))).all()


def test_mlm_head_on_positions_equals_the_full_logits_gathered(mlm):
    model, params = mlm
    full = model.apply({"params": params}, TOKENS)
    assert full.shape == (2, 10, 40)
    positions = jnp.array([[1, 4], [2, 1]])
    some = model.apply({"params": params}, TOKENS, positions=positions)
    np.testing.assert_allclose(some, jnp.take_along_axis(full, positions[:, :, None], 1),
                               atol=1e-5)


def test_decoder_is_tied_to_the_word_embeddings(mlm):
    model, params = mlm
    assert "embedding" in params["bert"]["word_embeddings"]
    assert not any("decoder" in k for k in params)  # no separate output matrix
    bumped = jax.tree.map(lambda x: x, params)
    bumped["bert"]["word_embeddings"]["embedding"] = (
        params["bert"]["word_embeddings"]["embedding"].at[7].add(
            jax.random.normal(jax.random.PRNGKey(3), (16,))))
    # Token 7 is not in the input, so only the logit of class 7 can change.
    diff = np.abs(np.asarray(model.apply({"params": bumped}, TOKENS) -
                             model.apply({"params": params}, TOKENS))).max(axis=(0, 1))
    assert diff[7] > 1e-3 and np.delete(diff, 7).max() < 1e-6


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_ignores_padding(pooling, bert_config):
    model = bert.Classifier(bert_config(pooling=pooling))
    params = model.init(jax.random.PRNGKey(1), TOKENS)["params"]
    logits = model.apply({"params": params}, TOKENS)
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(model.apply({"params": params}, TOKENS[:1, :6])[0], logits[0],
                               atol=1e-5)
    assert set(params) == {"bert", "pooler", "classifier"}


def test_dropout_is_active_only_in_training(bert_config):
    model = bert.Classifier(bert_config(dropout=0.5))
    params = model.init(jax.random.PRNGKey(1), TOKENS)["params"]
    run = lambda seed: model.apply({"params": params}, TOKENS, deterministic=False,  # noqa: E731
                                   rngs={"dropout": jax.random.PRNGKey(seed)})
    assert not np.allclose(run(0), run(1))
    np.testing.assert_allclose(model.apply({"params": params}, TOKENS),
                               model.apply({"params": params}, TOKENS), atol=0)


def test_too_long_a_sequence_is_a_readable_error(mlm):
    model, params = mlm
    with pytest.raises(ValueError, match="block_size"):
        model.apply({"params": params}, jnp.ones((1, 17), jnp.int32))


@pytest.mark.slow
def test_parameters_shard_by_the_mesh_rules(bert_config):
    """Every parameter carries logical names the mesh table knows; a 2x2x2 mesh places them."""
    model = bert.MaskedLM(bert_config())
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), TOKENS)["params"]
    known = {name for name, _ in meshlib.LOGICAL_RULES} | {None}
    for spec in jax.tree.leaves(nn.get_partition_spec(boxed),
                                is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)):
        assert set(spec) <= known, spec
    cfg = ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2})
    mesh = meshlib.make_mesh(cfg, jax.devices()[:8])
    shardings = meshlib.logical_shardings(boxed, mesh)
    params = jax.jit(lambda r: nn.meta.unbox(model.init(r, TOKENS))["params"],
                     out_shardings=shardings)(jax.random.PRNGKey(0))
    q = params["bert"]["layer_0"]["attention"]["query"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    assert np.isfinite(np.asarray(model.apply({"params": params}, TOKENS))).all()


def test_matrix_dims_name_every_kernel(mlm):
    _, params = mlm
    dims = bert.matrix_dims(params)
    out = dims["bert"]["layer_0"]["attention"]["out"]["kernel"]
    assert out.reduction_axis == (0, 1) and out.output_axis == (2,)
    assert dims["bert"]["layer_0"]["fc"]["kernel"].reduction_axis == (0,)
    assert dims["bert"]["word_embeddings"]["embedding"] is None
