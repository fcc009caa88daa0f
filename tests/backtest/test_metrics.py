"""compute_metrics agrees with quantstats at 8,760 periods a year and with hand formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
    regime_metrics,
)

P = 8760


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    idx = pd.date_range("2021-01-01", periods=3000, freq="h")  # quantstats wants tz-naive
    r = pd.Series(rng.normal(2e-5, 4e-3, len(idx)), index=idx)
    r.iloc[::7] = 0.0
    b = pd.Series(0.8 * r.to_numpy() + rng.normal(0, 2e-3, len(idx)), index=idx)
    return r, b


def test_matches_quantstats(series):
    r, b = series
    m = compute_metrics(r, b, P)
    assert m["sharpe"] == pytest.approx(qs.stats.sharpe(r, periods=P), rel=1e-10)
    assert m["sortino"] == pytest.approx(qs.stats.sortino(r, periods=P), rel=1e-10)
    assert m["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(r), rel=1e-10)
    assert m["cagr"] == pytest.approx(qs.stats.cagr(r, periods=P), rel=1e-10)
    assert m["calmar"] == pytest.approx(m["cagr"] / abs(m["max_drawdown"]), rel=1e-12)
    assert m["volatility"] == pytest.approx(qs.stats.volatility(r, periods=P), rel=1e-10)
    assert m["total_return"] == pytest.approx(qs.stats.comp(r), rel=1e-10)
    assert m["hit_rate"] == pytest.approx(qs.stats.win_rate(r), rel=1e-10)
    greeks = qs.stats.greeks(r, b, periods=P)
    assert m["beta"] == pytest.approx(greeks["beta"], rel=1e-8)
    assert m["alpha"] == pytest.approx(greeks["alpha"], rel=1e-8)


def test_hand_formulas():
    r = np.array([-0.1, 0.05, 0.02, -0.03])
    m = compute_metrics(r, periods_per_year=4)
    nav = np.cumprod(1 + r)
    assert m["max_drawdown"] == pytest.approx(min(nav / np.maximum.accumulate(
        np.concatenate([[1.0], nav]))[1:]) - 1)  # the first loss counts: NAV starts at 1
    assert m["total_return"] == pytest.approx(nav[-1] - 1)
    assert m["cagr"] == pytest.approx(nav[-1] ** (4 / 4) - 1)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * 2)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt((r[r < 0] ** 2).sum() / 4) * 2)
    e = np.array([1.0, -0.5, 0.5, 0.0])
    u = np.array([1.0, 1.5, 1.0, 0.5])
    m = compute_metrics(r, periods_per_year=4, exposure=e, turnover=u)
    assert m["exposure"] == pytest.approx(0.5) and m["turnover"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="position 1"):
        compute_metrics([0.0, float("nan")])


def test_cagr_and_calmar_are_not_annualised_under_90_days():
    """A window shorter than 90 days (2,160 hourly bars) has no CAGR or Calmar (NaN; its
    total_return stands); from 2,160 bars on they are quantstats' annualised figures. Counts
    are integers."""
    rng = np.random.default_rng(3)
    r = rng.normal(3e-4, 4e-3, 2160)
    month = compute_metrics(r[:720], periods_per_year=P)
    assert math.isnan(month["cagr"]) and math.isnan(month["calmar"])
    assert month["total_return"] == pytest.approx(np.prod(1 + r[:720]) - 1, rel=1e-12)
    assert math.isnan(compute_metrics(r[:2159], periods_per_year=P)["cagr"])
    quarter = compute_metrics(r, periods_per_year=P)
    growth = np.prod(1 + r)
    assert quarter["cagr"] == pytest.approx(growth ** (P / 2160) - 1, rel=1e-12)
    assert quarter["calmar"] == pytest.approx(quarter["cagr"] / abs(quarter["max_drawdown"]))
    assert quarter["n_periods"] == 2160 and isinstance(quarter["n_periods"], int)
    # the rule scales with the periods per year: 90 days of daily bars
    assert math.isnan(compute_metrics(r[:89], periods_per_year=365)["cagr"])
    assert math.isfinite(compute_metrics(r[:90], periods_per_year=365)["cagr"])


def test_psr_dsr():
    rng = np.random.default_rng(1)
    good = rng.normal(0.001, 0.01, 5000)
    assert probabilistic_sharpe(good) > 0.99
    assert probabilistic_sharpe(-good) < 0.01
    # more trials raise the bar: the deflated ratio falls as N grows
    v = 0.05**2
    d = [deflated_sharpe(good, n, v) for n in (1, 10, 100, 1000)]
    assert d[0] == pytest.approx(probabilistic_sharpe(good))
    assert all(a > b for a, b in zip(d, d[1:]))
    assert expected_max_sharpe(1, v) == 0.0 and expected_max_sharpe(100, v) > 0


def test_regime_split(series):
    r, b = series
    regimes = np.arange(len(r)) % 3
    frame = regime_metrics(r, regimes, b)
    assert list(frame.index) == [0, 1, 2]
    assert frame["share_of_hours"].sum() == pytest.approx(1.0)
    m0 = compute_metrics(r[regimes == 0], b[regimes == 0])
    assert frame.loc[0, "sharpe"] == pytest.approx(m0["sharpe"])
