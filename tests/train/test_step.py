import jax
import pytest
import numpy as np

from lmjax import optim
from lmjax.parallel import mesh as meshlib
from lmjax.train import step as steplib
from lmjax.train.state import create_state
from lmjax.tasks import make_task


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_compiled_step_updates_the_state_in_place(tiny_config):
    """Donation is in the compiled program (the state's buffers alias its outputs), and the
    buffers a step consumed are freed: parameters are updated in place, not copied."""
    from lmjax.train.setup import setup

    tiny_config.mesh.data = 2
    s = setup(tiny_config, log=lambda line: None)
    state, fn = s.new_state(), s.train_step()
    batch = meshlib.global_batch(s.task.train_batch(0), s.mesh)
    compiled = fn.lower(state, batch).compile()
    hlo = compiled.as_text()
    assert "input_output_alias" in hlo
    aliased = hlo.split("input_output_alias={")[1].split("}, entry")[0].count("(")
    assert aliased >= len(jax.tree.leaves(state.params))  # at least every parameter
    before = jax.tree.leaves(state.params)
    state, _ = fn(state, batch)
    assert all(x.is_deleted() for x in before)


def test_prefetched_batches_are_already_on_the_devices(tiny_config):
    """What the loop receives from the prefetcher is a global jax.Array laid out with the
    batch sharding: the host-to-device copy happened on the prefetch thread."""
    from lmjax.data.prefetch import Prefetcher
    from lmjax.train.setup import setup

    tiny_config.mesh.data = 2
    s = setup(tiny_config, log=lambda line: None)

    def make(step):
        return meshlib.global_batch(s.task.train_batch(step), s.mesh)

    with Prefetcher(make, 0, 3, depth=2) as batches:
        for step, batch in batches:
            for x in jax.tree.leaves(batch):
                assert isinstance(x, jax.Array) and x.committed
                assert x.sharding.is_equivalent_to(meshlib.batch_sharding(s.mesh), x.ndim)
