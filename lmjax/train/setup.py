"""One setup path: config -> task -> optimizer and schedule -> mesh -> state shardings.

The trainer, loading a saved run, importing Hugging Face weights and the benchmark all start
here (MaxText's `setup_train_loop` idea), so the optimizer a run is restored with is always the
one it was trained with.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import ml_collections
import optax
from jax.sharding import Mesh

from lmjax import optim, rundir
from lmjax.checkpoint import Checkpointer
from lmjax.config import validate
from lmjax.models.layers import TransformerConfig, resolve_attention
from lmjax.parallel import mesh as meshlib
from lmjax.tasks import make_task
from lmjax.train import step as steplib
from lmjax.train.state import TrainState, init_state, state_shardings


@dataclasses.dataclass
class Setup:
    cfg: ml_collections.ConfigDict
    task: object
    mesh: Mesh
    tx: optax.GradientTransformation
    schedule: Callable
    abstract: TrainState   # shapes and dtypes of the state
    shardings: TrainState  # where each leaf lives on the mesh
    init_rng: jax.Array
    dropout_rng: jax.Array

    def new_state(self) -> TrainState:
        return init_state(self.task, self.tx, self.shardings, self.init_rng)

    def restore(self, ckpt: Checkpointer, step: int) -> TrainState:
        """A saved state, onto this mesh whatever mesh wrote it."""
        return ckpt.restore(step, self.abstract, self.shardings)

    def train_step(self) -> Callable:
        return steplib.jit_train_step(self.task, self.tx, self.schedule, self.cfg.train.grad_accum,
                                      self.dropout_rng, self.shardings, self.mesh)

    def eval_step(self) -> Callable:
        return steplib.jit_eval_step(self.task, self.shardings, self.mesh)


def setup(cfg: ml_collections.ConfigDict, *, assets: rundir.Assets | None = None,
          mesh: Mesh | None = None, log=print) -> Setup:
    """Everything but the state's values. `assets` builds the task from a run directory (no
    data read) instead of from the data; `mesh` defaults to the config's."""
    validate(cfg)
    if cfg.get("compilation_cache"):  # before the first compilation of this process
        jax.config.update("jax_compilation_cache_dir",
                          os.path.abspath(os.path.expanduser(cfg.compilation_cache)))
    mesh = mesh or meshlib.make_mesh(cfg.mesh)
    parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % parallel:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must divide evenly over the "
                         f"{parallel} data-parallel devices (mesh.data x mesh.fsdp).")
    task = make_task(cfg, assets=assets, log=log, mesh=mesh)
    model_cfg = task.model_config
    if isinstance(model_cfg, TransformerConfig):
        impl, why = resolve_attention(model_cfg)
        if impl == "cudnn" or model_cfg.attention == "cudnn" or jax.default_backend() == "gpu":
            log(f"Attention: {'cuDNN fused attention' if impl == 'cudnn' else why}")
    num_steps = cfg.train.num_steps
    tx = task.wrap_optimizer(optim.build_optimizer(cfg.optim, num_steps,
                                                   matrix_dims=task.matrix_dims,
                                                   trainable=task.trainable))
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    abstract, shardings = state_shardings(task, tx, mesh, init_rng)
    return Setup(cfg=cfg, task=task, mesh=mesh, tx=tx,
                 schedule=optim.build_schedule(cfg.optim, num_steps), abstract=abstract,
                 shardings=shardings, init_rng=init_rng, dropout_rng=dropout_rng)
