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
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    if grad_accum == 1:
        (loss, _), grads = grad_fn(state.params, batch, rng)
    else:
        # Micro-batches in a scan: one optimizer update per step, one dispatch, bounded memory.
        micro = jax.tree.map(
            lambda x: x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:]), batch)

        def accumulate(carry, xs):
            loss_sum, grad_sum = carry
            i, mb = xs
            (loss, _), grads = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
            return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros(()), zeros),
                                        (jnp.arange(grad_accum), micro))
        loss, grads = loss / grad_accum, jax.tree.map(lambda g: g / grad_accum, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def jit_train_step(task, tx, schedule, grad_accum, base_rng, state_shardings, mesh):
    fn = functools.partial(train_step, task=task, tx=tx, schedule=schedule,
                           grad_accum=grad_accum, base_rng=base_rng)
    return jax.jit(fn, in_shardings=(state_shardings, batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)


def jit_eval_step(task, param_shardings, mesh):
    return jax.jit(task.eval_sums, in_shardings=(param_shardings, batch_sharding(mesh)),
                   out_shardings=replicated(mesh))
