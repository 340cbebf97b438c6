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

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.extend import core as jcore
from jax.sharding import NamedSharding, PartitionSpec as P

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.data.corpora import load_corpus
from lmjax.data.federated import document_windows, split_clients
from lmjax.eval.evaluate import evaluate
from lmjax.parallel import mesh as meshlib
from lmjax.train.logging import MetricLogger, scalar_metrics
from lmjax.train.setup import setup


def clients_per_round(f: ml_collections.ConfigDict, num_clients: int = 0) -> int:
    """round(C x K), at least one; K is federated.clients unless the split fixes it."""
    return max(1, round(f.fraction * (num_clients or f.clients)))


def local_batches(clients: list[np.ndarray], chosen: np.ndarray, round_: int, seed: int,
                  epochs: int, batch: int, max_steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices (m, steps, batch), valid (m, steps)): each chosen client's local batches.

    An epoch is a fresh permutation of the client's examples, cut into batches, the last one
    filled by wrapping around; clients with fewer steps than the longest are padded with
    steps marked invalid (no update). `batch=0`: the whole client as one batch. `max_steps`
    > 0: at most that many steps (the first ones) per client.
    """
    sizes = [len(c) for c in clients]
    width = batch or max(sizes)
    steps = max(epochs * math.ceil(n / width) for n in sizes)  # fixed: one compilation
    if max_steps:
        steps = min(steps, max_steps)
    idx = np.zeros((len(chosen), steps, width), np.int32)
    valid = np.zeros((len(chosen), steps), np.float32)
    for i, k in enumerate(chosen):
        own = clients[k]
        per_epoch = math.ceil(len(own) / width)
        rows = []
        for e in range(epochs):
            order = np.random.default_rng([seed, round_, int(k), e]).permutation(own)
            rows.append(np.resize(order, per_epoch * width).reshape(per_epoch, width))
        rows = np.concatenate(rows)[:steps]
        idx[i, :len(rows)], valid[i, :len(rows)] = rows, 1.0
    return idx, valid


def example_batch(inputs: jax.Array, labels: jax.Array, rows: jax.Array) -> dict:
    """A classifier's batch: the examples at `rows`."""
    return {"inputs": inputs[rows], "labels": labels[rows], "ids": rows}


def lm_batch(seq_len: int):
    """A language model's batch from a token stream (`inputs`): the windows starting at `rows`,
    with their next tokens as targets."""
    def make(tokens: jax.Array, unused_labels, rows: jax.Array) -> dict:
        chunk = tokens[rows[:, None] + jnp.arange(seq_len + 1)[None, :]].astype(jnp.int32)
        return {"inputs": chunk[:, :-1], "targets": chunk[:, 1:]}

    return make


