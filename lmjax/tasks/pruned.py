"""Gradual magnitude pruning as a training switch (`prune.target_sparsity` > 0).

The masks live in the optimizer's state (lmjax/optim/prune.py: Zhu & Gupta's cubic schedule as an
optax transform chained after every other optimizer change), so checkpoints keep them and a
resumed run prunes on exactly as before. A state from before the schedule ends is less sparse
than the run promises: such states never count as the best checkpoint (early stopping keeps
the best of the states at the target sparsity).
"""

from __future__ import annotations

import jax
import ml_collections

from lmjax.config import require
from lmjax.optim import prune
from lmjax.tasks.wrapper import TaskWrapper

SECTION = "prune"
STATE_DEFINING = {"prune.target_sparsity": 0.0}  # the masks in the optimizer state


def section() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    p.target_sparsity = 0.0        # share of weights set to zero by end_step; 0: no pruning
    p.start_step = 0
    p.end_step = -1                # -1: 3/4 of train.num_steps
    p.every = 100                  # steps between mask updates
    p.scope = "layer"              # 'layer' | 'global' magnitude selection
    p.keep_ends = True             # never prune the first convolution and the classifier
    return p


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return cfg.prune.target_sparsity > 0


def check(cfg: ml_collections.ConfigDict) -> None:
    p = cfg.prune
    require(0.0 <= p.target_sparsity < 1.0, f"prune.target_sparsity={p.target_sparsity}: the "
            "share of weights pruned, in [0, 1) (0: no pruning).")
    require(p.scope in ("layer", "global"),
            f"prune.scope={p.scope!r}: use 'layer' or 'global'.")
    require(p.every > 0, f"prune.every={p.every}: steps between mask updates, must be positive.")
    require(p.start_step >= 0, f"prune.start_step={p.start_step}: must be >= 0.")
    require(p.end_step == -1 or p.end_step >= p.start_step,
            f"prune.end_step={p.end_step}: must be >= prune.start_step={p.start_step} "
            "(or -1: 3/4 of train.num_steps).")


class PrunedTask(TaskWrapper):
    def __init__(self, inner, cfg: ml_collections.ConfigDict):
        super().__init__(inner)
        self.section, self.num_steps = cfg.prune, cfg.train.num_steps
        # The mask update at the 0-based update `end` applies the target sparsity: from the
        # state after it (step end + 1) on, the weights are as sparse as promised.
        self.full_from = prune.resolve_end(self.section, self.num_steps) + 1

    def wrap_optimizer(self, tx):
        return prune.wrap(self.inner.wrap_optimizer(tx), self.section, self.num_steps)

    def may_be_best(self, step: int) -> bool:
        return step >= self.full_from and self.inner.may_be_best(step)

    def end_of_training(self, params, model_state) -> tuple[dict, list[str]]:
        """The sparsity counted in the final weights themselves, reported with the run."""
        metrics, texts = self.inner.end_of_training(params, model_state)
        report = prune.sparsity_report(jax.device_get(params), self.section.keep_ends)
        return ({**metrics, "prunable_sparsity": report["prunable_sparsity"]},
                [prune.describe(report)] + texts)

    def describe(self) -> str:
        return (f"{self.inner.describe()}; magnitude pruning to "
                f"{self.section.target_sparsity:.0%} ({self.section.scope}) by step "
                f"{self.full_from - 1}")


def wrap(task, cfg, assets=None, log=print, mesh=None):
    return PrunedTask(task, cfg)
