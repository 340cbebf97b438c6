"""Loading a saved run (its latest or best checkpoint) from its run directory alone, for
fine-tuning, evaluation and inference; and evaluating it over a whole split."""

from __future__ import annotations

import os

import ml_collections
from jax.sharding import Mesh

from lmjax import rundir
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.config import from_stored
from lmjax.eval.evaluate import evaluate
from lmjax.parallel import mesh as meshlib
from lmjax.tasks.assets import read_assets
from lmjax.train.setup import Setup, setup
from lmjax.train.state import TrainState

ONE_DEVICE = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1})


def load_setup(workdir: str, mesh: Mesh | None = None, best: bool = False,
               log=lambda s: None) -> tuple[Setup, TrainState]:
    """(setup, state) of the run in `workdir`: its latest checkpoint, or its best one (kept
    when train.early_stopping_metric is set), on `mesh` (default: one device). The model,
    tokenizer and class names come from the run directory; no data is read."""
    directory = rundir.checkpoint_dir(workdir, best)
    if not os.path.isdir(directory):
        raise CheckpointError(f"No checkpoints in {directory}: is {workdir!r} the workdir of a "
                              "run that has saved at least once?")
    assets = read_assets(workdir, log=log)
    with Checkpointer(directory) as ckpt:
        step = ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"No checkpoints in {directory}.")
        cfg = from_stored(ckpt.stored_config(step))
        s = setup(cfg, assets=assets, mesh=mesh or meshlib.make_mesh(ONE_DEVICE), log=log)
        state = s.restore(ckpt, step)
    return s, state


def load_run(workdir: str, mesh: Mesh | None = None, best: bool = False,
             log=lambda s: None) -> tuple[ml_collections.ConfigDict, object, TrainState]:
    """(config, task, state) of the run in `workdir` (see load_setup)."""
    s, state = load_setup(workdir, mesh, best, log)
    return s.cfg, s.task, state


def evaluate_run(workdir: str, split: str = "val", best: bool = True, max_examples: int = 0,
                 batch_size: int = 0) -> dict:
    """The metrics of a saved run on one of its task's splits, on one device. `best` takes the
    best checkpoint where the run kept one (early stopping), else the latest. The split's data
    is read (and text re-encoded with the run's own tokenizer); nothing else is."""
    s, state = load_setup(workdir, best=best and rundir.has_best(workdir))
    if split not in s.task.splits:
        raise ValueError(f"split={split!r}: this task evaluates on {', '.join(s.task.splits)}.")
    return evaluate(s.task, s.eval_step(), state.params, state.model_state, s.mesh, max_examples,
                    batch_size or s.cfg.train.batch_size, split)
