"""Federated averaging (McMahan et al., 2017), simulated on one machine, as a training switch.

With a `federated` section one training step of the one loop is one round: the server samples
`fraction` of the clients; each sampled client runs `local_epochs` epochs of plain SGD on its
own examples; minus the averaged change of the clients' models (weighted by their sizes) is the
round's "gradient", which the server's optimizer, the `optim` section, applies: FedAvg is plain
SGD at rate 1 (the presets' choice: the global model moves to the average), and adam or a
momentum SGD give FedAdam / FedAvgM (Reddi et al., 2021). All the sampled clients train at once:
`vmap` (or
`lax.map`) over clients, `lax.scan` over their local steps, inside the one jitted step, with the
clients split over the mesh's data devices by `shard_map`. FedSGD is one epoch with each client
as one batch (`local_batch=0`).

Everything else is the shared loop's: evaluation every `train.eval_every` rounds, checkpoints
(SIGTERM too), the compatibility check on resume, early stopping. The clients sampled and their
batches are functions of (seed, round), so a resumed run repeats the rounds it would have run.

DP-FedAvg (McMahan et al., 2018) with the `privacy` section: each client's update is clipped to
`privacy.clip_norm`, the clipped updates are averaged over the number sampled, and Gaussian noise
of std `noise_multiplier * clip_norm / clients_per_round` is added: user-level privacy, its
epsilon logged at every evaluation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from lmjax.config import require
from lmjax.data.clients import SPLITS, split_clients
from lmjax.parallel.cpu_convs import canonical_convs
from lmjax.parallel.mesh import local_rows
from lmjax.privacy import accounting
from lmjax.tasks.wrapper import TaskWrapper

SECTION = "federated"
STATE_DEFINING = {"federated.clients": None}  # the server's optimizer state, the client split
# Switches whose training the clients' plain local SGD would silently drop.
NOT_COMBINED = {"ensemble": lambda c: c.ensemble.members > 1, "robust": lambda c: c.robust.attack,
                "distill": lambda c: c.distill.teacher, "prune": lambda c: c.prune.target_sparsity,
                "lora": lambda c: c.lora.rank}


def section() -> ml_collections.ConfigDict:
    f = ml_collections.ConfigDict()
    f.clients = 100                # K (language models: one client per training document)
    f.fraction = 0.1               # C: share of clients sampled each round (train.num_steps rounds)
    f.local_epochs = 5             # E
    f.local_batch = 10             # B; 0: each client's data as one batch (FedSGD with E=1)
    f.local_steps = 0              # > 0: at most this many local steps per client and round
    f.client_lr = 0.05             # clients run plain SGD (the server: the optim section)
    f.split = "iid"                # 'iid' | 'shards' (2 label shards per client) | 'dirichlet'
    #                                | 'groups' (language models: one client per document)
    f.alpha = 0.5                  # with dirichlet: smaller is less IID
    f.clients_at_once = "vmap"     # 'vmap' (one batched computation) | 'map' (in turn, in
    #                                the same jitted round: faster for CNNs on CPU)
    return f


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    return True  # the section itself asks for federated training


def check(cfg: ml_collections.ConfigDict) -> None:
    f = cfg.federated
    require(f.clients > 0, f"federated.clients={f.clients}: must be positive.")
    require(0 < f.fraction <= 1, f"federated.fraction={f.fraction}: the share of clients "
            "sampled per round, in (0, 1].")
    require(f.local_epochs > 0 and f.local_batch >= 0 and f.local_steps >= 0,
            "federated.local_epochs must be positive, local_batch >= 0 (0: the whole client as "
            "one batch) and local_steps >= 0 (0: no cap).")
    require(f.client_lr > 0, f"federated.client_lr={f.client_lr}: must be positive.")
    require(f.split in SPLITS, f"federated.split={f.split!r}: use 'iid', 'shards' or "
            "'dirichlet' (classifiers), 'groups' (language models: one client per document).")
    require(f.clients_at_once in ("vmap", "map"), f"federated.clients_at_once="
            f"{f.clients_at_once!r}: use 'vmap' or 'map'.")
    require(cfg.task in ("classify", "lm"), f"federated training covers classifiers of fixed "
            f"examples (task=classify, e.g. configs/fashion_mnist.py:fedavg) and language models "
            f"(task=lm, e.g. configs/gpt.py:fedavg), not task={cfg.task!r}.")
    require((cfg.task == "lm") == (f.split == "groups"), f"federated.split={f.split!r}: " + (
        "a language model's clients are its training documents (one per play of Shakespeare): "
        "use federated.split=groups." if cfg.task == "lm" else
        "'groups' is for language models (one client per document); a classifier's examples "
        "are split with 'iid', 'shards' or 'dirichlet'."))
    require(cfg.train.grad_accum == 1, "train.grad_accum: a federated round is one step over "
            "the sampled clients; leave it at 1.")
    for name, on in NOT_COMBINED.items():
        require(name not in cfg or not on(cfg), f"the {name} switch is not combined with "
                "federated training (the clients train with plain SGD); for privacy use "
                "privacy.dp=True (DP-FedAvg).")


def clients_per_round(f: ml_collections.ConfigDict, num_clients: int) -> int:
    """round(C x K), at least one."""
    return max(1, round(f.fraction * num_clients))


def local_batches(clients: list[np.ndarray], chosen: np.ndarray, round_: int, seed: int,
                  epochs: int, batch: int, max_steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indices (m, steps, batch), valid (m, steps)): each chosen client's local batches.

    An epoch is a fresh permutation of the client's examples, cut into batches, the last one
    filled by wrapping around; clients with fewer steps than the longest are padded with
    steps marked invalid (no update). `batch=0`: the whole client as one batch. `max_steps`
    > 0: at most that many steps (the first ones) per client.
    """
    steps, width = _shape(clients, epochs, batch, max_steps)
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