def make_round(task, client_lr: float, server_lr: float, dp_clip: float = 0.0,
               dp_noise: float = 0.0, clients_at_once: str = "vmap", mesh=None,
               canonical: bool = True, batch_fn=None):
    """(params, model_state, inputs, labels, idx, valid, weights, key) -> (params, model_state,
    mean client loss): one round of FedAvg over the clients in the leading axis of idx.

    `clients_at_once`: 'vmap' trains the sampled clients as one batched computation; 'map'
    (lax.map) one after another inside the same jitted round, which is faster for CNNs on CPU,
    where vmapping convolutions over per-client weights makes them slow grouped convolutions.
    With a `mesh` of several devices on its data axes, the clients are split over the devices
    with `shard_map` (each device runs its own share, vmapped or mapped) and the weighted sum of
    their updates is a `psum`. `canonical=False` turns off the convolution rewrite below (only
    to measure what it gains). `batch_fn(inputs, labels, rows)` makes a local batch from the
    example rows of one step (default: a classifier's examples; `lm_batch` for text).
    """
    batch_fn = batch_fn or example_batch
    grad_fn = jax.value_and_grad(canonical_convs(task.loss) if canonical else task.loss,
                                 has_aux=True)

    def client(params, model_state, idx, valid, key, inputs, labels):
        def step(carry, xs):
            p, ms = carry
            rows, ok, k = xs
            (loss, (_, new_ms)), g = grad_fn(p, ms, batch_fn(inputs, labels, rows), k)
            p = jax.tree.map(lambda w, gw: w - (client_lr * ok) * gw.astype(w.dtype), p, g)
            ms = jax.tree.map(lambda old, new: jnp.where(ok > 0, new, old), ms, new_ms)
            return (p, ms), loss * ok

        keys = jax.random.split(key, idx.shape[0])
        (p, ms), losses = jax.lax.scan(step, (params, model_state), (idx, valid, keys))
        return p, ms, losses.sum() / jnp.maximum(valid.sum(), 1.0)

    def some_clients(params, model_state, inputs, labels, idx, valid, keys, weights, total):
        """The weighted sums over these clients of (update, model_state, loss)."""
        if clients_at_once == "vmap":
            new, states, losses = jax.vmap(client, in_axes=(None, None, 0, 0, 0, None, None))(
                params, model_state, idx, valid, keys, inputs, labels)
        else:
            new, states, losses = jax.lax.map(
                lambda xs: client(params, model_state, *xs, inputs, labels), (idx, valid, keys))
        deltas = jax.tree.map(lambda n, g: n - g[None], new, params)
        if dp_clip > 0:
            # Each client's update clipped to dp_clip (optax's per-example clip, with clients
            # as the examples), summed, over a fixed denominator: the number sampled.
            leaves, tree = jax.tree.flatten(deltas)
            summed, _ = optax.per_example_global_norm_clip(leaves, dp_clip)
            avg = jax.tree.unflatten(tree, [x / total for x in summed])
            weights = jnp.full_like(weights, 1.0 / total)
        else:
            avg = jax.tree.map(lambda d: jnp.tensordot(weights, d, axes=1), deltas)
        states = jax.tree.map(lambda s: jnp.tensordot(weights, s, axes=1), states)
        return avg, states, jnp.dot(weights, losses)

    axes = _client_axes(mesh)

    def round_(params, model_state, inputs, labels, idx, valid, weights, key):
        train_key, noise_key = jax.random.split(key)
        m = idx.shape[0]
        keys = jax.random.split(train_key, m)
        if axes:
            def per_device(*args):
                return jax.lax.psum(some_clients(*args, m), axes)

            avg, model_state, loss = jax.shard_map(
                per_device, mesh=mesh, in_specs=(P(),) * 4 + (P(axes),) * 4,
                out_specs=P(), check_vma=False)(params, model_state, inputs, labels, idx, valid,
                                                keys, weights)
        else:
            avg, model_state, loss = some_clients(params, model_state, inputs, labels, idx,
                                                  valid, keys, weights, m)
        if dp_clip > 0 and dp_noise > 0:
            leaves, tree = jax.tree.flatten(avg)
            keys = jax.random.split(noise_key, len(leaves))
            std = dp_noise * dp_clip / m
            avg = jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape, x.dtype)
                                            for x, k in zip(leaves, keys)])
        params = jax.tree.map(lambda g, d: g + server_lr * d, params, avg)
        return params, model_state, loss

    return round_


def _client_axes(mesh) -> tuple[str, ...]:
    """The mesh axes the clients are split over: those of data parallelism, if more than one
    device; () runs every client on one device (or lets jit's partitioner place them)."""
    if mesh is None:
        return ()
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.shape and mesh.shape[a] > 1)
    return axes if math.prod(mesh.shape[a] for a in axes) > 1 else ()


# XLA:CPU rewrites convolutions into the canonical layout (NHWC x HWIO -> NHWC) that its fast
# convolution kernels take only in a program's entry computation, not inside loops
# (ConvCanonicalization): the backward convolutions of a step inside `lax.scan` fall back to
# a generic loop, 4x slower for the whole step (docs/federated.md). So the local steps
# differentiate a copy of the loss whose plain 2-D convolutions have a custom VJP that writes
# both backward convolutions in the canonical layout.
_NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # lhs, rhs, out specs of NHWC, HWIO, NHWC


