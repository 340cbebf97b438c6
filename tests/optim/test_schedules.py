import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.optim import build_schedule, current_lr

PEAK, WARMUP, STEPS, RATIO = 3e-3, 10, 100, 0.1


def make_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = dict(learning_rate=PEAK, schedule='cosine', warmup_steps=WARMUP, end_lr_ratio=RATIO)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def values(schedule, steps):
    return np.array([current_lr(schedule, s) for s in steps])


@pytest.mark.parametrize('name', ['cosine', 'linear', 'constant'])
def test_warmup_is_linear_from_zero_to_peak(name):
    sched = build_schedule(make_cfg(schedule=name), STEPS)
    steps = np.arange(WARMUP + 1)
    np.testing.assert_allclose(values(sched, steps), PEAK * steps / WARMUP, rtol=1e-6, atol=1e-12)


def test_cosine_mid_and_end():
    sched = build_schedule(make_cfg(), STEPS)
    end = RATIO * PEAK
    for t in (37, 55, 90):
        frac = (t - WARMUP) / (STEPS - WARMUP)
        want = end + (PEAK - end) * 0.5 * (1 + math.cos(math.pi * frac))
        assert current_lr(sched, t) == pytest.approx(want, rel=1e-6)
    assert current_lr(sched, STEPS) == pytest.approx(end, rel=1e-6)
    assert current_lr(sched, STEPS + 50) == pytest.approx(end, rel=1e-6)


def test_linear_decay():
    sched = build_schedule(make_cfg(schedule='linear'), STEPS)
    steps = np.arange(WARMUP, STEPS + 1)
    want = PEAK + (RATIO * PEAK - PEAK) * (steps - WARMUP) / (STEPS - WARMUP)
    np.testing.assert_allclose(values(sched, steps), want, rtol=1e-5)
    assert current_lr(sched, STEPS + 7) == pytest.approx(RATIO * PEAK, rel=1e-6)


def test_constant_after_warmup():
    sched = build_schedule(make_cfg(schedule='constant'), STEPS)
    np.testing.assert_allclose(values(sched, [WARMUP, 50, STEPS, 2 * STEPS]), PEAK, rtol=1e-6)


def test_no_warmup_starts_at_peak():
    sched = build_schedule(make_cfg(warmup_steps=0), STEPS)
    assert current_lr(sched, 0) == pytest.approx(PEAK, rel=1e-6)
    assert current_lr(sched, STEPS) == pytest.approx(RATIO * PEAK, rel=1e-6)


def test_schedule_is_jittable_and_pure():
    sched = build_schedule(make_cfg(), STEPS)
    jitted = jax.jit(sched)
    for t in (0, 5, 55, STEPS):
        assert float(jitted(jnp.int32(t))) == pytest.approx(current_lr(sched, t), rel=1e-6)
        assert current_lr(sched, t) == current_lr(sched, t)


@pytest.mark.parametrize('field, value, msg', [
    ('schedule', 'cosin', "optim.schedule='cosin' is not one of cosine, linear, constant"),
    ('learning_rate', -1.0, 'optim.learning_rate=-1.0'),
    ('warmup_steps', STEPS + 1, f'optim.warmup_steps={STEPS + 1}'),
    ('warmup_steps', -1, 'optim.warmup_steps=-1'),
    ('end_lr_ratio', -0.5, 'optim.end_lr_ratio=-0.5'),
])
def test_validation_names_the_field(field, value, msg):
    with pytest.raises(ValueError, match='^' + re.escape(msg)):
        build_schedule(make_cfg(**{field: value}), STEPS)
