"""Evaluating a model over a whole split, on any mesh; and evaluating a saved run.

    python -m lmjax.eval.evaluate --workdir=runs/fashion_mnist-cnn --split=test
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from lmjax.parallel import mesh as meshlib
from lmjax.tasks.base import local_rows


def evaluate(task, eval_step, params, model_state, mesh, max_examples: int, batch_size: int,
             split: str = "val") -> dict:
    """The task's metrics over a whole evaluation split: sums add up exactly over batches and
    devices; per-example outputs (for AUC, confusion matrices) are gathered, padding dropped."""
    sums, examples = None, []
    for batch in task.eval_batches(batch_size, max_examples, split):
        rows = jax.tree.map(lambda x: local_rows(x, jax.process_index(), jax.process_count()),
                            batch)  # this process's rows of the evaluation batch
        out = eval_step(params, model_state, meshlib.global_batch(rows, mesh))
        sums = out["sums"] if sums is None else jax.tree.map(jnp.add, sums, out["sums"])
        if out["examples"]:
            keep = batch["weights"] > 0
            examples.append({k: np.asarray(v)[keep] for k, v in out["examples"].items()})
        # One batch in flight at a time: many independent evaluation steps queued at once can
        # deadlock XLA's CPU collectives (see the note in the training loop).
        jax.block_until_ready(sums)
    sums = {k: float(v) for k, v in jax.device_get(sums).items()}
    gathered = {k: np.concatenate([e[k] for e in examples]) for k in examples[0]} if examples else {}
    return task.summarize(sums, gathered)


def evaluate_run(workdir: str, split: str = "val", best: bool = True, max_examples: int = 0,
                 batch_size: int = 0) -> dict:
    """The metrics of a saved run on one of its task's splits, on one device. `best` takes the
    best checkpoint where the run kept one (early stopping), else the latest."""
    from lmjax.train import step as steplib
    from lmjax.train.restore import has_best, load_run

    best = best and has_best(workdir)
    cfg, task, state = load_run(workdir, best=best)
    mesh = jax.tree.leaves(state.params)[0].sharding.mesh
    if split not in task.splits:
        raise ValueError(f"split={split!r}: this task evaluates on {', '.join(task.splits)}.")
    shardings = jax.tree.map(lambda x: x.sharding, state)
    eval_step = steplib.jit_eval_step(task, shardings, mesh)
    return evaluate(task, eval_step, state.params, state.model_state, mesh, max_examples,
                    batch_size or cfg.train.batch_size, split)


def main(argv):
    del argv
    metrics = evaluate_run(_WORKDIR.value, _SPLIT.value, best=not _LATEST.value)
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    _WORKDIR = flags.DEFINE_string("workdir", None, "The run to evaluate.", required=True)
    _SPLIT = flags.DEFINE_string("split", "val", "Which split: val, or test where the task has one.")
    _LATEST = flags.DEFINE_bool("latest", False, "The latest checkpoint even if a best one exists.")
    app.run(main)
