"""Baselines: batch-norm statistics are trained in training mode and used in evaluation."""

import jax
import pytest
import jax.numpy as jnp
import numpy as np

from lmjax.models.baselines import CNN, MLP


@pytest.mark.slow
def test_batch_norm_updates_statistics_in_training_and_uses_them_in_evaluation():
    model = CNN(num_outputs=10, channels=(4, 8), convs_per_block=1)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (8, 28, 28, 1)), jnp.uint8)
    variables = model.init(jax.random.PRNGKey(0), x)
    stats = variables["batch_stats"]
    assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves(stats["BatchNorm_0"]["mean"]))
    out, updated = model.apply(variables, x, deterministic=False, mutable=["batch_stats"])
    first = updated["batch_stats"]["BatchNorm_0"]
    # The running mean moved 10% of the way towards the batch mean of the first layer's output.
    conv = jax.lax.conv_general_dilated(
        (x.astype(jnp.float32) / 255 - 0.29) / 0.35, variables["params"]["Conv_0"]["kernel"],
        (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(first["mean"], 0.1 * conv.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    # Evaluation mode reads the stored statistics: it depends on them, not on the batch.
    new_vars = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
    a = model.apply(new_vars, x, deterministic=True)
    b = model.apply(new_vars, x[:1], deterministic=True)
    np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-5)
    c = model.apply(variables, x, deterministic=True)
    assert not np.allclose(a, c)


def test_mlp_flattens_images_and_tables():
    model = MLP(num_outputs=3, hidden=(5,))
    for x in (jnp.zeros((2, 28, 28, 1), jnp.uint8), jnp.zeros((2, 7), jnp.float32)):
        params = model.init(jax.random.PRNGKey(0), x)
        assert model.apply(params, x).shape == (2, 3)
