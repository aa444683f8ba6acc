"""1-D device meshes and their shardings (``jax.sharding``; never pmap).

A trainer shards the batch axis over ``mesh_1d(axis="data")`` and replicates its state;
jit inserts the collectives. Tests run on 4 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""
from __future__ import annotations

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["mesh_1d", "replicated", "sharded"]


def mesh_1d(axis: str = "data", num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh named ``axis`` over the first ``num_devices`` local devices (0: all).

    Raises:
      ValueError: more devices asked for than there are.
    """
    devices = jax.local_devices()
    n = len(devices) if not num_devices else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} but {len(devices)} local devices "
                         "are available")
    return jax.make_mesh((n,), (axis,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:n])


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The leading axis is split over the mesh's (single) axis."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))
