"""What one segment trains on (`TrainData`): the market arrays, the rows an episode may start
at, optional embeddings; a batch of K segments stacks them on a leading [K] axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cryptorl_jax.env import trading
from cryptorl_jax.env.trading import EnvParams, MarketData, Observation, StartRange
from cryptorl_jax.training.spec import stack


@struct.dataclass
class TrainData:
    """What one segment trains on: the market arrays, the allowed rows, optional embeddings."""

    market: MarketData
    start_range: StartRange
    embeddings: jnp.ndarray | None = None  # [T, D] for encoder.mode random / pretrained-frozen


def stack_segments(datas: Sequence[TrainData]) -> TrainData:
    """K segments' TrainData (same shapes) as one with a leading [K] axis (a batch's data)."""
    shapes = {tuple(leaf.shape for leaf in jax.tree.leaves(d)) for d in datas}
    if len(shapes) != 1:
        raise ValueError(f"the segments of a batch must have the same shapes, got {shapes}")
    return stack(list(datas))


def take(tree: Any, index) -> Any:
    """tree's leaves at `index` of their leading axis (a member's segment: a gather)."""
    return jax.tree.map(lambda x: x[index], tree)


def check_train_data(data: TrainData, window: int, vol_window: int = 0) -> None:
    """Host check that every row an episode can read is finite; names the row and column."""
    sr = data.start_range
    first = int(sr.first_start) - window + 1
    last = int(sr.last_row)
    trading.check_start_range(int(data.market.n_rows), sr, window, vol_window)
    arrays = {"features": data.market.features, "log_returns": data.market.log_returns,
              "realised_vol": data.market.realised_vol, "close": data.market.close}
    if data.embeddings is not None:
        arrays["embeddings"] = data.embeddings
    for name, arr in arrays.items():
        # realised vol and embeddings are read at decision rows only (an embedding at t already
        # summarises the window ending at t); the raw arrays also at the window's lookback
        lo = int(sr.first_start) if name in ("realised_vol", "embeddings") else first
        part = np.asarray(arr[lo: last + 1])
        bad = ~np.isfinite(part)
        if bad.any():
            idx = np.argwhere(bad)[0]
            row = lo + int(idx[0])
            col = f", column {int(idx[1])}" if part.ndim == 2 else ""
            raise ValueError(f"train data: {name} is not finite at row {row}{col} (value "
                             f"{float(part[tuple(idx)])}); rows {lo}..{last} are read by "
                             "training")


def make_observe(env_params: EnvParams, uses_embeddings: bool):
    """The learner's observation at row t (unbatched): the precomputed embedding of row t, or
    the feature window ending at t, with the agent vector. Every learner and the rollout read
    this one function."""

    def observe(data: TrainData, t: jnp.ndarray, agent_vector: jnp.ndarray) -> Observation:
        if uses_embeddings:
            return Observation(window=data.embeddings[t], agent=agent_vector)
        return trading.observe(env_params, data.market, t, agent_vector)

    return observe
