"""int8 weights of a scanned model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.infer import int8
from lmjax.models.gpt import GPT, GPTConfig

qwix = pytest.importorskip("qwix")


@pytest.mark.slow
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
