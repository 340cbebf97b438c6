"""Federated averaging (McMahan et al., 2017), simulated on one machine.

Each round the server samples a fraction of the clients; each sampled client runs
`federated.local_epochs` epochs of plain SGD on its own examples; the server moves the global
model by the clients' updates, averaged with weights proportional to their sizes. All the
sampled clients train at once: `vmap` over clients, `lax.scan` over their local steps, inside
one jitted round, with the client axis sharded over the mesh's data axis. FedSGD is the special
case of one epoch with the whole client as one batch (`local_batch=0`).

The client split, the clients sampled and each client's batches are functions of (seed, round),
so a resumed run repeats the rounds it would have run. The run directory is an ordinary run:
`python -m lmjax.evaluate`, `lmjax.robustness` and `lmjax.explain` read it.

DP-FedAvg (McMahan et al., 2018): each client's update is clipped to `federated.dp_clip`, the
clipped updates are averaged with a fixed denominator, and Gaussian noise of standard deviation
`dp_noise * dp_clip / clients_per_round` is added: user-level differential privacy.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.data.federated import split_clients
from lmjax.eval.evaluate import evaluate
from lmjax.parallel import mesh as meshlib
from lmjax.train.logging import MetricLogger
from lmjax.train.setup import setup


def clients_per_round(f: ml_collections.ConfigDict) -> int:
    return max(1, round(f.fraction * f.clients))


def local_batches(clients: list[np.ndarray], chosen: np.ndarray, round_: int, seed: int,
                  epochs: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (m, steps, batch), valid (m, steps)): each chosen client's local batches.

    An epoch is a fresh permutation of the client's examples, cut into batches, the last one
    filled by wrapping around; clients with fewer steps than the longest are padded with
    steps marked invalid (no update). `batch=0`: the whole client as one batch.
    """
    sizes = [len(c) for c in clients]
    width = batch or max(sizes)
    steps = max(epochs * math.ceil(n / width) for n in sizes)  # fixed: one compilation
    idx = np.zeros((len(chosen), steps, width), np.int32)
    valid = np.zeros((len(chosen), steps), np.float32)
    for i, k in enumerate(chosen):
        own = clients[k]
        per_epoch = math.ceil(len(own) / width)
        rows = []
        for e in range(epochs):
            order = np.random.default_rng([seed, round_, int(k), e]).permutation(own)
            rows.append(np.resize(order, per_epoch * width).reshape(per_epoch, width))
        rows = np.concatenate(rows)
        idx[i, :len(rows)], valid[i, :len(rows)] = rows, 1.0
    return idx, valid


