"""The training state, created directly sharded over the mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from lmjax.parallel.mesh import logical_shardings


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # variables not trained by gradients, e.g. batch-norm statistics ({} if none)


def split_variables(variables: dict) -> tuple[Any, dict]:
    """flax variables -> (params, the other collections)."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def state_shardings(task, tx: optax.GradientTransformation, mesh: Mesh, rng: jax.Array):
    """(abstract state, its NamedShardings), from the logical axis names the model declares."""
    boxed = jax.eval_shape(task.init_variables, rng)
    param_specs, state_specs = split_variables(nn.get_partition_spec(boxed))
    params, model_state = split_variables(nn.meta.unbox(boxed))
    abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                          opt_state=jax.eval_shape(tx.init, params), model_state=model_state)
    # Optimizer moments are sharded like their parameters; counters and scalars are replicated.
    # (optax.masked leaves MaskedNode placeholders where a transform does not apply.)
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    opt_specs = optax.tree_map_params(
        tx, lambda leaf, spec: leaf if masked(leaf) else spec, abstract.opt_state, param_specs,
        transform_non_params=lambda _: P(), is_leaf=lambda x: isinstance(x, P) or masked(x))
    specs = TrainState(step=P(), params=param_specs, opt_state=opt_specs, model_state=state_specs)
    shardings = logical_shardings(abstract, mesh, specs)  # uneven dims (few KV heads) replicate
    return abstract, shardings


def init_state(task, tx: optax.GradientTransformation, shardings: TrainState,
               rng: jax.Array) -> TrainState:
    """Initialises parameters and optimizer state in place on their devices (no full copy)."""

    def init(rng):
        params, model_state = split_variables(nn.meta.unbox(task.init_variables(rng)))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          model_state=model_state)

    return jax.jit(init, out_shardings=shardings)(rng)


def create_state(task, tx: optax.GradientTransformation, mesh: Mesh, rng: jax.Array):
    """(state, abstract state, shardings): a new state, sharded over `mesh`."""
    abstract, shardings = state_shardings(task, tx, mesh, rng)
    return init_state(task, tx, shardings, rng), abstract, shardings
