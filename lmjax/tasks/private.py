"""DP-SGD as a training switch (`privacy.dp=True`): any classify or lm task, trained with
Poisson-sampled batches, per-example clipped gradients and Gaussian noise (lmjax/privacy/dp.py),
its budget epsilon logged at every evaluation (lmjax/privacy/accounting.py).

An "example" is one training image (classify) or one window start (lm): the unit whose presence
epsilon bounds. `privacy.target_epsilon` > 0 calibrates the noise multiplier before training so
that the whole run (train.num_steps) spends exactly that budget; training does not stop early.

The `privacy` section is also what DP-FedAvg reads in a federated run (lmjax/tasks/federated.py):
there a client is the unit of privacy, its whole update clipped to `clip_norm`.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from lmjax.config import require
from lmjax.parallel.mesh import local_rows
from lmjax.privacy import accounting, dp
from lmjax.tasks.wrapper import TaskWrapper

SECTION = "privacy"
SUPPORTED = ("classify", "lm")  # tasks whose examples DP-SGD samples one by one
STATE_DEFINING = {}  # DP changes how the state is updated, not what it holds


def section() -> ml_collections.ConfigDict:
    p = ml_collections.ConfigDict()
    p.dp = False                   # DP-SGD: per-example clipping + Gaussian noise + Poisson
    #                                sampling (in a federated run: DP-FedAvg, per client)
    p.clip_norm = 1.0              # each example's gradient (client's update) clipped to this
    p.noise_multiplier = 1.0       # noise std = noise_multiplier * clip_norm
    p.delta = 1e-5
    p.target_epsilon = 0.0         # > 0: calibrate the noise to spend this budget
    return p


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    """DP-SGD; in a federated run the federated switch applies the privacy section itself."""
    return bool(cfg.privacy.dp) and "federated" not in cfg


def check(cfg: ml_collections.ConfigDict) -> None:
    p = cfg.privacy
    if not p.dp:
        return
    require(p.clip_norm > 0, f"privacy.clip_norm={p.clip_norm}: must be > 0 (inf: no clipping).")
    require(p.noise_multiplier >= 0, f"privacy.noise_multiplier={p.noise_multiplier}: must "
            "be >= 0.")
    require(0 < p.delta < 1, f"privacy.delta={p.delta}: must be in (0, 1), well below "
            "1 / (training examples).")
    require(p.target_epsilon >= 0, f"privacy.target_epsilon={p.target_epsilon}: must be >= 0 "
            "(0: use privacy.noise_multiplier as given).")
    if "federated" in cfg:
        return
    require(cfg.task in SUPPORTED, f"privacy.dp=True supports task={' or '.join(SUPPORTED)}, "
            f"not {cfg.task!r}.")
    require(cfg.model.get("norm", "batch") != "batch" or cfg.model.get("name") != "cnn",
            "privacy.dp=True with batch norm: batch statistics mix examples, so no example's "
            "gradient is its own and the privacy guarantee fails. Set --config.model.norm=group "
            "(or none), or use the fashion_mnist.py:dp preset.")


class PrivateTask(TaskWrapper):
    def __init__(self, inner, cfg: ml_collections.ConfigDict, assets, log=print):
        super().__init__(inner)
        p, t = cfg.privacy, cfg.train
        self.clip_norm, self.delta = float(p.clip_norm), float(p.delta)
        self.sigma = float(p.noise_multiplier)
        self.expected = t.batch_size
        self.size = dp.padded_size(t.batch_size, t.grad_accum * jax.device_count())
        self.count = self.rate = None
        if assets is not None:  # a saved run: only the optimizer's structure matters here
            return
        self.count = inner.num_examples("train")
        if t.batch_size > self.count:
            raise accounting.PrivacyError(
                f"train.batch_size={t.batch_size} is more than the {self.count} training "
                "examples: DP-SGD samples each example with probability batch_size / examples.")
        self.rate = t.batch_size / self.count
        if p.target_epsilon > 0:
            self.sigma = accounting.calibrate(p.target_epsilon, self.rate, t.num_steps,
                                              self.delta)
            log(f"DP-SGD: noise multiplier calibrated to {self.sigma:.4f} so that "
                f"{t.num_steps} steps spend at most epsilon={p.target_epsilon} at delta="
                f"{self.delta} (privacy.noise_multiplier={p.noise_multiplier} is ignored"
                + (f"; {accounting.MIN_SIGMA} is the least noise calibration gives)"
                   if self.sigma <= accounting.MIN_SIGMA else ")") + ".")
        final = accounting.epsilon(self.rate, self.sigma, t.num_steps, self.delta)
        log(f"DP-SGD: {self.count} examples, sampling rate q={self.rate:.3g} (expected "
            f"batch {t.batch_size}, padded to {self.size}), clip {self.clip_norm}, noise "
            f"multiplier {self.sigma:.4f}: epsilon {final:.4g} at delta {self.delta} after "
            f"{t.num_steps} steps.")

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        ids, weights, drawn = dp.poisson_sample(self.cfg.seed, step, self.count,
                                                self.rate, self.size)
        if drawn > self.size:
            self.log(f"DP-SGD: step {step} drew {drawn} examples, more than the padded batch "
                     f"{self.size}; kept {self.size}.")
        ids = local_rows(ids, process_index, process_count)
        weights = local_rows(weights, process_index, process_count)
        return {**self.inner.examples("train", ids), "dp_weights": weights}

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

    def extra_metrics(self, step: int) -> dict:
        """Logged beside every evaluation: the budget spent so far."""
        out = self.inner.extra_metrics(step)
        if self.rate is not None:
            out["epsilon"] = accounting.epsilon(self.rate, self.sigma, int(step), self.delta)
        return out


def wrap(task, cfg: ml_collections.ConfigDict, assets=None, log=print, mesh=None):
    return PrivateTask(task, cfg, assets, log)
