"""The chunked output layer + loss computes the same function as the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.tasks import make_task


@pytest.mark.slow
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_chunked_loss_and_gradients_equal_the_plain_ones(tiny_config, dtype, tol):
    tiny_config.model.dtype = dtype
    plain = make_task(tiny_config, log=lambda s: None)
    tiny_config.train.loss_chunk = 8  # 4 chunks of the 32-token context
    chunked = make_task(tiny_config, log=lambda s: None)
    params = plain.init_variables(jax.random.PRNGKey(0))["params"]
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                          is_leaf=lambda x: hasattr(x, "value"))
    batch = plain.train_batch(0)
    rng = jax.random.PRNGKey(1)

    def value_and_grad(task):
        fn = jax.jit(jax.value_and_grad(lambda p: task.loss(p, {}, batch, rng)[0]))
        return fn(params)

    (a, ga), (b, gb) = value_and_grad(plain), value_and_grad(chunked)
    assert abs(float(a) - float(b)) <= tol * abs(float(a))
    flat_a, flat_b = jax.tree.leaves(ga), jax.tree.leaves(gb)
    for x, y in zip(flat_a, flat_b):
        scale = float(jnp.abs(x).max()) + 1e-12
        assert float(jnp.abs(x - y).max()) <= 10 * tol * scale


def test_a_chunk_must_divide_the_context(tiny_config):
    tiny_config.train.loss_chunk = 5
    with pytest.raises(ValueError, match="train.loss_chunk=5.*divisor of model.block_size=32"):
        make_task(tiny_config, log=lambda s: None)


def test_the_chunked_pieces_cover_every_position_once(tiny_config):
    from lmjax.tasks.lm import chunked_losses

    hidden = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 4))
    targets = jnp.asarray(np.arange(24).reshape(2, 12) % 5)
    table = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    losses = chunked_losses(hidden, targets, lambda h: h @ table.T, 3)
    logits = hidden @ table.T
    reference = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
        logits, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses, reference, rtol=1e-6, atol=1e-6)
