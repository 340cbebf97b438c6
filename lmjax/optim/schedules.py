"""Learning-rate schedules: linear warmup from 0, then cosine, linear or constant."""

from typing import Any

import jax
import ml_collections
import optax

SCHEDULES = ('cosine', 'linear', 'constant')


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    """Raise a ValueError naming the config field, its value and what is allowed."""
    if not ok:
        raise ValueError(f'optim.{field}={value!r} is not {allowed}')


def build_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Maps the number of updates already applied to the lr of the next one.

    schedule(0) = 0 (warmup starts from zero), schedule(warmup_steps) = peak, and for
    cosine/linear schedule(num_steps) = end_lr_ratio * peak, held there afterwards.
    """
    require(cfg.schedule in SCHEDULES, 'schedule', cfg.schedule, 'one of ' + ', '.join(SCHEDULES))
    require(cfg.learning_rate >= 0, 'learning_rate', cfg.learning_rate, '>= 0')
    require(cfg.end_lr_ratio >= 0, 'end_lr_ratio', cfg.end_lr_ratio, '>= 0')
    if num_steps < 1:
        raise ValueError(f'num_steps={num_steps} must be >= 1')
    require(0 <= cfg.warmup_steps <= num_steps, 'warmup_steps', cfg.warmup_steps,
            f'in [0, num_steps={num_steps}]')

    peak, warmup = float(cfg.learning_rate), int(cfg.warmup_steps)
    end = cfg.end_lr_ratio * peak
    # max(.., 1): when warmup fills the whole run the decay never matters, but optax
    # rejects a zero-length decay.
    decay_steps = max(num_steps - warmup, 1)
    if cfg.schedule == 'cosine':
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_ratio)
    elif cfg.schedule == 'linear':
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    warm = optax.linear_schedule(0.0, peak, warmup)
    return optax.join_schedules([warm, after], [warmup])


def current_lr(schedule: optax.Schedule, step: int | jax.Array) -> float:
    """The lr applied by the update taken at `step` (0-based), as a Python float for logs.

    The optimizer's own counter starts at 0 too, so this matches what was applied.
    """
    return float(schedule(step))
