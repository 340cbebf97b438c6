"""Loading a finished (or running) run's state from its workdir, for fine-tuning and inference."""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh

from lmjax import optim
from lmjax.checkpoint import Checkpointer, CheckpointError
from lmjax.parallel import mesh as meshlib
from lmjax.tasks import make_task
from lmjax.train.state import TrainState, state_shardings


def checkpoint_dir(workdir: str, best: bool = False) -> str:
    return os.path.join(workdir, "best" if best else "checkpoints")


def has_best(workdir: str) -> bool:
    """Whether the run kept a best checkpoint (train.early_stopping_metric was set)."""
    directory = checkpoint_dir(workdir, best=True)
    return os.path.isdir(directory) and bool(os.listdir(directory))


def load_run(workdir: str, mesh: Mesh | None = None, best: bool = False,
             log=lambda s: None) -> tuple[ml_collections.ConfigDict, object, TrainState]:
    """(config, task, state) of the run in `workdir`: its latest checkpoint, or its best one
    (kept when train.early_stopping_metric is set). The task is rebuilt from the stored config,
    so its tokenizer and model match the weights."""
    directory = checkpoint_dir(workdir, best)
    if not os.path.isdir(directory):
        raise CheckpointError(f"No checkpoints in {directory}: is {workdir!r} the workdir of a "
                              "run that has saved at least once?")
    mesh = mesh or meshlib.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}))
    with Checkpointer(directory) as ckpt:
        step = ckpt.latest_step()
        if step is None:
            raise CheckpointError(f"No checkpoints in {directory}.")
        cfg = ml_collections.ConfigDict(ckpt.stored_config(step))
        task = make_task(cfg, log=log)
        tx = optim.build_optimizer(cfg.optim, cfg.train.num_steps, matrix_dims=task.matrix_dims,
                                   trainable=task.trainable)
        abstract, shardings = state_shardings(task, tx, mesh, jax.random.PRNGKey(cfg.seed))
        state = ckpt.restore(step, abstract, shardings)
    return cfg, task, state
