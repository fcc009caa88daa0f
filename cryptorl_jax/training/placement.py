"""Where a spec's members live on the devices (`Placement`), computed once per trainer."""

from __future__ import annotations

from dataclasses import dataclass

from cryptorl_jax.config import ConfigError
from cryptorl_jax.training import parallel
from cryptorl_jax.training.spec import TrainerSpec


def _check_divisible(value: int, n_devices: int, key: str, source: str | None) -> int:
    if value % n_devices:
        raise ConfigError(key, f"{value} is not divisible by the {n_devices} devices", source)
    return value // n_devices


@dataclass(frozen=True)
class Placement:
    """Where a spec's members live, computed once (`Placement.of`): the members per device,
    each device's envs, batch and replay capacity, and whether a gradient collective is needed.

    "population" parallelism places whole members on devices (population / n_devices each,
    no collective); "data" parallelism gives every device every member, a 1/n_devices share of
    its envs, batch and buffer, and averages the gradients over the device axis. `segments`
    K > 1: the population is K segments x S seeds, member m reading segment `segment[m]`'s
    market arrays (the data argument then has a leading [K] axis).
    """

    n_devices: int
    by_member: bool
    population: int
    segments: int
    members_local: int
    n_envs_local: int
    batch_local: int
    capacity_local: int
    axis_name: str | None

    @classmethod
    def of(cls, spec: TrainerSpec, n_devices: int) -> Placement:
        q, source = spec.tqc, spec.source
        by_member = spec.parallel == "population"
        if spec.segments < 1 or spec.population % spec.segments:
            raise ConfigError("wfo.segments_per_batch", f"{spec.segments} segments do not "
                              f"divide the population of {spec.population}", source)
        if by_member:
            members_local = _check_divisible(spec.population, n_devices,
                                             "train.n_seeds (the population)", source)
            n_local, batch_local, capacity_local = spec.n_envs, q.batch_size, q.buffer_size
        else:
            members_local = spec.population
            n_local = _check_divisible(spec.n_envs, n_devices, "train.n_envs", source)
            batch_local = _check_divisible(q.batch_size, n_devices, "tqc.batch_size", source)
            capacity_local = q.buffer_size // n_devices
        axis_name = parallel.DEVICE_AXIS if n_devices > 1 and not by_member else None
        return cls(n_devices=n_devices, by_member=by_member, population=spec.population,
                   segments=spec.segments, members_local=members_local, n_envs_local=n_local,
                   batch_local=batch_local, capacity_local=capacity_local, axis_name=axis_name)