def make_round(task, client_lr: float, server_lr: float, dp_clip: float = 0.0,
               dp_noise: float = 0.0, clients_at_once: str = "vmap"):
    """(params, model_state, inputs, labels, idx, valid, weights, key) -> (params, model_state,
    mean client loss): one round of FedAvg over the clients in the leading axis of idx.

    `clients_at_once`: 'vmap' trains the sampled clients as one batched computation; 'map'
    (lax.map) one after another inside the same jitted round, which is faster where vmapping
    convolutions over per-client weights turns them into slow grouped convolutions (XLA:CPU).
    """
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)

    def client(params, model_state, idx, valid, key, inputs, labels):
        def step(carry, xs):
            p, ms = carry
            rows, ok, k = xs
            batch = {"inputs": inputs[rows], "labels": labels[rows], "ids": rows}
            (loss, (_, new_ms)), g = grad_fn(p, ms, batch, k)
            p = jax.tree.map(lambda w, gw: w - (client_lr * ok) * gw.astype(w.dtype), p, g)
            ms = jax.tree.map(lambda old, new: jnp.where(ok > 0, new, old), ms, new_ms)
            return (p, ms), loss * ok

        keys = jax.random.split(key, idx.shape[0])
        (p, ms), losses = jax.lax.scan(step, (params, model_state), (idx, valid, keys))
        return p, ms, losses.sum() / jnp.maximum(valid.sum(), 1.0)

    def round_(params, model_state, inputs, labels, idx, valid, weights, key):
        train_key, noise_key = jax.random.split(key)
        keys = jax.random.split(train_key, idx.shape[0])
        if clients_at_once == "vmap":
            new, states, losses = jax.vmap(client, in_axes=(None, None, 0, 0, 0, None, None))(
                params, model_state, idx, valid, keys, inputs, labels)
        else:
            new, states, losses = jax.lax.map(
                lambda xs: client(params, model_state, *xs, inputs, labels), (idx, valid, keys))
        deltas = jax.tree.map(lambda n, g: n - g[None], new, params)
        if dp_clip > 0:
            # Each client's update clipped to dp_clip (optax's per-example clip, with clients
            # as the examples), summed, over a fixed denominator.
            leaves, tree = jax.tree.flatten(deltas)
            summed, _ = optax.per_example_global_norm_clip(leaves, dp_clip)
            weights = jnp.full_like(weights, 1.0 / weights.shape[0])
            avg = jax.tree.unflatten(tree, [x / weights.shape[0] for x in summed])
        else:
            avg = jax.tree.map(lambda d: jnp.tensordot(weights, d, axes=1), deltas)
        if dp_clip > 0 and dp_noise > 0:
            leaves, tree = jax.tree.flatten(avg)
            keys = jax.random.split(noise_key, len(leaves))
            std = dp_noise * dp_clip / weights.shape[0]
            avg = jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape, x.dtype)
                                            for x, k in zip(leaves, keys)])
        params = jax.tree.map(lambda g, d: g + server_lr * d, params, avg)
        model_state = jax.tree.map(lambda s: jnp.tensordot(weights, s, axes=1), states)
        return params, model_state, jnp.dot(weights, losses)

    return round_


def check(cfg: ml_collections.ConfigDict, task) -> None:
    data = getattr(task, "data", None)
    if not hasattr(getattr(data, "train", None), "labels"):
        raise ValueError(f"python -m lmjax.federated trains classifiers of fixed examples "
                         f"(task=classify, e.g. configs/fashion_mnist.py); task={cfg.task!r} "
                         "is not one yet.")
    switches = {"privacy.dp": ("privacy", "dp"), "ensemble.members": ("ensemble", "members"),
                "robust.attack": ("robust", "attack"), "distill.teacher": ("distill", "teacher")}
    for name, (section, field) in switches.items():
        value = cfg[section][field] if section in cfg else None
        if value and not (field == "members" and value == 1):
            raise ValueError(f"{name}={value!r}: not combined with federated training yet; for "
                             "privacy use federated.dp_clip and federated.dp_noise (DP-FedAvg).")


