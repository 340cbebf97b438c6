"""The device mesh, the one table from logical axes to mesh axes, and multi-host start-up."""

from __future__ import annotations

import jax
import flax.linen as nn
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (the MaxText idea). Data parallelism splits the batch over 'data' and
# 'fsdp'; FSDP also splits the 'embed' dimension of every weight; tensor parallelism splits heads,
# MLP width and vocabulary. Axes not listed (and None) are replicated.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("length", None),
    ("layers", None),
)


def mesh_shape(cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves the `mesh` section's sizes, one of which may be -1 (fill with the rest)."""
    sizes = [int(getattr(cfg, a)) for a in MESH_AXES]
    fill = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
    bad = [f"mesh.{a}={s}" for a, s in zip(MESH_AXES, sizes) if s == 0 or s < -1]
    if bad or len(fill) > 1:
        raise ValueError(f"{', '.join(bad) or 'mesh'}: each mesh axis needs a positive size, "
                         "and at most one may be -1 (use all remaining devices).")
    known = int(np.prod([s for s in sizes if s != -1]))
    if num_devices % known:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs a multiple of {known} devices, "
            f"but {num_devices} are available: change mesh.data/fsdp/tensor.")
    sizes = [num_devices // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} uses {int(np.prod(sizes))} devices, but "
            f"{num_devices} are available: set one of mesh.data/fsdp/tensor to -1 or make the "
            "product equal the device count.")
    return tuple(sizes)


def make_mesh(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(cfg, len(devices))
    # Auto axes: XLA propagates shardings from the parameters and the batch (the pjit model).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree of nn.Partitioned (or plain) leaves, by the logical rules."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins the hosts of a pod slice or GPU cluster into one JAX runtime, when asked to.

    On Cloud TPU and SLURM the arguments are found automatically; elsewhere (several processes on
    one machine, for instance) give coordinator_address, num_processes and process_id.
    """
    if not cfg.initialize:
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    if cfg.cpu_devices_per_process:
        # Simulated hosts on one machine: CPU devices that talk through gloo collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", cfg.cpu_devices_per_process)
    jax.distributed.initialize(**kwargs)
