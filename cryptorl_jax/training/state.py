"""What training carries from chunk to chunk: the members' learners (`TrainState.agent`,
replicated or placed by member as `training.placement` says) and each device's envs, replay
shard and PRNG key (`LocalState`, sharded over the device axis).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from cryptorl_jax.agent import replay
from cryptorl_jax.agent.tqc import TQCState
from cryptorl_jax.env.trading import EnvState


@struct.dataclass
class LocalState:
    """Per device and seed: the envs, this device's replay shard and the PRNG key."""

    env: EnvState  # [n_envs_local]
    buffer: replay.ReplayState
    key: jax.Array


@struct.dataclass
class TrainState:
    agent: TQCState  # [S, ...]: replicated over devices
    local: LocalState  # [n_devices, S, ...]: sharded over the device axis
    iteration: jnp.ndarray  # int32 []: vectorised env steps done (each moves n_envs envs)