def train_federated(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Runs (or resumes) federated training in `workdir`; returns the last metrics, the rounds
    it took to reach federated.target_accuracy, and the user-level epsilon under DP."""
    f = cfg.federated
    s = setup(cfg, log=log)
    check(cfg, s.task)
    train = s.task.data.train
    clients = split_clients(np.asarray(train.labels), f.clients, f.split, cfg.seed, f.alpha)
    sizes = np.array([len(c) for c in clients], np.float64)
    if f.local_batch == 0 and len(set(sizes)) > 1:
        raise ValueError("federated.local_batch=0 (each client one full batch, FedSGD) needs "
                         f"clients of equal size; split {f.split!r} gives {int(sizes.min())} to "
                         f"{int(sizes.max())}: give federated.local_batch > 0.")
    m = clients_per_round(f)
    mesh = s.mesh
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    over_clients = NamedSharding(mesh, P(("data", "fsdp")) if m % devices == 0 else P())
    everywhere = meshlib.replicated(mesh)
    inputs = jax.device_put(np.asarray(train.inputs), everywhere)
    labels = jax.device_put(np.asarray(train.labels), everywhere)
    round_fn = jax.jit(make_round(s.task, f.client_lr, f.server_lr, f.dp_clip, f.dp_noise,
                                  f.clients_at_once),
                       in_shardings=(s.shardings.params, s.shardings.model_state, everywhere,
                                     everywhere, over_clients, over_clients, everywhere,
                                     everywhere),
                       out_shardings=(s.shardings.params, s.shardings.model_state, everywhere))
    eval_step = s.eval_step()
    os.makedirs(workdir, exist_ok=True)
    rundir.write(workdir, s.task.run_assets())
    log(f"Federated: {len(clients)} clients ({f.split}; {int(sizes.min())}-{int(sizes.max())} "
        f"examples each), {m} per round, {f.local_epochs} local epoch(s) at batch "
        f"{f.local_batch or 'full'}, {f.rounds} rounds")
    summary = {}
    with Checkpointer(rundir.checkpoint_dir(workdir), keep=cfg.checkpoint.keep) as ckpt:
        start = ckpt.latest_step() if cfg.checkpoint.restore else None
        state = s.new_state() if start is None else s.restore(ckpt, start)
        progress = {} if start is None else ckpt.progress(start)
        start = start or 0
        if start:
            log(f"Resumed from round {start} ({ckpt.directory}).")
        logger = MetricLogger.for_run(cfg, workdir, echo=log, start_step=start)
        params, model_state = state.params, state.model_state
        reached = progress.get("rounds_to_target")
        base_key = jax.random.fold_in(s.dropout_rng, 1)
        t0 = time.time()
        for r in range(start, f.rounds):
            chosen = np.sort(np.random.default_rng([cfg.seed, r, 1]).choice(
                len(clients), m, replace=False))
            idx, valid = local_batches(clients, chosen, r, cfg.seed, f.local_epochs,
                                       f.local_batch)
            weights = (sizes[chosen] / sizes[chosen].sum()).astype(np.float32)
            params, model_state, loss = round_fn(params, model_state, inputs, labels, idx, valid,
                                                 weights, jax.random.fold_in(base_key, r))
            done = r + 1
            if done % f.eval_every and done != f.rounds:
                continue
            metrics = evaluate(s.task, eval_step, params, model_state, mesh,
                               cfg.train.eval_examples, cfg.train.batch_size)
            metrics["train_loss"] = float(loss)
            if f.dp_clip > 0 and f.dp_noise > 0:
                metrics["epsilon"] = user_epsilon(m / len(clients), f.dp_noise, done, f.delta)
            acc = metrics.get("accuracy")
            if reached is None and f.target_accuracy and acc is not None and \
                    acc >= f.target_accuracy:
                reached = done
            scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0
                       and not isinstance(v, (str, dict))}
            logger.write(done, "val", scalars,
                         f"round {done}: " + " | ".join(f"{k} {scalars[k]:.4f}" for k in
                                                        ("accuracy", "loss", "epsilon")
                                                        if k in scalars) +
                         f" | {time.time() - t0:.0f}s")
            state = state.replace(step=jnp.asarray(done, jnp.int32), params=params,
                                  model_state=model_state)
            ckpt.save(done, state, cfg.to_dict(), {"rounds_to_target": reached}, force=True)
            summary = dict(scalars, rounds=done, rounds_to_target=reached)
        logger.close()
    if "test" in s.task.splits and summary:
        test = evaluate(s.task, eval_step, params, model_state, mesh, 0, cfg.train.batch_size,
                        "test")
        summary["test_accuracy"] = float(test.get("accuracy", float("nan")))
        log(f"Test: accuracy {summary['test_accuracy']:.4f} after {summary['rounds']} rounds"
            + (f"; {f.target_accuracy:.2f} reached at round {reached}" if reached else ""))
    return summary


def user_epsilon(q: float, noise: float, rounds: int, delta: float) -> float:
    """User-level epsilon of DP-FedAvg: the sampled Gaussian mechanism over clients, composed
    over rounds (the same accountant as DP-SGD's, with clients in place of examples)."""
    from lmjax.privacy import accounting  # noqa: lazy: dp-accounting is an optional extra

    return float(accounting.epsilon(q, noise, rounds, delta))
