"""Data parallelism over the local devices with `jax.shard_map` on a 1-D mesh (docs/reference.md,
principle 6).

Layout: learner state (parameters, optimiser states) is replicated; per-device state (envs,
replay shard, PRNG key) carries a leading device axis sharded over the mesh axis `DEVICE_AXIS`.
The learner averages gradients with `lax.pmean(..., DEVICE_AXIS)`, so the replicas stay equal.
One device is the same code path with a mesh of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cryptorl_jax.config import ConfigError, TrainConfig

DEVICE_AXIS = "devices"


def select_devices(devices: int | str | TrainConfig, source: str | None = None
                   ) -> list[jax.Device]:
    """The devices `train.devices` asks for ("all" or the first N local devices)."""
    if isinstance(devices, TrainConfig):
        devices = devices.devices
    local = jax.local_devices()
    if devices == "all":
        return list(local)
    n = int(devices)
    if n > len(local):
        raise ConfigError("train.devices", f"asks for {n} devices but only {len(local)} are "
                          f"visible ({[str(d) for d in local]})", source)
    return list(local[:n])


def make_mesh(devices: list[jax.Device]) -> Mesh:
    return Mesh(np.asarray(devices), (DEVICE_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def per_device(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DEVICE_AXIS))


def data_parallel(fn: Callable, mesh: Mesh, in_specs: tuple, out_specs: Any) -> Callable:
    """`jax.shard_map(fn)` over the mesh; specs use `REPLICATED` / `SHARDED` markers.

    Replication of the REPLICATED outputs is the caller's contract (parameters only change
    through `lax.pmean`-ed gradients); the tests check that the replicas stay identical, so the
    varying-manual-axes type check is off (it would demand pcasts on every scan carry).
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


REPLICATED = P()
SHARDED = P(DEVICE_AXIS)