def _shape(clients, epochs: int, batch: int, max_steps: int) -> tuple[int, int]:
    """(local steps, batch width): fixed for the run, so the round compiles once."""
    width = batch or max(len(c) for c in clients)
    steps = max(epochs * math.ceil(len(c) / width) for c in clients)
    return (min(steps, max_steps) if max_steps else steps), width


def make_round(task, client_lr: float, dp_clip: float = 0.0, clients_at_once: str = "vmap",
               mesh=None, canonical: bool = True):
    """(params, model_state, arrays, idx, valid, weights, key, sampled) -> (averaged update,
    model_state, mean client loss): one round of FedAvg over the clients in the leading axis of
    idx, each client gathering its batches from `arrays` (the training examples, on the
    device) with `task.gather`; `sampled` (static) is the number of real clients, the
    denominator of DP-FedAvg's average.

    `clients_at_once`: 'vmap' trains the sampled clients as one batched computation; 'map'
    (lax.map) one after another inside the same jitted round, which is faster for CNNs on CPU,
    where vmapping convolutions over per-client weights makes them slow grouped convolutions.
    With a `mesh` of several devices on its data axes, the clients are split over the devices
    with `shard_map` (each device runs its own share) and the weighted sum of their updates is a
    `psum`. `canonical=False` turns off the convolution rewrite (only to measure what it gains).
    """
    loss = canonical_convs(task.loss) if canonical else task.loss
    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def client(params, model_state, arrays, idx, valid, key):
        def step(carry, xs):
            p, ms = carry
            rows, ok, k = xs
            (value, (_, new_ms)), g = grad_fn(p, ms, task.gather(arrays, rows), k)
            p = jax.tree.map(lambda w, gw: w - (client_lr * ok) * gw.astype(w.dtype), p, g)
            ms = jax.tree.map(lambda old, new: jnp.where(ok > 0, new, old), ms, new_ms)
            return (p, ms), value * ok

        keys = jax.random.split(key, idx.shape[0])
        (p, ms), losses = jax.lax.scan(step, (params, model_state), (idx, valid, keys))
        return p, ms, losses.sum() / jnp.maximum(valid.sum(), 1.0)

    def some_clients(params, model_state, arrays, idx, valid, keys, weights, total):
        """The weighted sums over these clients of (update, model_state, loss)."""
        if clients_at_once == "vmap":
            new, states, losses = jax.vmap(client, in_axes=(None, None, None, 0, 0, 0))(
                params, model_state, arrays, idx, valid, keys)
        else:
            new, states, losses = jax.lax.map(
                lambda xs: client(params, model_state, arrays, *xs), (idx, valid, keys))
        deltas = jax.tree.map(lambda n, g: n - g[None], new, params)
        if dp_clip > 0:
            # Each client's update clipped to dp_clip (optax's per-example clip, with clients
            # as the examples), summed, over a fixed denominator: the number sampled. (Padding
            # clients take no step: their update is exactly zero.)
            leaves, tree = jax.tree.flatten(deltas)
            summed, _ = optax.per_example_global_norm_clip(leaves, dp_clip)
            avg = jax.tree.unflatten(tree, [x / total for x in summed])
            weights = jnp.where(weights > 0, 1.0 / total, 0.0)  # model states: equal weights
        else:
            avg = jax.tree.map(lambda d: jnp.tensordot(weights, d, axes=1), deltas)
        states = jax.tree.map(lambda s: jnp.tensordot(weights, s, axes=1), states)
        return avg, states, jnp.dot(weights, losses)

    axes = _client_axes(mesh)

    def round_(params, model_state, arrays, idx, valid, weights, key, sampled):
        keys = jax.random.split(key, idx.shape[0])
        if not axes:
            return some_clients(params, model_state, arrays, idx, valid, keys, weights, sampled)

        def per_device(*args):
            return jax.lax.psum(some_clients(*args, sampled), axes)

        return jax.shard_map(per_device, mesh=mesh, in_specs=(P(),) * 3 + (P(axes),) * 4,
                             out_specs=P(), check_vma=False)(params, model_state, arrays, idx,
                                                              valid, keys, weights)

    return round_


