"""Each optimizer against a hand-written NumPy (float64) version of its formula."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from lmjax.optim import build_optimizer, decay_mask

SHAPES = {
    'Dense_0/kernel': (3, 4), 'Dense_0/bias': (4,), 'LayerNorm_0/scale': (4,),
    'LayerNorm_0/bias': (4,), 'Embed_0/embedding': (5, 4),
}
DECAYED = {k: k == 'Dense_0/kernel' for k in SHAPES}  # written by hand, not decay_mask
PEAK, WARMUP, NUM_STEPS, RATIO = 0.1, 2, 5, 0.2


def ref_lr(t):
    """Linear warmup 0 -> PEAK over WARMUP steps, then linear to RATIO * PEAK at NUM_STEPS."""
    if t < WARMUP:
        return PEAK * t / WARMUP
    return PEAK + (RATIO * PEAK - PEAK) * (t - WARMUP) / (NUM_STEPS - WARMUP)


def make_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = dict(name='adamw', learning_rate=PEAK, schedule='linear', warmup_steps=WARMUP,
               end_lr_ratio=RATIO, b1=0.9, b2=0.95, eps=1e-8, momentum=0.0, rms_decay=0.9,
               weight_decay=0.0, clip_norm=0.0, l1=0.0, l2=0.0, muon_learning_rate=0.02)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def make_data(grad_scale=1.0):
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [{k: (grad_scale * rng.normal(size=s)).astype(np.float32) for k, s in SHAPES.items()}
             for _ in range(NUM_STEPS)]
    return params, grads


def run_optax(cfg, params, grads):
    tx = build_optimizer(cfg, NUM_STEPS)
    nest = lambda flat: traverse_util.unflatten_dict({tuple(k.split('/')): jnp.asarray(v)
                                                      for k, v in flat.items()})
    p = nest(params)
    state = jax.jit(tx.init)(p)
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update(nest(g), state, p)
        p = optax.apply_updates(p, u)
    return {'/'.join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(p).items()}


# ---- NumPy references. `pre(g, p)` preprocesses the raw gradient (clipping, penalties).

def identity(g, p):
    return g


def clip_ref(c):
    def pre(g, p):
        norm = np.sqrt(sum(np.sum(x.astype(np.float64) ** 2) for x in g.values()))
        return {k: x * min(1.0, c / norm) for k, x in g.items()}
    return pre


def penalty_ref(l1, l2, then=identity):
    def pre(g, p):
        g = then(g, p)
        return {k: g[k] + DECAYED[k] * (l2 * p[k] + l1 * np.sign(p[k])) for k in g}
    return pre


def ref_adam(params, grads, b1, b2, eps, wd, pre=identity):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        g = pre(g, p)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat, vhat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            p[k] = p[k] - ref_lr(t - 1) * (mhat / (np.sqrt(vhat) + eps) + DECAYED[k] * wd * p[k])
    return p


def ref_sgd(params, grads, mu, wd, pre=identity):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(grads, start=1):
        g = pre(g, p)
        for k in p:
            m[k] = mu * m[k] + (1 - mu) * g[k]
            mhat = m[k] / (1 - mu ** t)
            p[k] = p[k] - ref_lr(t - 1) * (mhat + DECAYED[k] * wd * p[k])
    return p


def ref_rmsprop(params, grads, rho, eps, mu, wd, pre=identity):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    m = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        g = pre(g, p)
        for k in p:
            v[k] = rho * v[k] + (1 - rho) * g[k] ** 2
            u = ref_lr(t - 1) * (g[k] / np.sqrt(v[k] + eps) + DECAYED[k] * wd * p[k])
            m[k] = mu * m[k] + u
            p[k] = p[k] - m[k]
    return p


def assert_close(got, want):
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_adamw_decays_kernel_only():
    params, grads = make_data()
    got = run_optax(make_cfg(name='adamw', weight_decay=0.1), params, grads)
    assert_close(got, ref_adam(params, grads, 0.9, 0.95, 1e-8, wd=0.1))
    # The decay must actually matter for the kernel, or the test proves nothing.
    plain = ref_adam(params, grads, 0.9, 0.95, 1e-8, wd=0.0)
    assert not np.allclose(got['Dense_0/kernel'], plain['Dense_0/kernel'], rtol=1e-4)


def test_adam():
    params, grads = make_data()
    got = run_optax(make_cfg(name='adam', b1=0.8, b2=0.99, eps=1e-6), params, grads)
    assert_close(got, ref_adam(params, grads, 0.8, 0.99, 1e-6, wd=0.0))


@pytest.mark.parametrize('mu, wd', [(0.0, 0.0), (0.9, 0.0), (0.9, 0.05)])
def test_sgd_bias_corrected_momentum(mu, wd):
    params, grads = make_data()
    got = run_optax(make_cfg(name='sgd', momentum=mu, weight_decay=wd), params, grads)
    assert_close(got, ref_sgd(params, grads, mu, wd))


@pytest.mark.parametrize('mu, wd', [(0.0, 0.0), (0.9, 0.0), (0.5, 0.05)])
def test_rmsprop(mu, wd):
    params, grads = make_data()
    got = run_optax(make_cfg(name='rmsprop', momentum=mu, rms_decay=0.8, eps=1e-6,
                             weight_decay=wd), params, grads)
    assert_close(got, ref_rmsprop(params, grads, 0.8, 1e-6, mu, wd))


def test_clipping_uses_global_norm():
    params, grads = make_data(grad_scale=2.0)
    norms = [np.sqrt(sum(np.sum(x ** 2) for x in g.values())) for g in grads]
    assert min(norms) > 1.0  # clipping is active on every step
    got = run_optax(make_cfg(name='sgd', clip_norm=1.0), params, grads)
    assert_close(got, ref_sgd(params, grads, 0.0, 0.0, pre=clip_ref(1.0)))


def test_clipping_inactive_below_threshold():
    params, grads = make_data(grad_scale=0.01)
    got = run_optax(make_cfg(name='sgd', clip_norm=100.0), params, grads)
    assert_close(got, ref_sgd(params, grads, 0.0, 0.0))


@pytest.mark.parametrize('l1, l2', [(0.05, 0.0), (0.0, 0.3), (0.05, 0.3)])
def test_l1_l2_penalties_are_masked(l1, l2):
    params, grads = make_data()
    got = run_optax(make_cfg(name='sgd', momentum=0.9, l1=l1, l2=l2), params, grads)
    assert_close(got, ref_sgd(params, grads, 0.9, 0.0, pre=penalty_ref(l1, l2)))


def test_full_chain_clip_then_penalties_then_adamw():
    params, grads = make_data(grad_scale=2.0)
    cfg = make_cfg(name='adamw', weight_decay=0.1, clip_norm=1.0, l1=0.01, l2=0.2)
    got = run_optax(cfg, params, grads)
    pre = penalty_ref(0.01, 0.2, then=clip_ref(1.0))
    assert_close(got, ref_adam(params, grads, 0.9, 0.95, 1e-8, wd=0.1, pre=pre))


@pytest.mark.parametrize('name', ['adamw', 'adam', 'sgd', 'rmsprop'])
def test_init_under_jit_matches_eager(name):
    cfg = make_cfg(name=name, momentum=0.9, clip_norm=1.0, l1=0.1, l2=0.1,
                   weight_decay=0.0 if name == 'adam' else 0.1)
    tx = build_optimizer(cfg, NUM_STEPS)
    params = {'Dense_0': {'kernel': jnp.ones((3, 4)), 'bias': jnp.zeros(4)}}
    chex.assert_trees_all_equal(jax.jit(tx.init)(params), tx.init(params))


def test_adam_with_weight_decay_points_to_adamw():
    with pytest.raises(ValueError, match=r"optim\.weight_decay=0\.1.*adamw"):
        build_optimizer(make_cfg(name='adam', weight_decay=0.1), NUM_STEPS)


@pytest.mark.parametrize('field, value, msg', [
    ('name', 'adamx', "optim.name='adamx' is not one of adamw, adam, sgd, rmsprop"),
    ('b1', 1.0, 'optim.b1=1.0 is not in [0, 1)'),
    ('b2', -0.1, 'optim.b2=-0.1 is not in [0, 1)'),
    ('momentum', 1.5, 'optim.momentum=1.5 is not in [0, 1)'),
    ('rms_decay', 1.0, 'optim.rms_decay=1.0 is not in [0, 1)'),
    ('clip_norm', -1.0, 'optim.clip_norm=-1.0'),
    ('schedule', 'step', "optim.schedule='step'"),
])
def test_validation_names_the_field(field, value, msg):
    with pytest.raises(ValueError) as err:
        build_optimizer(make_cfg(**{field: value}), NUM_STEPS)
    assert str(err.value).startswith(msg)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(10, 8)(ids)
        x = nn.LayerNorm()(nn.Dense(8)(x))
        x = nn.Conv(8, (3,))(x)
        sharded = nn.with_partitioning(nn.initializers.lecun_normal(), (None, 'model'))
        return nn.Dense(4, use_bias=False, kernel_init=sharded)(x)


def test_decay_mask_on_flax_tree():
    params = Tiny().init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))['params']
    mask = decay_mask(params)
    # The boxed kernel keeps its nn.Partitioned box around the mask value.
    flat = traverse_util.flatten_dict(nn.unbox(mask), sep='/')
    assert flat == {
        'Embed_0/embedding': False,
        'Dense_0/kernel': True, 'Dense_0/bias': False,
        'LayerNorm_0/scale': False, 'LayerNorm_0/bias': False,
        'Conv_0/kernel': True, 'Conv_0/bias': False,
        'Dense_1/kernel': True,
    }
    # optax.masked needs the mask to mirror the params tree, boxes included.
    assert jax.tree.structure(mask) == jax.tree.structure(params)
