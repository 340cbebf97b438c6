"""Federated averaging: the round is FedAvg's formula, runs resume exactly, DP clips."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.data.federated import document_windows
from lmjax.tasks import make_task
from lmjax.train.federated import (canonical_convs, local_batches, make_round,
                                   train_federated)
from lmjax.train.state import split_variables


@pytest.fixture
def fed_config(fashion_config):
    """An MLP without dropout or augmentation: the loss is a plain function of the params."""
    c = fashion_config
    c.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (16,), "dropout": 0.0})
    c.data.update(crop_padding=0, flip=False, eval_flip=False)
    c.train.update(label_smoothing=0.0, batch_size=64)
    c.federated.update(clients=4, fraction=1.0, local_epochs=1, local_batch=0, client_lr=0.5,
                       rounds=4, eval_every=2)
    c.mesh.host_cpu_devices = 0
    return c


@pytest.mark.parametrize("clients_at_once", ["vmap", "map", "shard"])
def test_one_fedsgd_round_is_one_gradient_step_on_all_the_clients_data(fed_config,
                                                                       clients_at_once):
    """Full-batch clients, one epoch, all sampled, size-weighted: the average of the clients'
    steps is exactly one step on the union of their data."""
    task = make_task(fed_config, log=lambda s: None)
    params, state = split_variables(task.init_variables(jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: getattr(x, "value", x), params)
    train = task.data.train
    x, y = jnp.asarray(train.inputs[:400]), jnp.asarray(train.labels[:400])
    clients = [np.arange(0, 100), np.arange(100, 200), np.arange(200, 300), np.arange(300, 400)]
    idx, valid = local_batches(clients, np.arange(4), 0, 0, epochs=1, batch=0)
    assert idx.shape == (4, 1, 100) and valid.min() == 1
    weights = jnp.full((4,), 0.25)
    mesh = None
    if clients_at_once == "shard":  # the 4 clients over 2 devices, 2 mapped on each
        mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.devices()[:2])
    way = "vmap" if clients_at_once == "vmap" else "map"
    new, _, _ = jax.jit(make_round(task, 0.5, 1.0, clients_at_once=way, mesh=mesh))(
        params, state, x, y, idx, valid, weights, jax.random.PRNGKey(1))
    everything = {"inputs": x, "labels": y, "ids": jnp.arange(400)}
    grads = jax.grad(lambda p: task.loss(p, state, everything, jax.random.PRNGKey(2))[0])(params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_client_updates_are_clipped_under_dp(fed_config):
    task = make_task(fed_config, log=lambda s: None)
    params, state = split_variables(task.init_variables(jax.random.PRNGKey(0)))
    x, y = jnp.asarray(task.data.train.inputs[:200]), jnp.asarray(task.data.train.labels[:200])
    clients = [np.arange(0, 100), np.arange(100, 200)]
    idx, valid = local_batches(clients, np.arange(2), 0, 0, epochs=2, batch=20)
    new, _, _ = jax.jit(make_round(task, 0.5, 1.0, dp_clip=0.01))(
        params, state, x, y, idx, valid, jnp.array([0.5, 0.5]), jax.random.PRNGKey(1))
    moved = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in
                        zip(jax.tree.leaves(new), jax.tree.leaves(params))))
    assert 0.005 < moved <= 0.01 + 1e-6  # the mean of two updates of norm <= 0.01


def test_local_batches_cover_each_epoch_and_pad_short_clients():
    clients = [np.arange(10), np.arange(10, 14)]
    idx, valid = local_batches(clients, np.array([0, 1]), round_=3, seed=0, epochs=2, batch=4)
    assert idx.shape == (2, 6, 4)  # the longest client: 2 epochs x ceil(10 / 4) steps
    assert valid[0].tolist() == [1] * 6 and valid[1].tolist() == [1, 1, 0, 0, 0, 0]
    first_epoch = idx[0, :3].ravel()
    assert set(first_epoch[:10]) == set(range(10))  # a permutation, the tail wrapped around
    assert set(idx[1, :2].ravel()) == {10, 11, 12, 13}


def test_a_run_resumes_to_the_same_model_and_refuses_unequal_full_batches(fed_config,
                                                                          tmp_path):
    fed_config.federated.update(fraction=0.5, local_batch=10, local_epochs=1)
    whole = train_federated(fed_config, str(tmp_path / "whole"), log=lambda s: None)
    assert whole["rounds"] == 4 and 0.0 <= whole["accuracy"] <= 1.0
    assert "test_accuracy" in whole
    fed_config.federated.rounds = 2
    train_federated(fed_config, str(tmp_path / "parts"), log=lambda s: None)
    fed_config.federated.rounds = 4
    resumed = train_federated(fed_config, str(tmp_path / "parts"), log=lambda s: None)
    assert resumed["accuracy"] == whole["accuracy"] and resumed["loss"] == pytest.approx(
        whole["loss"], rel=1e-6)
    assert json.load(open(os.path.join(tmp_path, "parts", "run.json")))["task"] == "classify"

    fed_config.federated.update(split="dirichlet", alpha=0.1, local_batch=0)
    with pytest.raises(ValueError, match="federated.local_batch=0"):
        train_federated(fed_config, str(tmp_path / "bad"), log=lambda s: None)


def test_canonical_convolutions_have_the_same_values_and_gradients():
    """The rewrite that keeps XLA:CPU's fast convolutions inside the local-step loop changes
    nothing but speed: same outputs and gradients as JAX's own, for several paddings and
    with a strided convolution left as it was."""
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(k[0], (3, 9, 7, 2))
    w1, w2, w3 = (jax.random.normal(k[1], (3, 3, 2, 4)), jax.random.normal(k[2], (2, 3, 4, 5)),
                  jax.random.normal(k[3], (3, 3, 5, 3)))
    dn = ("NHWC", "HWIO", "NHWC")

    def f(ws, x):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, ws[0], (1, 1), "SAME",
                                                     dimension_numbers=dn))
        h = jnp.tanh(jax.lax.conv_general_dilated(h, ws[1], (1, 1), ((0, 1), (2, 0)),
                                                  dimension_numbers=dn))
        h = jax.lax.conv_general_dilated(h, ws[2], (2, 2), "VALID", dimension_numbers=dn)
        return (h ** 2).mean()

    ws = (w1, w2, w3)
    both = jax.jit(lambda fn, ws, x: jax.value_and_grad(fn, argnums=(0, 1))(ws, x),
                   static_argnums=0)
    got, want = both(canonical_convs(f), ws, x), both(f, ws, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_language_model_clients_are_documents_and_train(tiny_config, tmp_path):
    """task=lm: one client per training document (per play, LEAF's Shakespeare setting); each
    client's windows lie inside its own document, and a few rounds lower the loss."""
    texts = {f"{name}.txt": (f"{name.upper()}. " + "to be or not to be, " * 6 + "\n") * (i + 2)
             for i, name in enumerate(["ajax", "brutus", "cato", "zeno"])}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    c = tiny_config
    c.data.update(name="files", files=str(tmp_path / "*.txt"), val_fraction=0.25)
    c.federated.update(split="groups", fraction=1.0, local_epochs=1, local_batch=4,
                       local_steps=3, client_lr=0.5, rounds=2, eval_every=1)
    c.mesh.host_cpu_devices = 0
    c.sample.num_samples = 0
    out = train_federated(c, str(tmp_path / "run"), log=lambda s: None)
    chars = len(set("".join(texts.values())))  # fewer than the vocabulary: a strict bound
    assert out["rounds"] == 2 and out["loss"] < np.log(chars)  # below a uniform guess
    assert 0 < out["examples_seen"] <= 2 * 3 * 3 * 4 and out["examples_seen"] % 4 == 0

    lengths = [len(texts[n]) + 1 for n in sorted(texts)[:3]]  # chars + the "\n" separator
    clients = document_windows(lengths, sum(lengths), seq_len=32)
    ends = np.cumsum(lengths)
    for client, end, n in zip(clients, ends, lengths):
        assert client.min() >= end - n and client.max() + 33 <= end
        assert np.all(np.diff(client) == 32)  # non-overlapping windows
    with pytest.raises(ValueError, match="prepared training stream"):
        document_windows(lengths, sum(lengths) + 1, seq_len=32)
    c.federated.split = "iid"
    with pytest.raises(ValueError, match="federated.split=groups"):
        train_federated(c, str(tmp_path / "bad"), log=lambda s: None)
