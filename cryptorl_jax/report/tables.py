"""metrics.csv and comparison.csv of a run: the stitched OOS frame's figures per segment and
stitched (with the ensemble's timing null), and every series' aggregate figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import nulls
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest.diagnostics import seed_columns
from cryptorl_jax.backtest.metrics import compute_metrics, probabilistic_sharpe
from cryptorl_jax.config import EnvConfig
from cryptorl_jax.core.dictionary import INTEGER_COLUMNS
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.report.registry import OOSDeflation

N_TIMING_NULLS = 1000


def timing_test(part: pd.DataFrame, env_config: EnvConfig, seed: int,
                n_null: int = N_TIMING_NULLS, *, memory_hours: int) -> nulls.TimingNull | None:
    """The action-rotation timing null of the ensemble over these rows (`backtest.nulls`):
    the seeds' `action_<s>` paths rotated over the rows by lags beyond the policy's memory
    (`backtest.memory.policy_memory_hours`) and re-simulated per `segment` with the frame's
    `leverage`, `tradable` and `benchmark` (R_{t+1}) under env_config's costs. None for frames
    written before those columns were."""
    cols = seed_columns(part, "action_")
    if not cols or any(c not in part for c in ("leverage", "tradable", "benchmark")):
        return None
    seg = part["segment"].to_numpy() if "segment" in part else None
    return nulls.action_timing_null(part[cols].to_numpy(np.float64).T,
                                    part["leverage"].to_numpy(np.float64),
                                    part["benchmark"].to_numpy(np.float64),
                                    part["tradable"].to_numpy(bool), seg, env_config,
                                    n_null=n_null, seed=seed, memory_hours=memory_hours)


def _strategy_row(part: pd.DataFrame, env_config: EnvConfig, seed: int,
                  memory_hours: int) -> dict[str, float]:
    m = compute_metrics(part["strategy"], part["benchmark"], HOURS_PER_YEAR,
                        exposure=part["exposure"], turnover=part["turnover"])
    m["psr"] = probabilistic_sharpe(part["strategy"])
    n = max(len(part), 1)
    for col in ("cost", "financing"):  # paid per year, as a fraction of NAV (simple sums)
        m[f"{col}_per_year"] = (float(part[col].sum() * HOURS_PER_YEAR / n) if col in part
                                else math.nan)
    null = timing_test(part, env_config, seed, memory_hours=memory_hours)
    m["timing_p_value"] = math.nan if null is None else null.p_value
    m["timing_memory_hours"] = int(memory_hours)
    return m


def metrics_table(oos: pd.DataFrame, segments: list[int], deflation: OOSDeflation,
                  env_config: EnvConfig, seed: int = 0, *, memory_hours: int) -> pd.DataFrame:
    """One row per segment plus `all` (the stitched series), compute_metrics' columns.

    Every row adds psr, cost_per_year, financing_per_year, timing_p_value and
    timing_memory_hours (M, the lags' floor: the agents' declared memory, `memory_hours`; the
    null is undefined, p NaN, in a segment of at most 2M + 2 hours); the `all` row adds dsr
    (deflated by the registered runs over the same OOS window) and n_trials (their N).
    """
    rows = []
    for k in segments:
        part = oos[oos["segment"] == k]
        rows.append({"segment": str(k), "start": str(part.index[0]),
                     "end": str(part.index[-1]),
                     **_strategy_row(part, env_config, seed + 1 + k, memory_hours)})
    if segments:
        m = _strategy_row(oos, env_config, seed, memory_hours)
        m["dsr"] = (probabilistic_sharpe(oos["strategy"], deflation.expected_max_sharpe)
                    if math.isfinite(deflation.expected_max_sharpe) else math.nan)
        m["n_trials"] = int(deflation.n_runs)
        rows.append({"segment": "all", "start": str(oos.index[0]), "end": str(oos.index[-1]),
                     **m})
    return pd.DataFrame(rows)


def as_written(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv as it is written: the dictionary's counts (`core.dictionary.INTEGER_COLUMNS`:
    n_periods, timing_memory_hours, n_trials, n_trials_sceptic) as integers, blank where a
    row has none (pandas' nullable Int64), every other column as computed."""
    out = table.copy()
    for col in INTEGER_COLUMNS:
        if col in out.columns:
            out[col] = out[col].round().astype("Int64")
    return out


def comparison_table(oos: pd.DataFrame) -> pd.DataFrame:
    """Aggregate metrics of every series of the stitched frame (`backtest.oos.series_table`:
    the strategy, its cost variants, each seed, the baselines, the benchmark)."""
    return oos_lib.series_table(oos)
