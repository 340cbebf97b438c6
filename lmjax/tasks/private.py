"""DP-SGD as a training switch (`privacy.dp=True`): any classify or lm task, trained with
Poisson-sampled batches, per-example clipped gradients and Gaussian noise (lmjax/privacy/dp.py),
its budget epsilon logged at every evaluation (lmjax/privacy/accounting.py).

An "example" is one training image (classify) or one window start (lm): the unit whose presence
epsilon bounds. `privacy.target_epsilon` > 0 calibrates the noise multiplier before training so
that the whole run (train.num_steps) spends exactly that budget; training does not stop early.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from lmjax.data import batches
from lmjax.parallel.mesh import local_rows
from lmjax.privacy import accounting, dp
from lmjax.tasks.wrapper import TaskWrapper

SUPPORTED = ("classify", "lm")


class PrivateTask(TaskWrapper):
    def __init__(self, inner, cfg: ml_collections.ConfigDict, assets, log=print):
        super().__init__(inner)
        p, t = cfg.privacy, cfg.train
        self.clip_norm, self.delta = float(p.clip_norm), float(p.delta)
        self.sigma = float(p.noise_multiplier)
        self.expected = t.batch_size
        self.size = dp.padded_size(t.batch_size, t.grad_accum * jax.device_count())
        self.num_examples = self.rate = None
        if assets is not None:  # a saved run: only the optimizer's structure matters here
            return
        self.num_examples = self._count()
        if t.batch_size > self.num_examples:
            raise accounting.PrivacyError(
                f"train.batch_size={t.batch_size} is more than the {self.num_examples} training "
                "examples: DP-SGD samples each example with probability batch_size / examples.")
        self.rate = t.batch_size / self.num_examples
        if p.target_epsilon > 0:
            self.sigma = accounting.calibrate(p.target_epsilon, self.rate, t.num_steps,
                                              self.delta)
            log(f"DP-SGD: noise multiplier calibrated to {self.sigma:.4f} so that "
                f"{t.num_steps} steps spend at most epsilon={p.target_epsilon} at delta="
                f"{self.delta} (privacy.noise_multiplier={p.noise_multiplier} is ignored"
                + (f"; {accounting.MIN_SIGMA} is the least noise calibration gives)"
                   if self.sigma <= accounting.MIN_SIGMA else ")") + ".")
        final = accounting.epsilon(self.rate, self.sigma, t.num_steps, self.delta)
        log(f"DP-SGD: {self.num_examples} examples, sampling rate q={self.rate:.3g} (expected "
            f"batch {t.batch_size}, padded to {self.size}), clip {self.clip_norm}, noise "
            f"multiplier {self.sigma:.4f}: epsilon {final:.4g} at delta {self.delta} after "
            f"{t.num_steps} steps.")

    def _count(self) -> int:
        if self.cfg.task == "lm":
            return len(self.inner.data.train) - self.inner.seq_len - 1  # window starts
        return len(self.inner.data.train)

    def _fetch(self, ids: np.ndarray) -> dict:
        if self.cfg.task == "lm":
            return batches.windows(self.inner.data.train, ids, self.inner.seq_len)
        train = self.inner.data.train
        return {"inputs": train.inputs[ids], "labels": train.labels[ids],
                "ids": ids.astype(np.int32)}

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        ids, weights, drawn = dp.poisson_sample(self.cfg.seed, step, self.num_examples,
                                                self.rate, self.size)
        if drawn > self.size:
            self.log(f"DP-SGD: step {step} drew {drawn} examples, more than the padded batch "
                     f"{self.size}; kept {self.size}.")
        ids = local_rows(ids, process_index, process_count)
        weights = local_rows(weights, process_index, process_count)
        return {**self._fetch(ids), "dp_weights": weights}

    def value_and_grad(self):
        accum = self.cfg.train.grad_accum  # the step averages micro-batches: each is 1/accum
        return dp.clipped_value_and_grad(self.inner.loss, self.clip_norm,
                                         self.expected / accum)

    def wrap_optimizer(self, tx):
        # Noise on the gradient the whole step produced (after accumulation): std sigma * C on
        # the clipped sum, which the step already divided by the expected batch size.
        std = self.sigma * self.clip_norm / self.expected if self.sigma else 0.0  # 0 * inf
        noise = dp.add_gaussian_noise(std, self.cfg.seed)
        return optax.chain(noise, self.inner.wrap_optimizer(tx))

    def step_metrics(self, step: int) -> dict:
        """Logged beside every evaluation (lmjax/train/loop.py): the budget spent so far."""
        if self.rate is None:
            return {}
        return {"epsilon": accounting.epsilon(self.rate, self.sigma, int(step), self.delta)}


def wrap(task, cfg: ml_collections.ConfigDict, assets, log=print):
    if not cfg.get("privacy") or not cfg.privacy.dp:
        return task
    if cfg.task not in SUPPORTED:
        raise ValueError(f"privacy.dp=True supports task={' or '.join(SUPPORTED)}, not "
                         f"{cfg.task!r}.")
    return PrivateTask(task, cfg, assets, log)