def _conv(x, w, padding, precision):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, precision=precision,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def canonical_conv(x: jax.Array, w: jax.Array, padding: tuple, precision=None) -> jax.Array:
    """A stride-1 NHWC x HWIO convolution whose gradients are canonical convolutions too."""
    return _conv(x, w, padding, precision)


def _canonical_conv_fwd(x, w, padding, precision):
    return _conv(x, w, padding, precision), (x, w)


def _canonical_conv_bwd(padding, precision, res, g):
    x, w = res
    back = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(w.shape[:2], padding))
    dx = _conv(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), back, precision)
    # dw[a, b, i, o] = sum over n, h, w of x[n, h + a, w + b, i] g[n, h, w, o]: a convolution
    # with the input channels as the batch and the examples as the features.
    dw = _conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), padding, precision)
    return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


canonical_conv.defvjp(_canonical_conv_fwd, _canonical_conv_bwd)


def _is_plain_conv(params: dict) -> bool:
    d = params["dimension_numbers"]
    return (len(params["window_strides"]) == 2 and set(params["window_strides"]) == {1}
            and set(params["lhs_dilation"]) == {1} and set(params["rhs_dilation"]) == {1}
            and params["feature_group_count"] == 1 and params["batch_group_count"] == 1
            and params.get("preferred_element_type") is None
            and (tuple(d.lhs_spec), tuple(d.rhs_spec), tuple(d.out_spec)) == _NHWC)


