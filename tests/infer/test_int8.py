"""int8 weights: the decoding product that reads int8 bytes, and scanned models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.infer import int8
from lmjax.models.gpt import GPT, GPTConfig

qwix = pytest.importorskip("qwix")


def _qarray(rng, n_in, n_out):
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    return qwix.quantize(jnp.asarray(w), jnp.int8, channelwise_axes=(1,)), w


@pytest.mark.parametrize("rows", [(1, 1), (2, 1), (1, 2)])
def test_vector_product_equals_qwix_and_the_dequantized_matrix(rows):
    rng = np.random.default_rng(0)
    q, _ = _qarray(rng, 48, 24)
    x = jnp.asarray(rng.standard_normal(rows + (48,)).astype(np.float32))
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    got = int8.vector_dot_general(x, q, dims)
    np.testing.assert_allclose(got, qwix.dot_general(x, q, dims), rtol=1e-5, atol=1e-5)
    reference = np.asarray(x) @ (np.asarray(q.qvalue, np.float32) * np.asarray(q.scale))
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
    assert got.shape == rows + (24,) and got.dtype == x.dtype


def test_more_rows_go_to_qwix_unchanged():
    rng = np.random.default_rng(1)
    q, _ = _qarray(rng, 16, 8)
    x = jnp.asarray(rng.standard_normal((int8.VECTOR_ROWS + 1, 16)).astype(np.float32))
    dims = (((1,), (0,)), ((), ()))
    np.testing.assert_array_equal(int8.vector_dot_general(x, q, dims),
                                  qwix.dot_general(x, q, dims))


@pytest.mark.parametrize("length", [1, 6])
def test_a_scanned_model_quantizes_as_its_unrolled_twin(length):
    cfg = GPTConfig(vocab_size=64, block_size=16, num_layers=3, num_heads=2, d_model=32,
                    scan_layers=True)
    model = GPT(cfg)
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 64, (1, length)), jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), tokens))["params"]
    qmodel, qparams = int8.quantize(model, params)
    assert {f"block_{i}" for i in range(3)} <= set(qparams)
    got = qmodel.apply({"params": qparams}, tokens)
    want = model.apply({"params": params}, tokens)
    # Weight-only int8: logits within a few percent of the float model's spread.
    err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    assert err < 0.05, err
