"""Evaluating a model over a whole split, on any mesh (a saved run: lmjax.train.restore)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.parallel import mesh as meshlib


def evaluate(task, eval_step, params, model_state, mesh, max_examples: int, batch_size: int,
             split: str = "val") -> dict:
    """The task's metrics over a whole evaluation split: sums add up exactly over batches and
    devices; per-example outputs (for AUC, confusion matrices) are gathered, padding dropped."""
    sums, examples = None, []
    for batch in task.eval_batches(batch_size, max_examples, split):
        # This process's rows of the evaluation batch.
        rows = jax.tree.map(
            lambda x: meshlib.local_rows(x, jax.process_index(), jax.process_count()), batch)
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
