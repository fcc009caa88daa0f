"""Device-resident circular replay buffer over an arbitrary pytree of items.

Pure `init / add / sample`: the state is a pytree (data arrays with a leading capacity axis,
the write position and the fill level), so the buffer lives inside jit / scan / vmap /
shard_map; under data parallelism each device simply holds its own shard. Items can be generic
(obs, action, reward, next_obs, terminated) transitions or the trading env's compact
transitions (a few scalars per step; observations and rewards are rebuilt at sample time,
docs/reference.md, principle 3).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class ReplayState:
    """data: pytree of [capacity, ...] arrays; position: next write slot; size: valid entries."""

    data: Any
    position: jax.Array  # [] int32
    size: jax.Array  # [] int32
    capacity: int = struct.field(pytree_node=False)


def init(example_item: Any, capacity: int) -> ReplayState:
    """An empty buffer for items shaped like `example_item` (one item, no batch axis)."""
    if int(capacity) < 1:
        raise ValueError(f"replay capacity must be >= 1, got {capacity}")
    data = jax.tree.map(
        lambda x: jnp.zeros((int(capacity), *jnp.shape(x)), jnp.result_type(x)), example_item)
    return ReplayState(data=data, position=jnp.zeros((), jnp.int32),
                       size=jnp.zeros((), jnp.int32), capacity=int(capacity))


def _batch_size(items: Any) -> int:
    sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(items)}
    if len(sizes) != 1:
        raise ValueError(f"replay items must share one leading batch size, got {sorted(sizes)}")
    return sizes.pop()


def add(state: ReplayState, items: Any) -> ReplayState:
    """Write N items (leading axis N, static) at position..position+N-1 modulo capacity."""
    n = _batch_size(items)
    if n > state.capacity:
        raise ValueError(f"cannot add {n} items to a replay buffer of capacity {state.capacity}")
    index = (state.position + jnp.arange(n, dtype=jnp.int32)) % state.capacity  # [N]
    # A scatter, not a dynamic_update_slice, even for N = 1: XLA fuses a DUS into a later
    # gather from the same buffer (reading the old buffer), which forces a full buffer copy
    # on every add; a scatter stays in place.
    data = jax.tree.map(
        lambda buf, x: buf.at[index].set(x.astype(buf.dtype), unique_indices=True,
                                         mode="promise_in_bounds"),
        state.data, items)
    return state.replace(
        data=data,
        position=(state.position + n) % state.capacity,
        size=jnp.minimum(state.size + n, state.capacity).astype(jnp.int32),
    )


def sample_indices(state: ReplayState, key: jax.Array, batch_size: int) -> jax.Array:
    """batch_size indices drawn uniformly (with replacement) from the valid entries [0, size)."""
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1), jnp.int32)


def gather(state: ReplayState, indices: jax.Array) -> Any:
    """The items stored at `indices`: a pytree of [len(indices), ...] arrays."""
    return jax.tree.map(lambda buf: jnp.take(buf, indices, axis=0, mode="clip"), state.data)


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Any:
    """A uniform minibatch over the valid entries (entry 0 repeated while the buffer is empty)."""
    return gather(state, sample_indices(state, key, batch_size))


def nbytes(state: ReplayState | Any) -> int:
    """Bytes held by the buffer's data (works on concrete or abstract/eval_shape states)."""
    data = state.data if isinstance(state, ReplayState) else state
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(data)))
