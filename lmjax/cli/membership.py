"""A loss-threshold membership-inference attack on a trained classifier: how well the
per-example loss tells the training examples (members) from test examples (non-members).

    lmjax membership --workdir=runs/dp-eps3
    lmjax membership --workdir=runs/cnn --examples=5000 --best

Prints the attack's ROC AUC (0.5 = chance; scikit-learn) and advantage (max TPR - FPR) over
--examples training vs --examples test examples; with --out, writes them as JSON. A DP-SGD run
(privacy.dp=True) should score close to 0.5. How: lmjax/privacy/membership.py.
"""

from __future__ import annotations

import dataclasses
import json

import jax
from absl import flags

from lmjax import rundir
from lmjax.cli.common import require
from lmjax.privacy import membership
from lmjax.tasks.base import CLASSES, padded_batches
from lmjax.train.restore import load_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained classification run to attack.")
_EXAMPLES = flags.DEFINE_integer("examples", 5000, "Members and non-members each (0: all).")
_BEST = flags.DEFINE_bool("best", False, "Attack the best checkpoint (default: the latest, the "
                          "model the privacy budget was spent on).")
_BATCH = flags.DEFINE_integer("batch_size", 500, "Evaluation batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Which examples are drawn.")
_OUT = flags.DEFINE_string("out", "", "Also write the result to this JSON file.")


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained run to attack.")
    require(_EXAMPLES.value >= 0 and _BATCH.value > 0,
            "--examples must be >= 0 and --batch_size > 0.")
    s, state = load_setup(workdir, best=_BEST.value and rundir.has_best(workdir))
    task = s.task
    require(CLASSES in task.capabilities and "test" in task.splits,
            f"{workdir} is a {s.cfg.task!r} run: the membership attack needs a classifier with a "
            "test split (task=classify, e.g. configs/fashion_mnist.py).")

    @jax.jit
    def losses(params, model_state, batch):
        probs = task.eval_outputs(params, model_state, batch)["examples"]["probs"]
        return -jax.numpy.log(jax.numpy.take_along_axis(
            probs, batch["labels"][:, None], axis=1)[:, 0] + 1e-12)

    def split_losses(split):
        ids = membership.choose(task.num_examples(split), _EXAMPLES.value, _SEED.value)
        fetch = lambda i: task.examples(split, ids[i])  # noqa: E731
        return membership.batched_losses(lambda b: losses(state.params, state.model_state, b),
                                         padded_batches(len(ids), _BATCH.value, fetch))

    members, others = split_losses("train"), split_losses("test")
    result = membership.attack(members, others)
    private = "privacy" in s.cfg and s.cfg.privacy.dp
    print(f"{workdir} (step {int(state.step)}{', DP-SGD' if private else ''}): loss-threshold "
          f"membership attack on {result.members} training vs {result.non_members} test "
          f"examples: AUC {result.auc:.4f}, advantage {result.advantage:.4f} (mean loss "
          f"{result.member_loss:.4f} members, {result.non_member_loss:.4f} non-members)")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"workdir": workdir, "step": int(state.step), "dp": bool(private),
                       **dataclasses.asdict(result)}, f, indent=1)
