"""Magnitude pruning against a NumPy reference of Zhu & Gupta's schedule and of the selection."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.optim import prune
from lmjax.tasks import add_switches, check, make_task, pruned
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import load_setup
from lmjax.train.setup import setup


def np_sparsity(t, s_f, t0, t1):
    """Zhu & Gupta (2017), eq. 1 with s_i = 0, held at s_f after t1 and 0 before t0."""
    if t < t0:
        return 0.0
    if t >= t1:
        return s_f
    return s_f + (0.0 - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3


def np_mask(w, sparsity):
    """Keep all but the floor(s * n) smallest |w| (a stable sort breaks ties by index)."""
    flat = np.abs(w).reshape(-1)
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, bool)
    keep[order[:int(np.floor(np.float32(sparsity) * flat.size))]] = False
    return keep.reshape(w.shape)


def cnn_like(seed=0):
    r = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)  # noqa: E731
    return {"Conv_0": {"kernel": f(3, 3, 1, 4)}, "Conv_1": {"kernel": f(3, 3, 4, 6)},
            "BatchNorm_0": {"scale": f(4), "bias": f(4)},
            "Dense_0": {"kernel": f(24, 16), "bias": f(16)}, "Dense_1": {"kernel": f(16, 5)}}


def test_schedule_matches_the_cubic_formula():
    for t in [0, 5, 10, 37, 64, 90, 100, 150]:
        assert float(prune.sparsity_at(t, 0.9, 10, 100)) == pytest.approx(
            np_sparsity(t, 0.9, 10, 100), abs=1e-6)


def test_prunable_excludes_first_conv_classifier_biases_and_norms():
    which = prune.prunable(cnn_like())
    assert which["Conv_1"]["kernel"] and which["Dense_0"]["kernel"]
    assert not which["Conv_0"]["kernel"] and not which["Dense_1"]["kernel"]
    assert not which["Dense_0"]["bias"] and not which["BatchNorm_0"]["scale"]
    assert prune.prunable(cnn_like(), keep_ends=False)["Dense_1"]["kernel"]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_selection_matches_numpy(scope):
    params = cnn_like(1)
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[0, :4].set(0.5)  # ties
    which = prune.prunable(params)
    masks = prune.compute_masks(params, which, 0.7, scope)
    names = [("Conv_1", "kernel"), ("Dense_0", "kernel")]
    if scope == "layer":
        for a, b in names:
            np.testing.assert_array_equal(masks[a][b], np_mask(np.asarray(params[a][b]), 0.7))
    else:
        joint = np_mask(np.concatenate([np.asarray(params[a][b]).ravel() for a, b in names]),
                        0.7)
        got = np.concatenate([np.asarray(masks[a][b]).ravel() for a, b in names])
        np.testing.assert_array_equal(got, joint)
    for kept in ("Conv_0", "Dense_1"):
        assert np.asarray(masks[kept]["kernel"]).all()


def test_transform_follows_the_reference_and_holds_zeros():
    target, t0, t1, every = 0.8, 2, 11, 3
    tx = optax.chain(optax.sgd(0.1), prune.magnitude_pruning(target, t0, t1, every))
    params = cnn_like(2)
    state = tx.init(params)
    update = jax.jit(tx.update)
    ref = {k: np.ones(params[k]["kernel"].shape, bool) for k in ("Conv_1", "Dense_0")}
    rng = np.random.default_rng(3)
    for t in range(16):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        dense_next = optax.apply_updates(params, jax.tree.map(lambda g: -0.1 * g, grads))
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if t0 <= t <= t1 and ((t - t0) % every == 0 or t == t1):
            s = np_sparsity(t, target, t0, t1)
            ref = {k: np_mask(np.asarray(dense_next[k]["kernel"]), s) for k in ref}
        for k, m in ref.items():
            np.testing.assert_array_equal(np.asarray(state[1].masks[k]["kernel"]), m)
            w = np.asarray(params[k]["kernel"])
            assert (w[~m] == 0).all()
    report = prune.sparsity_report(params)
    n = 3 * 3 * 4 * 6 + 24 * 16
    assert report["prunable_params"] == n
    expected = (np.floor(np.float32(target) * 216) + np.floor(np.float32(target) * 384)) / n
    assert report["prunable_sparsity"] == pytest.approx(expected)


def test_masks_get_the_parameters_shardings():
    tx = prune.wrap(optax.adam(1e-3), _section(0.5), 100)
    params = {"Dense_0": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
    specs = {"Dense_0": {"kernel": P("x", None), "bias": P(None)}}
    state = jax.eval_shape(tx.init, params)
    out = optax.tree_map_params(tx, lambda _, s: s, state, specs,
                                transform_non_params=lambda _: P(),
                                is_leaf=lambda x: isinstance(x, P))
    assert out[1].masks == specs and out[1].count == P()


def _section(sparsity, **kw):
    s = pruned.section()
    s.target_sparsity = sparsity
    s.update(kw)
    return s


def test_off_leaves_the_optimizer_alone():
    tx = optax.sgd(0.1)
    assert prune.wrap(tx, _section(0.0), 100) is tx


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_is_an_error(fashion_config, bad):
    add_switches(fashion_config, "prune").prune.target_sparsity = bad
    with pytest.raises(ValueError, match="prune.target_sparsity"):
        check(fashion_config)


@pytest.mark.slow
def test_masks_survive_checkpoint_and_resume(fashion_config, tmp_path):
    """The prune switch (lmjax/tasks/pruned.py) puts the masks in the state, the trainer's setup
    shards them like the parameters, and a checkpoint restores them with the step counter."""
    c = add_switches(fashion_config, "prune")
    c.mesh.data = 1
    c.prune.update(target_sparsity=0.6, start_step=0, end_step=4, every=2)
    s = setup(c, log=lambda line: None)
    state = s.new_state()
    pruning = state.opt_state[1]
    assert isinstance(pruning, prune.PruneState)
    assert s.shardings.opt_state[1].masks == s.shardings.params
    r = np.random.default_rng(0)
    masks = jax.tree.map(lambda m: jnp.asarray(r.random(m.shape) < 0.5), pruning.masks)
    state = state.replace(opt_state=(state.opt_state[0], prune.PruneState(
        count=jnp.asarray(7, jnp.int32), masks=masks)))
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(7, state, c.to_dict(), force=True)
        ckpt.wait()
        restored = s.restore(ckpt, 7)
    assert int(restored.opt_state[1].count) == 7
    jax.tree.map(np.testing.assert_array_equal, restored.opt_state[1].masks, masks)


def test_only_states_at_the_target_sparsity_may_be_best(fashion_config):
    c = add_switches(fashion_config, "prune")
    c.prune.update(target_sparsity=0.5, end_step=12)
    task = make_task(c, log=lambda line: None)
    # The mask update of 0-based update 12 applies the target: states from step 13 on.
    assert [task.may_be_best(step) for step in (1, 12, 13, 40)] == [False, False, True, True]


@pytest.mark.slow
def test_early_stopping_keeps_a_best_checkpoint_at_the_target_sparsity(fashion_config, tmp_path):
    """A 40-step CNN pruned to 90% between steps 30 and 35: validation accuracy is best at step
    30, before pruning bites, yet the best checkpoint kept is one at the target sparsity, and
    it is what the run delivers (before, selection kept the dense step-30 state)."""
    c = add_switches(fashion_config, "prune")
    c.prune.update(target_sparsity=0.9, start_step=30, end_step=35, every=5)
    c.train.update(num_steps=40, eval_every=10, early_stopping_metric="accuracy",
                   early_stopping_mode="max")
    c.checkpoint.every = 10
    workdir = str(tmp_path / "run")
    out = train_and_evaluate(c, workdir)
    val = {r["step"]: r["accuracy"] for r in map(json.loads, open(f"{workdir}/metrics.jsonl"))
           if r.get("split") == "val"}
    assert max(val, key=val.get) < 36  # the best accuracy came before the target sparsity
    assert out["best_step"] == 40 and out["prunable_sparsity"] == pytest.approx(0.9, abs=0.01)
    s, best = load_setup(workdir, best=True)
    assert rundir.has_best(workdir) and int(best.step) == 40
    report = prune.sparsity_report(jax.device_get(best.params))
    assert report["prunable_sparsity"] == pytest.approx(0.9, abs=0.01)
