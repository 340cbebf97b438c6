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
# MLP width and vocabulary, and the key/value heads of grouped-query attention. Axes not listed
# (and None) are replicated; so is a dimension its mesh axes do not divide (`logical_shardings`):
# two key/value heads on a tensor axis of 4 are kept whole on every device.
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
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
    return tuple(num_devices // known if s == -1 else s for s in sizes)


def make_mesh(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
    """The mesh over `devices` (default: all); a smaller explicit mesh takes the first devices."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(cfg, len(devices))
    size = int(np.prod(shape))
    if size < len(devices):
        if jax.process_count() > 1:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} uses {size} of "
                             f"{len(devices)} devices; a multi-host mesh must use them all.")
        devices = devices[:size]
    # Auto axes: XLA propagates shardings from the parameters and the batch (the pjit model).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_shardings(boxed_tree, mesh: Mesh, specs=None):
    """NamedShardings for a tree of nn.Partitioned (or plain) leaves, by the logical rules; a
    dimension the assigned mesh axes do not divide evenly is replicated instead. `specs`: the
    logical PartitionSpecs when `boxed_tree` is a tree of plain shapes (jax.ShapeDtypeStruct)
    whose names were taken off already."""
    if specs is None:
        specs = nn.get_partition_spec(boxed_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)
    return jax.tree.map(lambda s, x: _fitted(s, x.shape), shardings,
                        nn.meta.unbox(boxed_tree), is_leaf=lambda x: isinstance(x, NamedSharding))


def _fitted(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
    """`sharding` with every mesh axis that does not divide its dimension dropped."""
    axes = []
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    for dim, names in zip(shape, spec):
        size = int(np.prod([sharding.mesh.shape[n] for n in
                            ((names,) if isinstance(names, str) else names or ())]))
        axes.append(names if dim % size == 0 else None)
    return NamedSharding(sharding.mesh, P(*axes))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh) -> dict:
    """Each process contributes its own rows; together they form the batch-sharded global batch."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def local_rows(x: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's equal share of the rows of a global batch (all of them on one host)."""
    per_host = len(x) // process_count
    return x[process_index * per_host:(process_index + 1) * per_host]


def split_host_cpu(cfg: ml_collections.ConfigDict) -> None:
    """Presents a CPU-only host as `mesh.host_cpu_devices` devices (-1: one per core).

    XLA's CPU backend parallelises the small matrices of a small model poorly inside one device;
    data parallelism over one device per core is much faster (1.4x on 2 cores, see
    docs/experiments.md). It only changes the CPU platform, so GPU and TPU hosts are unaffected.
    Must run before JAX starts its backends; an explicit XLA_FLAGS device count wins, and so do
    simulated hosts (distributed.cpu_devices_per_process).
    """
    import os

    num_devices = cfg.mesh.host_cpu_devices
    already_set = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if cfg.distributed.cpu_devices_per_process or num_devices == 0 or already_set:
        return
    if num_devices < 0:
        num_devices = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    # Through XLA_FLAGS rather than jax_num_cpu_devices: with the latter we saw the two devices'
    # all-reduce deadlock mid-run (jax 0.10.2).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={num_devices}").strip()


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


def bytes_per_device(tree) -> dict:
    """Bytes each device holds of a tree of (possibly sharded) arrays: {device: bytes}."""
    held: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held