def _eval_jaxpr(jaxpr, consts, *args):
    """jax.core.eval_jaxpr, with plain convolutions replaced by `canonical_conv`."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "conv_general_dilated" and _is_plain_conv(eqn.params):
            padding = tuple(tuple(p) for p in eqn.params["padding"])
            outs = [canonical_conv(*vals, padding, eqn.params["precision"])]
        elif name in ("pjit", "jit", "closed_call") and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            outs = _eval_jaxpr(inner.jaxpr, inner.consts, *vals)
        else:
            bind = eqn.primitive.get_bind_params(eqn.params)
            subfuns, bind = bind if isinstance(bind, tuple) else ((), bind)  # older jax: a pair
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*subfuns, *vals, **bind)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def canonical_convs(fn):
    """`fn` with its plain 2-D convolutions given canonical-layout gradients (same values)."""
    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped


def check(cfg: ml_collections.ConfigDict, task) -> None:
    data = getattr(task, "data", None)
    text = isinstance(getattr(data, "train", None), np.ndarray) and hasattr(task, "seq_len")
    if not text and not hasattr(getattr(data, "train", None), "labels"):
        raise ValueError(f"python -m lmjax.federated trains classifiers of fixed examples "
                         f"(task=classify, e.g. configs/fashion_mnist.py) and language models "
                         f"(task=lm, e.g. configs/gpt.py:fedavg); task={cfg.task!r} is neither.")
    if text != (cfg.federated.split == "groups"):
        raise ValueError(f"federated.split={cfg.federated.split!r}: " + (
            "a language model's clients are its training documents (one per play of "
            "Shakespeare): use federated.split=groups." if text else
            "'groups' is for language models (one client per document); a classifier's "
            "examples are split with 'iid', 'shards' or 'dirichlet'."))
    switches = {"privacy.dp": ("privacy", "dp"), "ensemble.members": ("ensemble", "members"),
                "robust.attack": ("robust", "attack"), "distill.teacher": ("distill", "teacher")}
    for name, (section, field) in switches.items():
        value = cfg[section][field] if section in cfg else None
        if value and not (field == "members" and value == 1):
            raise ValueError(f"{name}={value!r}: not combined with federated training yet; for "
                             "privacy use federated.dp_clip and federated.dp_noise (DP-FedAvg).")


def client_data(cfg: ml_collections.ConfigDict, task):
    """(each client's example rows, inputs, labels, batch_fn) of a classifier or a language
    model: for a classifier the rows are examples split by federated.split; for a language
    model, the starts of windows in the token stream, one client per training document."""
    f = cfg.federated
    train = task.data.train
    if f.split != "groups":
        clients = split_clients(np.asarray(train.labels), f.clients, f.split, cfg.seed, f.alpha)
        return clients, np.asarray(train.inputs), np.asarray(train.labels), example_batch
    tokenizer = task.data.tokenizer
    eot = getattr(tokenizer, "eot_id", None)
    separator = 1 if eot is not None else len(tokenizer.encode("\n"))  # as data/prepare.py
    docs = load_corpus(cfg.data).train
    lengths = [len(tokenizer.encode(d)) + separator for d in docs]
    clients = document_windows(lengths, len(train), task.seq_len)
    return clients, np.asarray(train), np.zeros((1,), np.int32), lm_batch(task.seq_len)


def train_federated(cfg: ml_collections.ConfigDict, workdir: str, log=print) -> dict:
    """Runs (or resumes) federated training in `workdir`; returns the last metrics, the rounds
    it took to reach federated.target_accuracy, and the user-level epsilon under DP."""
    f = cfg.federated
    s = setup(cfg, log=log)
    check(cfg, s.task)
    clients, inputs, labels, batch_fn = client_data(cfg, s.task)
    sizes = np.array([len(c) for c in clients], np.float64)
    if f.local_batch == 0 and len(set(sizes)) > 1:
        raise ValueError("federated.local_batch=0 (each client one full batch, FedSGD) needs "
                         f"clients of equal size; split {f.split!r} gives {int(sizes.min())} to "
                         f"{int(sizes.max())}: give federated.local_batch > 0.")
    m = clients_per_round(f, len(clients))
    mesh = s.mesh
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    over_clients = NamedSharding(mesh, P(("data", "fsdp")) if m % devices == 0 else P())
    everywhere = meshlib.replicated(mesh)
    inputs, labels = jax.device_put(inputs, everywhere), jax.device_put(labels, everywhere)
    round_fn = jax.jit(make_round(s.task, f.client_lr, f.server_lr, f.dp_clip, f.dp_noise,
                                  f.clients_at_once, mesh if m % devices == 0 else None,
                                  batch_fn=batch_fn),
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
        seen = progress.get("examples_seen", 0)  # examples (LM: windows) of all local steps
        base_key = jax.random.fold_in(s.dropout_rng, 1)
        t0 = time.time()
        for r in range(start, f.rounds):
            chosen = np.sort(np.random.default_rng([cfg.seed, r, 1]).choice(
                len(clients), m, replace=False))
            idx, valid = local_batches(clients, chosen, r, cfg.seed, f.local_epochs,
                                       f.local_batch, f.local_steps)
            weights = (sizes[chosen] / sizes[chosen].sum()).astype(np.float32)
            params, model_state, loss = round_fn(params, model_state, inputs, labels, idx, valid,
                                                 weights, jax.random.fold_in(base_key, r))
            seen += int(valid.sum()) * idx.shape[2]
            done = r + 1
            if done % f.eval_every and done != f.rounds:
                continue
            metrics = evaluate(s.task, eval_step, params, model_state, mesh,
                               cfg.train.eval_examples, cfg.train.batch_size)
            metrics["train_loss"] = float(loss)
            metrics["examples_seen"] = seen
            if f.dp_clip > 0 and f.dp_noise > 0:
                metrics["epsilon"] = user_epsilon(m / len(clients), f.dp_noise, done, f.delta)
            acc = metrics.get("accuracy")
            if reached is None and f.target_accuracy and acc is not None and \
                    acc >= f.target_accuracy:
                reached = done
            scalars, shown = scalar_metrics(metrics)
            logger.write(done, "val", scalars, f"round {done}: {shown} | {time.time() - t0:.0f}s")
            state = state.replace(step=jnp.asarray(done, jnp.int32), params=params,
                                  model_state=model_state)
            ckpt.save(done, state, cfg.to_dict(),
                      {"rounds_to_target": reached, "examples_seen": seen}, force=True)
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
