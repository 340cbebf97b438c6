"""Accuracy of an image-classifier run under L-infinity attacks (FGSM, PGD), one row per eps.

    lmjax robustness --workdir=runs/fashion_mnist --eps=0.05,0.1,0.15 --attack=pgd --steps=20
    lmjax robustness --workdir=runs/fashion_mnist --eps=0.1 --steps=100 --restarts=5

Images are attacked as pixels in [0, 1] (the model's own scaling is folded in); PGD starts from
a random point in the eps-ball, takes --steps signed-gradient steps of --step_size (default
2.5 eps / steps) and keeps, per image, the strongest of --restarts runs. Attacks the run's best
checkpoint on --examples images of --split (spread evenly over it). --out writes the rows as
JSON, --plot a PNG of robust accuracy against eps. How: lmjax/robust/, docs/robustness.md.
"""

from __future__ import annotations

import json

import jax
from absl import flags

from lmjax import rundir
from lmjax.cli.common import fail, require
from lmjax.robust.accuracy import format_table, plot, robust_accuracy
from lmjax.robust import attacks
from lmjax.tasks.adversarial import check_image_task, image_pixels
from lmjax.train.restore import load_setup

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained image-classifier run.")
_EPS = flags.DEFINE_list("eps", ["0.1"], "L-infinity radii, comma-separated, in (0, 1].")
_ATTACK = flags.DEFINE_enum("attack", "pgd", ["pgd", "fgsm"], "The attack.")
_STEPS = flags.DEFINE_integer("steps", 20, "PGD iterations.")
_RESTARTS = flags.DEFINE_integer("restarts", 1, "PGD random restarts (each image keeps its "
                                 "strongest).")
_STEP_SIZE = flags.DEFINE_float("step_size", 0.0, "PGD step (0: 2.5 eps / steps).")
_SPLIT = flags.DEFINE_string("split", "test", "The split to attack (val or test).")
_EXAMPLES = flags.DEFINE_integer("examples", 1000, "Images to attack, spread over the split "
                                 "(0: all of it).")
_BATCH = flags.DEFINE_integer("batch_size", 250, "Images per attacked batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random starts.")
_BEST = flags.DEFINE_bool("best", True, "Attack the best checkpoint where the run kept one.")
_MEMBER = flags.DEFINE_integer("member", -1, "For an ensemble run (ensemble.members > 1): "
                               "attack this member alone.")
_OUT = flags.DEFINE_string("out", "", "Write the rows as JSON to this file.")
_PLOT = flags.DEFINE_string("plot", "", "Write robust accuracy against eps as a PNG here.")


def check(ok, message: str) -> None:
    if not ok:
        fail(message)


def main(args: list[str]) -> None:
    workdir = require(_WORKDIR.value, "give --workdir: the trained image-classifier run.")
    try:
        eps = sorted(float(e) for e in _EPS.value)
    except ValueError:
        eps = []
    check(eps, f"--eps={','.join(_EPS.value)}: give numbers in (0, 1], e.g. --eps=0.05,0.1.")
    for e in eps:
        attacks.check_eps(e, "--eps")
    check(_STEPS.value >= 1 and _RESTARTS.value >= 1, "--steps and --restarts must be >= 1.")
    check(_BATCH.value >= 1 and _EXAMPLES.value >= 0, "--batch_size >= 1, --examples >= 0.")
    s, state = load_setup(workdir, best=_BEST.value and rundir.has_best(workdir))
    task = s.task
    check_image_task(task, "lmjax robustness")
    params, model_state = state.params, state.model_state
    members = task.members
    if members > 1:
        check(0 <= _MEMBER.value < members, f"this run is an ensemble of {members}: attack one "
              f"member with --member=0..{members - 1}.")
        params, model_state = jax.tree.map(lambda x: x[_MEMBER.value], (params, model_state))
    else:
        check(_MEMBER.value == -1, "--member applies to ensemble runs only.")
    check(_SPLIT.value in task.splits,
            f"--split={_SPLIT.value}: this run evaluates on {', '.join(task.splits)}.")

    def apply(variables, x):
        params, model_state = variables
        fn = attacks.pixel_model(lambda v: task._apply(params, model_state, v)[0],
                                 task.example["dtype"])
        return fn(x)

    # No batch larger than the examples asked for: padding rows would be attacked too.
    batch = min(_BATCH.value, _EXAMPLES.value) if _EXAMPLES.value else _BATCH.value
    batches = ({"pixels": image_pixels(task, b["inputs"]), "labels": b["labels"],
                "weights": b["weights"]}
               for b in task.eval_batches(batch, _EXAMPLES.value, _SPLIT.value))
    rows = robust_accuracy(apply, (params, model_state), batches, eps,
                           _ATTACK.value, steps=_STEPS.value, restarts=_RESTARTS.value,
                           step_size=_STEP_SIZE.value, seed=_SEED.value)
    what = (f"{_ATTACK.value.upper()}" + (f"-{_STEPS.value}" if _ATTACK.value == "pgd" else "")
            + (f" x {_RESTARTS.value} restarts" if _RESTARTS.value > 1 else ""))
    if members > 1:
        what += f", member {_MEMBER.value}"
    print(format_table(rows, f"{workdir}: {what} on {rows[0]['examples']} {_SPLIT.value} images"))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"workdir": workdir, "attack": _ATTACK.value, "steps": _STEPS.value,
                       "restarts": _RESTARTS.value, "split": _SPLIT.value, "rows": rows}, f,
                      indent=1)
    if _PLOT.value:
        plot({what: rows}, _PLOT.value)
        print(f"Plot: {_PLOT.value}")
