"""Stationarity report: the augmented Dickey-Fuller test (statsmodels) for every feature column."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

# clock-driven columns (engineering.CALENDAR_COLUMNS): an ADF test of a deterministic cycle is
# meaningless (hour_cos fits perfectly: statistic ~ -1e16), so the report skips them
DETERMINISTIC_COLUMNS = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "us_market_open")
REPORT_COLUMNS = ("adf_stat", "p_value", "n_obs", "used_lag", "crit_5pct", "stationary",
                  "status")


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run small linear algebra (ADF regressions, HMM EM) on one BLAS/OpenMP thread.

    Multi-threaded OpenBLAS spins when the cores are busy: one 13k-row adfuller took 34 s with
    the default threads on a loaded 2-core machine and 1.5 s with one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn (hmmlearn's dependency)
        yield
        return
    with threadpool_limits(1):
        yield


def adf_table(frame: pd.DataFrame, rows: slice | None = None, *, alpha: float = 0.05,
              maxlag: int | None = None, autolag: str | None = "AIC",
              min_obs: int = 30,
              deterministic: Sequence[str] = DETERMINISTIC_COLUMNS) -> pd.DataFrame:
    """Per column of frame.iloc[rows]: ADF statistic, p-value, observations, lag, 5% critical
    value and `stationary` (p < alpha). NaN rows are dropped per column; constant, non-numeric,
    too-short or deterministic (calendar) columns get a `status` instead of a test."""
    from statsmodels.tsa.stattools import adfuller

    window = frame if rows is None else frame.iloc[rows]
    records = {}
    for col in window.columns:
        rec = {"adf_stat": np.nan, "p_value": np.nan, "n_obs": 0, "used_lag": np.nan,
               "crit_5pct": np.nan, "stationary": False, "status": "ok"}
        series = window[col]
        if str(col) in deterministic:
            rec["status"] = "deterministic"
            records[str(col)] = rec
            continue
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            rec["status"] = "non-numeric"
            records[str(col)] = rec
            continue
        values = series.to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        rec["n_obs"] = len(values)
        if len(values) < min_obs:
            rec["status"] = "too short"
        elif np.ptp(values) == 0.0:
            rec["status"] = "constant"
        else:
            try:
                with warnings.catch_warnings(), blas_single_thread():
                    warnings.simplefilter("ignore")
                    # autolag=None returns 5 values, an autolag method 6 (plus icbest)
                    stat, p_value, used_lag, n_obs, crit = adfuller(
                        values, maxlag=maxlag, autolag=autolag)[:5]
            except (ValueError, np.linalg.LinAlgError) as exc:
                rec["status"] = f"failed: {exc}"
            else:
                rec.update(adf_stat=float(stat), p_value=float(p_value), n_obs=int(n_obs),
                           used_lag=int(used_lag), crit_5pct=float(crit["5%"]),
                           stationary=bool(p_value < alpha))
        records[str(col)] = rec
    table = pd.DataFrame.from_dict(records, orient="index", columns=list(REPORT_COLUMNS))
    table.index.name = "feature"
    return table
