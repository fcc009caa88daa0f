"""A walk-forward run's row layout without JAX: the causal features' warm-up, the lookback of a
decision, and the segments (`run_layout`). `walkforward.data.RunData` lays out a run with
these functions, and the dry run (`walkforward.plan`) with the same ones, so both see the same
segments; nothing here imports JAX."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cryptorl_jax.config import Config, check_rows
from cryptorl_jax.features import build_features, ffd_weights, warmup_rows
from cryptorl_jax.walkforward.segments import Segment, make_segments


def lookback_rows(cfg: Config) -> int:
    """L: rows before a slice's first decision row (observation window and realised vol)."""
    return max(cfg.env.window - 1, cfg.env.vol_window) + 1


def ffd_for_warmup(cfg: Config) -> float | None:
    """The d whose FFD window is longest (fixes the warm-up for every segment's d)."""
    f = cfg.features
    if not f.ffd:
        return None
    if f.ffd_d != "auto":
        return float(f.ffd_d)
    return max(f.ffd_d_grid, key=lambda d: len(ffd_weights(d, f.ffd_threshold)))


def build_run_features(cfg: Config, market: pd.DataFrame,
                       ffd_d: float | dict[str, float] | None = None) -> pd.DataFrame:
    d = ffd_d if ffd_d is not None else ffd_for_warmup(cfg)
    # The features' close-to-close vol (read by the HMM) is a daily-unit rolling std over
    # features.range_vol_window hours, like the range estimators: the env's leverage estimate
    # (env.vol_*) is a separate, slower quantity.
    return build_features(market, cfg.features, ffd_d=d,
                          vol_window=cfg.features.range_vol_window, vol_horizon_hours=24)


def run_offset(cfg: Config, features: pd.DataFrame) -> int:
    """The first row a segment's lookback may read: the features' warm-up plus L."""
    return warmup_rows(features) + lookback_rows(cfg)


def run_segments(cfg: Config, n_rows: int, offset: int) -> list[Segment]:
    """The walk-forward segments of n_rows rows from `offset` (ConfigError if the data is too
    short for one)."""
    check_rows(cfg, n_rows - offset, f"the data after its {offset}-row feature warm-up")
    return make_segments(n_rows, cfg.wfo, offset=offset, source=cfg.source)


@dataclass(frozen=True)
class Layout:
    """Where a run's rows go: its index, the first usable row and the segments."""

    index: pd.DatetimeIndex
    offset: int
    segments: list[Segment]


def run_layout(cfg: Config, market: pd.DataFrame) -> Layout:
    """The layout `RunData.build(cfg, market)` makes, computed the same way."""
    offset = run_offset(cfg, build_run_features(cfg, market))
    return Layout(index=market.index, offset=offset,
                  segments=run_segments(cfg, len(market), offset))
