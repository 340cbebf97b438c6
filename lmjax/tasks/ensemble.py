"""Deep ensembles (`ensemble.members=M`): M copies of the model trained at once, vmapped in one
step, each from its own seed; evaluation averages their probabilities (Lakshminarayanan et al.
2017).

Every parameter, batch statistic and optimizer moment gets a leading member axis (logical name
None: replicated over the mesh like the small models this is for; a member's own arrays keep
their names after it). Member 0 uses the run's own key and members i > 0 `fold_in(key, i)`, for
the initialisation and for dropout and augmentation, so member 0 is the model that the same
config without the ensemble trains; all members see the same batches. The optimizer is vmapped
too, so global-norm clipping and the step counters are per member: the members are M
independent runs that share the data pipeline and one compiled step (the same compute).

Evaluation reports the ensemble's metrics under the usual names and each member's as
`member<i>_<metric>` (accuracy, log_loss, ece, brier), from the stacked parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax.config import require
from lmjax.eval import calibration
from lmjax.tasks.base import CLASSES
from lmjax.tasks.wrapper import TaskWrapper

MEMBER_METRICS = ("accuracy", "log_loss", "ece", "brier")
SECTION = "ensemble"
STATE_DEFINING = {"ensemble.members": 1}  # a leading member axis on every array


def section() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.members = 1                  # > 1: this many members, vmapped in one step
    return e


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return cfg.ensemble.members > 1


def check(cfg: ml_collections.ConfigDict) -> None:
    m = cfg.ensemble.members
    require(isinstance(m, int) and m >= 1, f"ensemble.members={m!r}: a positive integer "
            "(1: no ensemble).")
    require(m == 1 or cfg.task == "classify", f"ensemble.members={m} ensembles classifiers "
            f"(task='classify'), not task={cfg.task!r}.")


def member_keys(rng: jax.Array, members: int) -> jax.Array:
    """Member 0: `rng` itself (the run without the ensemble); member i: fold_in(rng, i)."""
    return jnp.stack([rng] + [jax.random.fold_in(rng, i) for i in range(1, members)])


def _add_member_axis(tree):
    is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    return jax.tree.map(lambda x: x.add_axis(0, {nn.PARTITION_NAME: None}) if is_box(x) else x,
                        tree, is_leaf=is_box)


def vmapped_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` run independently for each member (leading axis of params, grads and state)."""

    def init(params):
        # optax.tree_map_params (train/state.py) calls init on a placeholder, not arrays, to
        # find which state leaves mirror the params: the unvmapped structure is the same.
        leaves = jax.tree.leaves(params)
        if not leaves or not all(hasattr(leaf, "shape") for leaf in leaves):
            return tx.init(params)
        return jax.vmap(tx.init)(params)

    def update(grads, state, params=None):
        return jax.vmap(tx.update)(grads, state, params)

    return optax.GradientTransformation(init, update)


class EnsembleTask(TaskWrapper):
    members = None  # set per instance (the base class reads the inner task's)

    def __init__(self, inner, members: int):
        super().__init__(inner)
        if CLASSES not in inner.capabilities:
            raise ValueError(f"ensemble.members={members} ensembles classifiers (task=classify); "
                             "this task has no classes.")
        self.members = members

    def init_variables(self, rng: jax.Array) -> dict:
        variables = jax.vmap(self.inner.init_variables)(member_keys(rng, self.members))
        return _add_member_axis(variables)

    def value_and_grad(self):
        inner = jax.vmap(self.inner.value_and_grad(), in_axes=(0, 0, None, 0))

        def value_and_grad(params, model_state, batch, rng):
            (loss, (aux, model_state)), grads = inner(params, model_state, batch,
                                                      member_keys(rng, self.members))
            # Each member's gradient is its own loss's; the logged loss is their mean.
            return (loss.mean(), (jax.tree.map(jnp.mean, aux), model_state)), grads

        return value_and_grad

    def loss(self, params, model_state, batch, rng):
        losses, (aux, model_state) = jax.vmap(self.inner.loss, in_axes=(0, 0, None, 0))(
            params, model_state, batch, member_keys(rng, self.members))
        return losses.mean(), (jax.tree.map(jnp.mean, aux), model_state)

    def wrap_optimizer(self, tx):
        return vmapped_optimizer(self.inner.wrap_optimizer(tx))

    def eval_outputs(self, params, model_state, batch: dict) -> dict:
        out = jax.vmap(self.inner.eval_outputs, in_axes=(0, 0, None))(params, model_state, batch)
        member_probs = out["examples"]["probs"]  # [M, B, C]
        probs = member_probs.mean(0)
        labels, weights = batch["labels"], batch["weights"]
        nll = -jnp.log(jnp.clip(jnp.take_along_axis(probs, labels[:, None], 1)[:, 0], 1e-15))
        sums = {"loss": (nll * weights).sum(), "count": weights.sum()}
        sums.update({f"member{i}_loss": out["sums"]["loss"][i] for i in range(self.members)})
        return {"sums": sums, "examples": {"probs": probs, "labels": labels,
                                           "member_probs": jnp.swapaxes(member_probs, 0, 1)}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        sums, examples = dict(sums), dict(examples)
        member_probs = np.asarray(examples.pop("member_probs"))  # [N, M, C]
        for i in range(self.members):
            sums.pop(f"member{i}_loss")
        out = self.inner.summarize(sums, examples)
        labels = np.asarray(examples["labels"])
        per_member = [calibration.calibration_report(member_probs[:, i], labels)
                      for i in range(self.members)]
        for i, m in enumerate(per_member):
            out.update({f"member{i}_accuracy": m["accuracy"], f"member{i}_log_loss": m["nll"],
                        f"member{i}_ece": m["ece"], f"member{i}_brier": m["brier"]})
        for key, name in (("accuracy", "accuracy"), ("nll", "log_loss"), ("ece", "ece"),
                          ("brier", "brier")):
            out[f"members_mean_{name}"] = float(np.mean([m[key] for m in per_member]))
        out["members_best_accuracy"] = max(m["accuracy"] for m in per_member)
        out["members_best_log_loss"] = min(m["nll"] for m in per_member)
        return out

    def describe(self) -> str:
        return f"{self.inner.describe()}; an ensemble of {self.members} members, vmapped"


def wrap(task, cfg, assets=None, log=print, mesh=None):
    return EnsembleTask(task, cfg.ensemble.members)
