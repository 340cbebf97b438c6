import jax
import numpy as np

from lmjax import optim
from lmjax.parallel import mesh as meshlib
from lmjax.train import step as steplib
from lmjax.train.state import create_state
from lmjax.tasks import make_task


def test_loss_falls_when_overfitting_one_batch(tiny_config):
    cfg = tiny_config
    cfg.optim.update(learning_rate=1e-2, warmup_steps=0, schedule="constant")
    task = make_task(cfg, log=lambda s: None)
    mesh = meshlib.make_mesh(cfg.mesh, devices=jax.devices()[:1])
    tx = optim.build_optimizer(cfg.optim, 100, matrix_dims=task.matrix_dims)
    state, _, shardings = create_state(task, tx, mesh, jax.random.PRNGKey(0))
    fn = steplib.jit_train_step(task, tx, optim.build_schedule(cfg.optim, 100), 1,
                                jax.random.PRNGKey(1), shardings, mesh)
    batch = task.train_batch(0)
    losses = []
    for _ in range(80):
        state, metrics = fn(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 4.0  # about ln(84): an untrained model guesses uniformly
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert int(state.step) == 80
    assert np.isfinite(float(metrics["grad_norm"]))
