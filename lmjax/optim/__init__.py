"""Optimizers and learning-rate schedules."""

from lmjax.optim.optimizers import build_optimizer, decay_mask
from lmjax.optim.schedules import build_schedule, current_lr

__all__ = ['build_optimizer', 'build_schedule', 'current_lr', 'decay_mask']
