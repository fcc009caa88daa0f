"""The ADF stationarity report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptorl_jax.features import CALENDAR_COLUMNS, adf_table
from cryptorl_jax.features.stationarity import DETERMINISTIC_COLUMNS


def test_adf_table_flags_stationary_and_random_walk_columns():
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({
        "noise": rng.normal(size=n),
        "walk": np.cumsum(rng.normal(size=n)),
        "constant": np.ones(n),
        "warmup": np.r_[np.full(100, np.nan), rng.normal(size=n - 100)],
        "short": np.r_[np.full(n - 10, np.nan), rng.normal(size=10)],
        "label": ["x"] * n,
    })
    table = adf_table(frame)
    assert list(table.index) == list(frame.columns)
    assert table.loc["noise", "stationary"] and table.loc["noise", "p_value"] < 0.01
    assert not table.loc["walk", "stationary"] and table.loc["walk", "p_value"] > 0.05
    assert table.loc["constant", "status"] == "constant"
    assert np.isnan(table.loc["constant", "p_value"])
    assert table.loc["warmup", "status"] == "ok"
    assert table.loc["warmup", "n_obs"] + table.loc["warmup", "used_lag"] + 1 == n - 100
    assert table.loc["short", "status"] == "too short"
    assert table.loc["label", "status"] == "non-numeric"
    assert table.loc["noise", "adf_stat"] < table.loc["noise", "crit_5pct"]


def test_adf_table_rows_window():
    rng = np.random.default_rng(1)
    walk_then_noise = np.r_[np.cumsum(rng.normal(size=400)), rng.normal(size=400)]
    frame = pd.DataFrame({"x": walk_then_noise})
    assert adf_table(frame, rows=slice(400, 800)).loc["x", "stationary"]
    assert adf_table(frame, rows=slice(0, 400), maxlag=5).loc["x", "used_lag"] <= 5
    fixed = adf_table(frame, rows=slice(400, 800), maxlag=3, autolag=None)  # 5-tuple result
    assert fixed.loc["x", "status"] == "ok" and fixed.loc["x", "used_lag"] == 3


def test_adf_table_skips_calendar_columns():
    assert set(DETERMINISTIC_COLUMNS) == set(CALENDAR_COLUMNS)
    hours = np.arange(500) % 24
    frame = pd.DataFrame({"hour_cos": np.cos(2 * np.pi * hours / 24),
                          "x": np.random.default_rng(2).normal(size=500)})
    table = adf_table(frame)
    assert table.loc["hour_cos", "status"] == "deterministic"
    assert np.isnan(table.loc["hour_cos", "p_value"]) and table.loc["x", "status"] == "ok"
