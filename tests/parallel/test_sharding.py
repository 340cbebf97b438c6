"""The same training step on 8 simulated devices, under several layouts, matches one device."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lmjax import optim
from lmjax.parallel import mesh as meshlib
from lmjax.train import step as steplib
from lmjax.train.state import create_state
from lmjax.tasks import make_task


def _run(cfg, task, devices, steps=3):
    mesh = meshlib.make_mesh(cfg.mesh, devices=devices)
    tx = optim.build_optimizer(cfg.optim, cfg.train.num_steps, matrix_dims=task.matrix_dims)
    schedule = optim.build_schedule(cfg.optim, cfg.train.num_steps)
    state, _, shardings = create_state(task, tx, mesh, jax.random.PRNGKey(0))
    fn = steplib.jit_train_step(task, tx, schedule, 1, jax.random.PRNGKey(1), shardings, mesh)
    losses = []
    for i in range(steps):
        state, metrics = fn(state, task.train_batch(i))
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def setup(data_cache, load_config):
    cfg = load_config("tiny")
    cfg.data.cache_dir = data_cache
    cfg.model.update(d_model=64, num_heads=4)  # divisible by the tensor axis
    cfg.optim.warmup_steps = 0
    task = make_task(cfg, log=lambda s: None)
    reference = _run(cfg, task, jax.devices()[:1])
    return cfg, task, reference


@pytest.mark.slow
@pytest.mark.parametrize("layout", [
    dict(data=4, fsdp=1, tensor=2),   # data x tensor parallel
    dict(data=1, fsdp=8, tensor=1),   # fully sharded data parallel
    dict(data=2, fsdp=2, tensor=2),   # all three
])
def test_sharded_step_matches_single_device(setup, layout):
    cfg, task, (ref_state, ref_losses) = setup
    assert len(jax.devices()) == 8
    c = cfg.copy_and_resolve_references()
    c.mesh.update(layout)
    state, losses = _run(c, task, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    # Adam divides by sqrt(v): where a gradient is ~0, float32 rounding in a different reduction
    # order can move a weight by a small fraction of one step (lr). 5% of lr bounds that.
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                   atol=0.05 * cfg.optim.learning_rate)


def test_parameters_and_optimizer_state_are_created_sharded(setup):
    cfg, task, _ = setup
    c = cfg.copy_and_resolve_references()
    c.mesh.update(data=1, fsdp=4, tensor=2)
    mesh = meshlib.make_mesh(c.mesh)
    tx = optim.build_optimizer(c.optim, c.train.num_steps, matrix_dims=task.matrix_dims)
    state, _, _ = create_state(task, tx, mesh, jax.random.PRNGKey(0))
    fc = state.params["block_0"]["mlp"]["fc"]["kernel"]  # logical (embed, mlp)
    assert fc.sharding.spec == P("fsdp", "tensor")
    # Each device holds 1/8 of it: no full copy anywhere.
    assert fc.addressable_shards[0].data.shape == (fc.shape[0] // 4, fc.shape[1] // 2)
    adam = state.opt_state
    mu = [x for x in jax.tree.leaves(adam) if x.shape == fc.shape]
    assert mu and all(m.sharding.spec == fc.sharding.spec for m in mu)
    counts = [x for x in jax.tree.leaves(adam) if x.ndim == 0]
    assert counts and all(len(x.sharding.device_set) == 8 for x in counts)  # replicated


def test_mesh_sizes_are_checked():
    import ml_collections
    m = ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=1))
    assert meshlib.mesh_shape(m, 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        meshlib.mesh_shape(ml_collections.ConfigDict(dict(data=-1, fsdp=3, tensor=1)), 8)
    # An explicit smaller mesh runs on the first devices.
    small = meshlib.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=1)))
    assert small.devices.size == 4 and dict(small.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
    with pytest.raises(ValueError, match="at most one may be -1"):
        meshlib.mesh_shape(ml_collections.ConfigDict(dict(data=-1, fsdp=-1, tensor=1)), 8)


@pytest.mark.slow
def test_batch_norm_cnn_on_8_devices_matches_one_device_statistics_included(fashion_config):
    cfg = fashion_config
    cfg.optim.warmup_steps = 0
    task = make_task(cfg, log=lambda s: None)
    cfg.mesh.data = 1
    one, one_losses = _run(cfg, task, jax.devices()[:1])
    cfg.mesh.data = 8
    eight, eight_losses = _run(cfg, task, jax.devices())
    np.testing.assert_allclose(eight_losses, one_losses, rtol=1e-5)
    # The running statistics are those of the global batch, not of each device's quarter of it.
    for a, b in zip(jax.tree.leaves(eight.model_state), jax.tree.leaves(one.model_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert any(float(np.abs(x).max()) > 0 for x in jax.tree.leaves(one.model_state))
    for a, b in zip(jax.tree.leaves(eight.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=0.05 * cfg.optim.learning_rate)


@pytest.mark.slow
def test_fsdp_divides_parameter_and_optimizer_memory_per_device(setup):
    cfg, task, _ = setup
    held = {}
    for name, layout in {"data": dict(data=8, fsdp=1, tensor=1),
                         "fsdp": dict(data=1, fsdp=8, tensor=1)}.items():
        c = cfg.copy_and_resolve_references()
        c.mesh.update(layout)
        mesh = meshlib.make_mesh(c.mesh)
        tx = optim.build_optimizer(c.optim, c.train.num_steps, matrix_dims=task.matrix_dims)
        state, _, _ = create_state(task, tx, mesh, jax.random.PRNGKey(0))
        held[name] = max(meshlib.bytes_per_device((state.params, state.opt_state)).values())
    total = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    assert held["data"] == total  # data parallelism: a full copy on every device
    # FSDP: an eighth of every 'embed'-sharded tensor; only a few small biases are replicated.
    assert held["fsdp"] < 0.16 * total, held["fsdp"] / total
