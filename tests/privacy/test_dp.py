"""DP-SGD: clipping, equivalence with plain SGD, Poisson batches, noise, config refusals. (A
short training run and its logged epsilon: tests/privacy/test_membership.py.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.config import ConfigError
from lmjax.privacy import accounting, dp
from lmjax.tasks import add_switches, check, make_task


def linear_loss(params, model_state, batch, rng):
    pred = batch["x"] @ params["w"] + params["b"]
    return jnp.mean((pred - batch["y"]) ** 2), ({"mse": jnp.mean((pred - batch["y"]) ** 2)},
                                                model_state)


def test_each_clipped_gradient_is_within_the_clip_norm_and_the_sum_is_theirs():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(5, 1)), jnp.float32), "b": jnp.zeros(1)}
    scale = rng.uniform(0.01, 10, size=(16, 1))  # some gradients tiny, some far over the norm
    batch = {"x": jnp.asarray(rng.normal(size=(16, 5)) * scale, jnp.float32),
             "y": jnp.asarray(rng.normal(size=(16, 1)) * scale, jnp.float32)}
    clip = 1.0
    norms = dp.per_example_norms(linear_loss, params, {}, batch, jax.random.PRNGKey(0), clip)
    assert float(norms.max()) <= clip * (1 + 1e-5)
    # Reference: each example's own gradient, computed alone, clipped by hand.
    one = jax.jit(jax.grad(lambda p, x, y: linear_loss(p, {}, {"x": x, "y": y}, None)[0]))
    weights = np.ones(16, np.float32)
    weights[-3:] = 0  # padding rows count for nothing
    expected_masked = jax.tree.map(jnp.zeros_like, params)
    clipped = 0
    for i in range(16):
        g = one(params, batch["x"][i:i + 1], batch["y"][i:i + 1])
        n = float(optax.tree.norm(g))
        clipped += n > clip
        expected_masked = jax.tree.map(lambda e, x: e + x * weights[i] * min(1.0, clip / n),
                                       expected_masked, g)
    assert 0 < clipped < 16  # the test exercises both sides of the clip
    fn = jax.jit(dp.clipped_value_and_grad(linear_loss, clip, normalizer=8.0))
    (_, (aux, _)), grads = fn(params, {}, {**batch, "dp_weights": weights}, jax.random.PRNGKey(1))
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa
    jax.tree.map(lambda g, e: chex_close(g, e / 8.0), grads, expected_masked)
    assert float(aux["batch_size"]) == 13


@pytest.fixture
def dp_config(fashion_config):
    c = fashion_config
    c.model.norm = "group"
    c.data.update(crop_padding=0, flip=False)  # deterministic inputs: the loss has no rng use
    add_switches(c, "privacy").privacy.update(dp=True, noise_multiplier=1.0, clip_norm=1.0)
    c.log.tensorboard = False
    return c


@pytest.mark.slow
def test_zero_noise_and_infinite_clip_is_plain_sgd(dp_config):
    dp_config.privacy.update(noise_multiplier=0.0, clip_norm=math.inf)
    dp_config.model.update(channels=(4,), head_hidden=())  # a CNN with group norm, small
    dp_config.train.batch_size = 8
    task = make_task(dp_config)
    plain = task.inner
    variables = task.init_variables(jax.random.PRNGKey(0))
    params = variables.pop("params")
    batch = plain.train_batch(0)  # an ordinary batch of train.batch_size rows, all real
    n = len(batch["labels"])
    rng = jax.random.PRNGKey(3)
    (loss_p, _), g_plain = jax.jit(plain.value_and_grad())(params, variables, batch, rng)
    (loss_d, _), g_dp = jax.jit(task.value_and_grad())(params, variables,
                                              {**batch, "dp_weights": np.ones(n, np.float32)}, rng)
    np.testing.assert_allclose(loss_d, loss_p, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_dp,
                 g_plain)
    # One SGD step through the DP optimizer (noise std 0) moves the weights as plain SGD does.
    tx_dp, tx = task.wrap_optimizer(optax.sgd(0.1)), optax.sgd(0.1)
    u_dp, _ = tx_dp.update(g_dp, tx_dp.init(params), params)
    u, _ = tx.update(g_plain, tx.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), u_dp, u)


def test_poisson_batches_are_a_pure_function_of_seed_and_step():
    a = dp.poisson_sample(7, 3, 1000, 0.05, 80)
    b = dp.poisson_sample(7, 3, 1000, 0.05, 80)
    c = dp.poisson_sample(7, 4, 1000, 0.05, 80)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    sizes = []
    for step in range(2000):
        ids, weights, drawn = dp.poisson_sample(0, step, 1000, 0.05, 80)
        real = ids[weights > 0]
        assert len(real) == min(drawn, 80) == len(set(real.tolist()))
        assert real.max() < 1000 and (ids[weights == 0] == 0).all()
        sizes.append(drawn)
    # Binomial(1000, 0.05): mean 50, variance 47.5; the mean of 2000 draws is within 0.5.
    assert abs(np.mean(sizes) - 50) < 0.5 and abs(np.var(sizes) - 47.5) < 6
    ids, weights, drawn = dp.poisson_sample(0, 0, 1000, 0.5, 80)  # far over the pad: truncated
    assert drawn > 80 and weights.sum() == 80
    assert dp.padded_size(512, 8) % 8 == 0 and dp.padded_size(512) >= 512 + 5 * math.sqrt(512)


def test_noise_has_the_asked_std_and_repeats_on_resume():
    tx = dp.add_gaussian_noise(0.3, seed=5)
    zeros = {"w": jnp.zeros((200, 500))}
    state = tx.init(zeros)
    n1, state1 = tx.update(zeros, state)
    n2, _ = tx.update(zeros, state1)
    again, _ = tx.update(zeros, tx.init(zeros))  # a resumed run restores the count: same draw
    assert abs(float(n1["w"].std()) - 0.3) < 0.003 and abs(float(n1["w"].mean())) < 0.003
    np.testing.assert_array_equal(n1["w"], again["w"])
    assert not np.allclose(n1["w"], n2["w"])


def test_config_refuses_batch_norm_and_bad_privacy_values(dp_config):
    dp_config.model.norm = "batch"
    with pytest.raises(ConfigError, match="batch norm"):
        check(dp_config)
    dp_config.model.norm = "group"
    for field, value in (("clip_norm", 0.0), ("delta", 1.5), ("target_epsilon", -1.0)):
        bad = dp_config.copy_and_resolve_references()
        bad.privacy[field] = value
        with pytest.raises(ConfigError, match=f"privacy.{field}"):
            check(bad)
    check(dp_config)


def test_unreachable_target_epsilon_is_refused_with_a_message(dp_config):
    dp_config.privacy.target_epsilon = 1e-3  # 500 examples, batch 32: q = 0.064
    with pytest.raises(accounting.PrivacyError, match="cannot be reached"):
        make_task(dp_config)
