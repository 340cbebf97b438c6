"""The training and evaluation steps: pure functions, jitted once with explicit shardings."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from lmjax.parallel.mesh import batch_sharding, replicated
from lmjax.train.state import TrainState


def train_step(state: TrainState, batch: dict, *, task, tx, schedule, grad_accum: int,
               base_rng: jax.Array) -> tuple[TrainState, dict]:
    # Dropout noise depends only on (seed, step): resumed runs repeat it exactly.
    rng = jax.random.fold_in(base_rng, state.step)
    grad_fn = task.value_and_grad()
    if grad_accum == 1:
        (loss, (aux, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
    else:
        # Micro-batches in a scan: one optimizer update per step, one dispatch, bounded memory.
        # Model state (batch-norm statistics) is threaded through them in order.
        micro = jax.tree.map(
            lambda x: x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:]), batch)

        def accumulate(carry, xs):
            sums, model_state = carry
            i, mb = xs
            (loss, (aux, model_state)), grads = grad_fn(state.params, model_state, mb,
                                                        jax.random.fold_in(rng, i))
            return (jax.tree.map(jnp.add, sums, (loss, aux, grads)), model_state), None

        first = jax.tree.map(lambda x: x[0], micro)
        (loss, (aux, _)), grads = jax.eval_shape(grad_fn, state.params, state.model_state, first,
                                                 rng)
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (loss, aux, grads))
        (sums, model_state), _ = jax.lax.scan(accumulate, (zeros, state.model_state),
                                              (jnp.arange(grad_accum), micro))
        loss, aux, grads = jax.tree.map(lambda x: x / grad_accum, sums)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                      model_state=model_state), metrics


def jit_train_step(task, tx, schedule, grad_accum, base_rng, state_shardings, mesh):
    fn = functools.partial(train_step, task=task, tx=tx, schedule=schedule,
                           grad_accum=grad_accum, base_rng=base_rng)
    return jax.jit(fn, in_shardings=(state_shardings, batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)


def jit_eval_step(task, state_shardings, mesh):
    """(params, model_state, batch) -> {'sums': ..., 'examples': ...}, replicated on every device."""
    return jax.jit(task.eval_outputs,
                   in_shardings=(state_shardings.params, state_shardings.model_state,
                                 batch_sharding(mesh)),
                   out_shardings=replicated(mesh))
