"""Federated averaging as a switch on the one loop: the round is FedAvg's formula, DP-FedAvg
clips, and the shared loop's promises hold for it: exact resume, SIGTERM, the compatibility
check, early stopping."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.checkpoint import CheckpointError
from lmjax.data.clients import document_windows
from lmjax.optim import build_optimizer
from lmjax.tasks import add_switches, make_task
from lmjax.tasks.federated import FederatedTask, local_batches, make_round
from lmjax.train import loop
from lmjax.train.loop import train_and_evaluate
from lmjax.train.state import split_variables


@pytest.fixture
def fed_config(fashion_config):
    """An MLP without dropout or augmentation: the loss is a plain function of the params."""
    c = add_switches(fashion_config, "federated")
    c.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (16,), "dropout": 0.0})
    c.data.update(crop_padding=0, flip=False, eval_flip=False)
    c.train.update(label_smoothing=0.0, batch_size=64, num_steps=4, eval_every=2)
    c.checkpoint.every = 2
    c.federated.update(clients=4, fraction=1.0, local_epochs=1, local_batch=0, client_lr=0.5)
    c.optim.update(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant",
                   warmup_steps=0, clip_norm=0.0, weight_decay=0.0)  # FedAvg's server
    c.mesh.host_cpu_devices = 0
    return c


def _plain_task(cfg):
    """The classifier the clients train (the federated switch off)."""
    plain = ml_collections.ConfigDict(cfg.to_dict())
    del plain["federated"]
    return make_task(plain, log=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("clients_at_once", ["vmap", "map", "shard"])
def test_one_fedsgd_round_is_one_gradient_step_on_all_the_clients_data(fed_config,
                                                                       clients_at_once):
    """Full-batch clients, one epoch, all sampled, size-weighted: the average of the clients'
    steps is exactly one step on the union of their data."""
    task = _plain_task(fed_config)
    params, state = split_variables(task.init_variables(jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: getattr(x, "value", x), params)
    arrays = jax.tree.map(lambda x: jnp.asarray(x[:400]), task.example_arrays("train"))
    clients = [np.arange(0, 100), np.arange(100, 200), np.arange(200, 300), np.arange(300, 400)]
    idx, valid = local_batches(clients, np.arange(4), 0, 0, epochs=1, batch=0)
    assert idx.shape == (4, 1, 100) and valid.min() == 1
    weights = jnp.full((4,), 0.25)
    mesh = None
    if clients_at_once == "shard":  # the 4 clients over 2 devices, 2 mapped on each
        mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                             devices=jax.devices()[:2])
    way = "vmap" if clients_at_once == "vmap" else "map"
    avg, _, _ = jax.jit(make_round(task, 0.5, clients_at_once=way, mesh=mesh),
                        static_argnums=7)(params, state, arrays, idx, valid, weights,
                                          jax.random.PRNGKey(1), 4)
    new = jax.tree.map(jnp.add, params, avg)
    everything = task.examples("train", np.arange(400))
    grads = jax.grad(lambda p: task.loss(p, state, everything, jax.random.PRNGKey(2))[0])(params)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_client_updates_are_clipped_under_dp(fed_config):
    task = _plain_task(fed_config)
    params, state = split_variables(task.init_variables(jax.random.PRNGKey(0)))
    arrays = jax.tree.map(lambda x: jnp.asarray(x[:200]), task.example_arrays("train"))
    clients = [np.arange(0, 100), np.arange(100, 200)]
    idx, valid = local_batches(clients, np.arange(2), 0, 0, epochs=2, batch=20)
    avg, _, _ = jax.jit(make_round(task, 0.5, dp_clip=0.01), static_argnums=7)(
        params, state, arrays, idx, valid, jnp.array([0.5, 0.5]), jax.random.PRNGKey(1), 2)
    moved = np.sqrt(sum(float(jnp.sum(a ** 2)) for a in jax.tree.leaves(avg)))
    assert 0.005 < moved <= 0.01 + 1e-6  # the mean of two updates of norm <= 0.01


def test_local_batches_cover_each_epoch_and_pad_short_clients():
    clients = [np.arange(10), np.arange(10, 14)]
    idx, valid = local_batches(clients, np.array([0, 1]), round_=3, seed=0, epochs=2, batch=4)
    assert idx.shape == (2, 6, 4)  # the longest client: 2 epochs x ceil(10 / 4) steps
    assert valid[0].tolist() == [1] * 6 and valid[1].tolist() == [1, 1, 0, 0, 0, 0]
    first_epoch = idx[0, :3].ravel()
    assert set(first_epoch[:10]) == set(range(10))  # a permutation, the tail wrapped around
    assert set(idx[1, :2].ravel()) == {10, 11, 12, 13}


@pytest.mark.slow
def test_the_server_step_is_fedavg_with_padding_clients_that_change_nothing(fed_config):
    """One loop step is one round: params + the server's rate x the size-weighted mean of the
    clients' updates, whatever clients pad the batch to a multiple of the devices."""
    fed_config.federated.update(fraction=0.75, local_batch=10)
    fed_config.optim.learning_rate = 0.5
    task = make_task(fed_config, log=lambda s: None)
    assert isinstance(task, FederatedTask) and task.per_round == 3
    batch = task.train_batch(0)
    assert batch["idx"].shape[0] == task.padded and batch["weights"].sum() == pytest.approx(1.0)
    params, state = split_variables(task.init_variables(jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: getattr(x, "value", x), params)
    (_, _), pseudo = task.value_and_grad()(params, state, batch, jax.random.PRNGKey(3))
    plain = task.inner
    arrays = plain.example_arrays("train")
    by_client = []
    for k in range(3):
        p = params
        for rows, ok in zip(batch["idx"][k], batch["valid"][k]):
            if ok:
                g = jax.grad(lambda q: plain.loss(q, state, plain.gather(arrays, rows),
                                                  jax.random.PRNGKey(0))[0])(p)
                p = jax.tree.map(lambda w, gw: w - 0.5 * gw, p, g)
        by_client.append(jax.tree.map(jnp.subtract, p, params))
    mean = jax.tree.map(lambda *d: sum(w * x for w, x in zip(batch["weights"], d)), *by_client)
    for got, want in zip(jax.tree.leaves(pseudo), jax.tree.leaves(mean)):
        np.testing.assert_allclose(-np.asarray(got), want, rtol=1e-4, atol=1e-6)
    tx = task.wrap_optimizer(build_optimizer(fed_config.optim, 4))
    updates, _ = tx.update(pseudo, tx.init(params), params)
    for u, d in zip(jax.tree.leaves(updates), jax.tree.leaves(mean)):
        np.testing.assert_allclose(u, 0.5 * np.asarray(d), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_run_resumes_to_the_same_model_and_refuses_unequal_full_batches(fed_config,
                                                                          tmp_path):
    fed_config.federated.update(fraction=0.5, local_batch=10, local_epochs=1)
    whole = train_and_evaluate(fed_config, str(tmp_path / "whole"))
    assert whole["step"] == 4 and 0.0 <= whole["val_accuracy"] <= 1.0
    assert "test_accuracy" in whole
    fed_config.train.num_steps = 2
    train_and_evaluate(fed_config, str(tmp_path / "parts"))
    fed_config.train.num_steps = 4
    resumed = train_and_evaluate(fed_config, str(tmp_path / "parts"))
    assert resumed["val_accuracy"] == whole["val_accuracy"] and resumed["val_loss"] == \
        pytest.approx(whole["val_loss"], rel=1e-6)
    assert json.load(open(os.path.join(tmp_path, "parts", "run.json")))["task"] == "classify"

    fed_config.federated.update(split="dirichlet", alpha=0.1, local_batch=0)
    with pytest.raises(ValueError, match="federated.local_batch=0"):
        train_and_evaluate(fed_config, str(tmp_path / "bad"))


@pytest.mark.slow
def test_sigterm_mid_round_saves_and_the_run_resumes_exactly(fed_config, tmp_path, monkeypatch):
    """A real SIGTERM arrives while round 3's batch is built (rounds 1 and 2 in flight): the
    loop saves the last finished round, and the same command finishes with the uninterrupted
    run's model. A config of another client count is refused on resume."""
    fed_config.federated.update(fraction=0.5, local_batch=10)
    fed_config.train.update(num_steps=6, eval_every=3)
    fed_config.checkpoint.every = 3
    whole = train_and_evaluate(fed_config, str(tmp_path / "whole"))
    build = FederatedTask.train_batch

    def build_then_sigterm(self, step, *args):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return build(self, step, *args)

    monkeypatch.setattr(FederatedTask, "train_batch", build_then_sigterm)
    with pytest.raises(loop.Preempted) as stopped:
        train_and_evaluate(fed_config, str(tmp_path / "cut"))
    monkeypatch.undo()
    assert 0 < stopped.value.args[0] < 6
    resumed = train_and_evaluate(fed_config, str(tmp_path / "cut"))
    assert resumed["val_loss"] == whole["val_loss"]
    assert resumed["val_accuracy"] == whole["val_accuracy"]
    fed_config.federated.clients = 8
    with pytest.raises(CheckpointError, match="federated.clients: checkpoint 4, config 8"):
        train_and_evaluate(fed_config, str(tmp_path / "cut"))


@pytest.mark.slow
def test_early_stopping_keeps_the_best_round(fed_config, tmp_path):
    fed_config.federated.update(fraction=0.5, local_batch=10)
    fed_config.train.update(num_steps=6, eval_every=1, early_stopping_metric="accuracy",
                            early_stopping_mode="max", patience=1)
    fed_config.federated.client_lr = 5.0  # large steps: accuracy soon stops improving
    out = train_and_evaluate(fed_config, str(tmp_path / "run"))
    assert out["best_step"] <= out["step"] <= 6 and os.listdir(tmp_path / "run" / "best")


@pytest.mark.slow
def test_language_model_clients_are_documents_and_train(tiny_config, tmp_path):
    """task=lm: one client per training document (per play, LEAF's Shakespeare setting); each
    client's windows lie inside its own document, and a few rounds lower the loss."""
    texts = {f"{name}.txt": (f"{name.upper()}. " + "to be or not to be, " * 6 + "\n") * (i + 2)
             for i, name in enumerate(["ajax", "brutus", "cato", "zeno"])}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    c = add_switches(tiny_config, "federated")
    c.data.update(name="files", files=str(tmp_path / "*.txt"), val_fraction=0.25)
    c.federated.update(split="groups", fraction=1.0, local_epochs=1, local_batch=4,
                       local_steps=3, client_lr=0.5)
    c.train.update(num_steps=2, eval_every=1)
    c.optim.update(name="sgd", learning_rate=1.0, momentum=0.0, warmup_steps=0, clip_norm=0.0)
    c.mesh.host_cpu_devices = 0
    c.sample.num_samples = 0
    out = train_and_evaluate(c, str(tmp_path / "run"))
    chars = len(set("".join(texts.values())))  # fewer than the vocabulary: a strict bound
    assert out["step"] == 2 and out["val_loss"] < np.log(chars)  # below a uniform guess
    seen = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")
            if '"examples_seen"' in line][-1]["examples_seen"]
    assert 0 < seen <= 2 * 3 * 3 * 4 and seen % 4 == 0

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
        train_and_evaluate(c, str(tmp_path / "bad"))
