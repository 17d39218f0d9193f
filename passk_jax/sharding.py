"""Device mesh, logical-axis rules and multi-host set-up (JAX SPMD).

The mesh has three named axes: ``data`` (pure data parallelism: replicated parameters),
``fsdp`` (data parallelism with parameters and optimizer state sharded over it, ZeRO-3 style) and
``tensor`` (model parallelism over heads / feed-forward / vocabulary). Parameters carry *logical* axis
names (``passk_jax.models.gemma2.param_logical_axes``); one rules table maps each logical name to mesh
axes. Batches are sharded over ``("data", "fsdp")`` on their leading axis.

A dimension whose size is not divisible by its mesh axes falls back to replication on that dimension
(e.g. 4 kv heads on ``tensor = 8``), so any config runs on any mesh.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXES",
    "DEFAULT_RULES",
    "batch_sharding",
    "logical_to_sharding",
    "make_mesh",
    "maybe_initialize_distributed",
    "param_shardings",
    "replicated",
    "shard_host_array",
]

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (or None = replicated).
DEFAULT_RULES: dict[str, Any] = {
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
}


def maybe_initialize_distributed() -> None:
    """Calls ``jax.distributed.initialize()`` when the environment asks for several processes.

    Triggers: ``PASSK_COORDINATOR`` (``host:port``) with ``PASSK_NUM_PROCESSES`` and
    ``PASSK_PROCESS_ID`` (explicit, e.g. several processes on one CPU machine, which also switches the
    CPU collectives to gloo), or a cluster environment JAX detects by itself (TPU pods, SLURM, ...)
    signalled by ``PASSK_DISTRIBUTED=1``. Idempotent.
    """
    if getattr(maybe_initialize_distributed, "_done", False):
        return
    coord = os.environ.get("PASSK_COORDINATOR")
    if coord:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=int(os.environ["PASSK_NUM_PROCESSES"]),
            process_id=int(os.environ["PASSK_PROCESS_ID"]),
        )
    elif os.environ.get("PASSK_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    maybe_initialize_distributed._done = True


def make_mesh(shape: Mapping[str, int] | Sequence[int] | None = None, devices=None) -> Mesh:
    """A ``Mesh`` with axes ``(data, fsdp, tensor)``.

    Args:
      shape: sizes per axis (dict or 3-sequence); ``-1`` for at most one axis means "the rest of the
        devices". Default: every device on ``fsdp``.
      devices: devices to use (default ``jax.devices()``, all processes).

    Returns:
      The mesh. Raises ``ValueError`` if the sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    if shape is None:
        sizes = [1, -1, 1]
    elif isinstance(shape, Mapping):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"mesh `shape` has unknown axes {sorted(unknown)}; use {MESH_AXES}.")
        sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    else:
        sizes = [int(s) for s in shape]
    if len(sizes) != 3 or sizes.count(-1) > 1:
        raise ValueError(f"mesh `shape` needs 3 sizes with at most one -1, got {shape!r}.")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        sizes[sizes.index(-1)] = len(devices) // max(known, 1)
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh `shape` {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
            f"but {len(devices)} are available."
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def _axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_sharding(
    logical: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, Any] | None = None,
) -> NamedSharding:
    """Maps one array's logical axis names to a ``NamedSharding`` on ``mesh``.

    Each mesh axis is used at most once per array; a dimension not divisible by its mesh axes stays
    replicated.
    """
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name, dim in zip(logical, shape):
        axes = rules.get(name) if name is not None else None
        names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        names = tuple(a for a in names if a not in used and mesh.shape.get(a, 1) > 1)
        if names and dim % _axis_size(mesh, names) == 0:
            used.update(names)
            spec.append(names[0] if len(names) == 1 else names)
        else:
            spec.append(None)
    return NamedSharding(mesh, PartitionSpec(*spec))


def tree_shardings(shapes: Any, logical_axes: Any, mesh: Mesh, rules=None) -> Any:
    """``logical_to_sharding`` over a tree of shapes (arrays or ShapeDtypeStructs) and axis names."""
    is_axes = lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)
    return jax.tree.map(
        lambda axes, x: logical_to_sharding(axes, x.shape, mesh, rules),
        logical_axes,
        shapes,
        is_leaf=is_axes,
    )


def param_shardings(model_config: Any, mesh: Mesh, rules: Mapping[str, Any] | None = None) -> Any:
    """The ``NamedSharding`` of every Gemma-2 parameter of ``model_config`` on ``mesh`` (by the
    parameters' logical axes and ``rules``): what the train state, the loaders and the planner use."""
    import functools

    from passk_jax.models import gemma2

    abstract = jax.eval_shape(
        functools.partial(gemma2.init_params, model_config), jax.random.key(0)
    )
    return tree_shardings(abstract, gemma2.param_logical_axes(model_config), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading axis over ``("data", "fsdp")``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def shard_host_array(x: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds in full.

    Each process supplies only the shards its devices hold (``make_array_from_callback``), so it works
    unchanged with one process or many (each host feeds its slice of the batch).
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
