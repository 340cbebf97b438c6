"""Adversarial training (`robust.attack=fgsm_rs|pgd`): every training batch is replaced by its
adversarial version before the loss, as in Madry et al. (2018, PGD) and Wong et al. (2020,
"Fast is better than free": FGSM from a random start, about twice the cost of a plain step).

The attack runs on the augmented batch, against the current parameters in training mode (batch
statistics of the batch, as PyTorch's `model.train()` in the papers' code); its batch-norm
updates are thrown away, the model's loss on the adversarial images is what trains. Evaluation
is unchanged (clean); `lmjax robustness` measures robust accuracy (docs/robustness.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from lmjax.config import require
from lmjax.robust import attacks
from lmjax.tasks.base import IMAGES
from lmjax.tasks.classification import classification_loss
from lmjax.tasks.wrapper import TaskWrapper

SECTION = "robust"
STATE_DEFINING = {}  # the same model and optimizer, trained on attacked batches


def section() -> ml_collections.ConfigDict:
    r = ml_collections.ConfigDict()
    r.attack = ""                  # '' (none) | 'fgsm_rs' | 'pgd'
    r.eps = 0.1                    # L-infinity radius, inputs in [0, 1]
    r.step_size = 0.0              # 0: the attack's usual default for eps
    r.steps = 7                    # PGD iterations
    return r


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return bool(cfg.robust.attack)


def check(cfg: ml_collections.ConfigDict) -> None:
    r = cfg.robust
    require(r.attack in ("", "fgsm_rs", "pgd"),
            f"robust.attack={r.attack!r}: use '' (off), 'fgsm_rs' or 'pgd'.")
    if not r.attack:
        return
    require(cfg.task == "classify", f"robust.attack={r.attack!r} trains image classifiers "
            f"(task='classify'), not task={cfg.task!r}.")
    require(0.0 < r.eps <= 1.0, f"robust.eps={r.eps}: an L-infinity radius for pixels in "
            "[0, 1] must be in (0, 1] (0.1 is about 25 grey levels).")
    require(r.step_size >= 0.0, f"robust.step_size={r.step_size}: 0 (the attack's default) or "
            "positive.")
    require(r.steps >= 1, f"robust.steps={r.steps}: at least 1 PGD iteration.")
    require(cfg.get("ensemble", {}).get("members", 1) <= 1,
            "robust.attack with ensemble.members > 1 is not supported: train the members "
            "adversarially as separate runs.")


def image_pixels(task, x: jax.Array) -> jax.Array:
    """A batch of the task's images as floats in [0, 1]."""
    if task.example["dtype"] == "uint8":
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def check_image_task(task, what: str) -> None:
    """Attacks need an image classifier."""
    if IMAGES not in task.capabilities:
        raise ValueError(f"{what} needs an image classifier (task=classify on images, e.g. "
                         "configs/fashion_mnist.py); this run's examples are not images.")


class AdversarialTask(TaskWrapper):
    def __init__(self, inner, robust):
        super().__init__(inner)
        check_image_task(inner, f"robust.attack={robust.attack!r}")
        self.attack_name, self.eps = robust.attack, attacks.check_eps(robust.eps, "robust.eps")
        self.steps, self.step_size = robust.steps, robust.step_size

    def logits_fn(self, params, model_state, rng=None):
        """The model as a function of images in [0, 1] (training mode when rng is given)."""
        inner = self.inner

        def apply(x):
            out, _ = inner._apply(params, model_state, x, rng)
            return out

        return attacks.pixel_model(apply, inner.example["dtype"])

    def loss(self, params, model_state, batch, rng):
        inner = self.inner
        x = image_pixels(inner, inner._augment(batch, rng))
        attack_rng = jax.random.fold_in(rng, 7)
        frozen = jax.lax.stop_gradient(params)
        x_adv = attacks.attack(self.attack_name, self.logits_fn(frozen, model_state, rng), x,
                               batch["labels"], self.eps, attack_rng, steps=self.steps,
                               step_size=self.step_size)
        x_adv = jax.lax.stop_gradient(x_adv)
        # Train on the adversarial pixels through the model's own scaling.
        new_state = {}

        def apply(x01):
            nonlocal new_state
            logits, new_state = inner._apply(params, model_state, x01, rng)
            return logits

        logits = attacks.pixel_model(apply, inner.example["dtype"])(x_adv)
        loss, accuracy = classification_loss(logits, batch["labels"], inner.weights,
                                             inner.cfg.train.get("label_smoothing", 0.0))
        return loss, ({"accuracy": accuracy}, new_state)

    def describe(self) -> str:
        return (f"{self.inner.describe()}; adversarial training: {self.attack_name} at "
                f"eps={self.eps}")


def wrap(task, cfg, assets=None, log=print, mesh=None):
    return AdversarialTask(task, cfg.robust)
