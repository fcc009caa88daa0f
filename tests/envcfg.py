"""EnvConfig settings the tests share.

`ORIGINAL` is the original system's vol targeting (configs/full.yaml): a 0.05 daily target from
a plain 24-hour std, no no-trade band. Tests written for its small warm-up (24 rows) and its
trade-every-change exposure use it; `BANDED` is the package default's shape (an exponentially
weighted annual vol and a no-trade band) with a short window that fits small test markets.
"""

from __future__ import annotations

import dataclasses

from cryptorl_jax.config import EnvConfig

ORIGINAL = dict(target_volatility=0.05, vol_window=24, vol_halflife_hours=None,
                vol_horizon_hours=24, vol_floor=0.005, no_trade_band=0.0)
BANDED = dict(target_volatility=0.5, vol_window=48, vol_halflife_hours=12.0,
              vol_horizon_hours=8760, vol_floor=0.1, no_trade_band=0.1)


def original_env(**overrides) -> EnvConfig:
    """EnvConfig with the original vol targeting, then `overrides`."""
    return dataclasses.replace(EnvConfig(), **{**ORIGINAL, **overrides})


def banded_env(**overrides) -> EnvConfig:
    return dataclasses.replace(EnvConfig(), **{**BANDED, **overrides})