def _client_axes(mesh) -> tuple[str, ...]:
    """The mesh axes the clients are split over: those of data parallelism, if more than one
    device; () runs every client where jit places them."""
    if mesh is None:
        return ()
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.shape and mesh.shape[a] > 1)
    return axes if math.prod(mesh.shape[a] for a in axes) > 1 else ()


def user_epsilon(q: float, noise: float, rounds: int, delta: float) -> float:
    """User-level epsilon of DP-FedAvg: the sampled Gaussian mechanism over clients, composed
    over rounds (the same accountant as DP-SGD's, with clients in place of examples)."""
    return float(accounting.epsilon(q, noise, rounds, delta))


class FederatedTask(TaskWrapper):
    def __init__(self, inner, cfg: ml_collections.ConfigDict, mesh=None, log=print,
                 training: bool = True):
        super().__init__(inner)
        f = self.section = cfg.federated
        self.seed, self.rounds = cfg.seed, cfg.train.num_steps
        privacy = cfg.get("privacy")
        self.dp = privacy if privacy is not None and privacy.dp else None
        self.mesh = mesh
        self.clients = None
        if not training:  # a saved run: only the optimizer's structure matters here
            return
        self.clients = (inner.example_groups() if f.split == "groups" else
                        split_clients(inner.labels("train"), f.clients, f.split, cfg.seed,
                                      f.alpha))
        self.sizes = np.array([len(c) for c in self.clients], np.float64)
        if f.local_batch == 0 and len(set(self.sizes)) > 1:
            raise ValueError("federated.local_batch=0 (each client one full batch, FedSGD) needs "
                             f"clients of equal size; split {f.split!r} gives "
                             f"{int(self.sizes.min())} to {int(self.sizes.max())}: give "
                             "federated.local_batch > 0.")
        self.per_round = clients_per_round(f, len(self.clients))
        devices = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
        # Padding clients (weight 0, no valid step) fill the last device's share.
        self.padded = -(-self.per_round // devices) * devices
        self.sigma = 0.0
        if self.dp is not None:
            self.sigma = float(self.dp.noise_multiplier)
            if self.dp.target_epsilon > 0:
                self.sigma = accounting.calibrate(self.dp.target_epsilon, self._rate(),
                                                  self.rounds, float(self.dp.delta))
        steps, width = _shape(self.clients, f.local_epochs, f.local_batch, f.local_steps)
        log(f"Federated: {len(self.clients)} clients ({f.split}; {int(self.sizes.min())}-"
            f"{int(self.sizes.max())} examples each), {self.per_round} per round, "
            f"{f.local_epochs} local epoch(s) at batch {f.local_batch or 'full'} ({steps} local "
            f"steps of {width}), {self.rounds} rounds"
            + (f"; DP-FedAvg: clip {self.dp.clip_norm}, noise multiplier {self.sigma:.4g}"
               if self.dp is not None else ""))
        self._round = None

    def _rate(self) -> float:
        return self.per_round / len(self.clients)

    def chosen(self, round_: int) -> np.ndarray:
        """The clients sampled in `round_`: a function of (seed, round)."""
        return np.sort(np.random.default_rng([self.seed, round_, 1]).choice(
            len(self.clients), self.per_round, replace=False))

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        """The round's clients (padded to a multiple of the devices) and their local batches."""
        f, chosen = self.section, self.chosen(step)
        idx, valid = local_batches(self.clients, chosen, step, self.seed, f.local_epochs,
                                   f.local_batch, f.local_steps)
        weights = (self.sizes[chosen] / self.sizes[chosen].sum()).astype(np.float32)
        pad = self.padded - len(chosen)
        batch = {"idx": np.pad(idx, ((0, pad), (0, 0), (0, 0))),
                 "valid": np.pad(valid, ((0, pad), (0, 0))), "weights": np.pad(weights, (0, pad))}
        return {k: local_rows(v, process_index, process_count) for k, v in batch.items()}

    def value_and_grad(self):
        """What the train step differentiates becomes a round: the 'gradient' is minus the
        clients' averaged update (plus DP-FedAvg's noise), which the server's optimizer (the
        optim section) applies."""
        if self._round is None:
            f = self.section
            arrays = jax.tree.map(jnp.asarray, self.inner.example_arrays("train"))
            if self.mesh is not None:  # every device gathers its clients' batches locally
                arrays = jax.device_put(arrays, NamedSharding(self.mesh, P()))
            self._arrays = arrays
            self._round = make_round(self.inner, f.client_lr,
                                     self.dp.clip_norm if self.dp is not None else 0.0,
                                     f.clients_at_once, self.mesh)

        def round_step(params, model_state, batch, rng):
            train_key, noise_key = jax.random.split(rng)
            avg, model_state, loss = self._round(params, model_state, self._arrays,
                                                 batch["idx"], batch["valid"], batch["weights"],
                                                 train_key, self.per_round)
            if self.dp is not None and self.sigma > 0:
                leaves, tree = jax.tree.flatten(avg)
                keys = jax.random.split(noise_key, len(leaves))
                std = self.sigma * self.dp.clip_norm / self.per_round
                avg = jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape, x.dtype)
                                                for x, k in zip(leaves, keys)])
            grads = jax.tree.map(lambda d: -d, avg)
            return (loss, ({}, model_state)), grads

        return round_step

    def examples_seen(self, step: int) -> int:
        """Examples (a language model's: windows) in all local steps of rounds 0..step-1."""
        f = self.section
        steps, width = _shape(self.clients, f.local_epochs, f.local_batch, f.local_steps)
        per_client = np.minimum([f.local_epochs * math.ceil(n / width) for n in self.sizes],
                                steps)
        return int(sum(per_client[self.chosen(r)].sum() for r in range(step)) * width)

    def extra_metrics(self, step: int) -> dict:
        out = self.inner.extra_metrics(step)
        if self.clients is None:
            return out
        out["examples_seen"] = self.examples_seen(step)
        if self.dp is not None and self.sigma > 0:
            out["epsilon"] = user_epsilon(self._rate(), self.sigma, int(step),
                                          float(self.dp.delta))
        return out

    def describe(self) -> str:
        return f"{self.inner.describe()}; federated averaging, {self.per_round} clients a round"


def wrap(task, cfg, assets=None, log=print, mesh=None):
    return FederatedTask(task, cfg, mesh, log, training=assets is None)
