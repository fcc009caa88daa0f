"""Power before results and multiple testing (backtest.inference): the minimum detectable
Sharpe against a simulation, MinBTL against a Monte Carlo maximum, the effective N, and SPA /
StepM on simulated strategies (one real edge among nulls is found; nulls alone are not)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import inference as inf


def test_min_detectable_sharpe_has_its_power_in_a_simulation():
    """i.i.d. returns whose true annual Sharpe is the MDE for n hours: a one-sided 5 % test of
    the sample Sharpe rejects in about 80 % of the samples (and in about 5 % at SR 0)."""
    n, reps = 2160, 4000
    mde = inf.min_detectable_sharpe(n)
    assert mde == pytest.approx(5.0, abs=0.1)  # one 3-month segment
    assert inf.min_detectable_sharpe(34560) == pytest.approx(1.25, abs=0.05)  # 3.9 years
    rng = np.random.default_rng(0)
    z = 1.6448536269514722
    for sr_annual, want in ((mde, 0.80), (0.0, 0.05)):
        r = rng.normal(sr_annual / math.sqrt(8760), 1.0, (reps, n))
        sr = r.mean(axis=1) / r.std(axis=1, ddof=1)
        se = np.sqrt((1 + sr**2 / 2) / n)
        assert np.mean(sr / se > z) == pytest.approx(want, abs=0.025)


def test_variance_inflation_of_an_ar1():
    """AR(1) returns with phi = 0.3: the long-run variance of the mean is (1 + phi) / (1 - phi)
    times the i.i.d. one (Bartlett weights take a little off at a finite bandwidth)."""
    rng = np.random.default_rng(1)
    e = rng.normal(size=200_000)
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, len(e)):
        x[t] = 0.3 * x[t - 1] + e[t]
    vif = inf.variance_inflation(x, lags=60)
    assert vif == pytest.approx(1.3 / 0.7, rel=0.05)
    assert inf.variance_inflation(e) == pytest.approx(1.0, abs=0.05)
    # the MDE widens by sqrt(vif)
    assert inf.min_detectable_sharpe(34560, vif=vif) == pytest.approx(
        inf.min_detectable_sharpe(34560) * math.sqrt(vif), rel=0.01)


def test_min_backtest_length_against_monte_carlo():
    rng = np.random.default_rng(2)
    for n in (10, 100):
        mc = rng.normal(size=(20000, n)).max(axis=1).mean()
        assert inf.expected_max_standard_normal(n) == pytest.approx(mc, rel=0.03)
        assert inf.min_backtest_length(n, 1.0) == pytest.approx(
            inf.expected_max_standard_normal(n) ** 2)
    assert inf.min_backtest_length(1) == 0.0
    # Bailey et al.'s example: ~45 independent configurations need ~5 years for a Sharpe of 1
    assert inf.min_backtest_length(45, 1.0) == pytest.approx(5.0, abs=0.5)


def test_effective_trials():
    rng = np.random.default_rng(3)
    base = rng.normal(size=5000)
    same = np.column_stack([base] * 4)
    assert inf.effective_trials(same)[2] == pytest.approx(1.0)
    indep = rng.normal(size=(5000, 6))
    n, rho, n_eff = inf.effective_trials(indep)
    assert n == 6 and abs(rho) < 0.05 and n_eff == pytest.approx(6.0, abs=0.3)
    half = np.column_stack([base + rng.normal(size=5000) for _ in range(5)])  # rho = 0.5
    assert inf.effective_trials(half)[2] == pytest.approx(0.5 + 0.5 * 5, abs=0.2)


def _strategies(rng, n: int, k: int, edge: float | None) -> pd.DataFrame:
    cols = {f"null_{i}": rng.normal(0.0, 0.01, n) for i in range(k)}
    if edge is not None:
        cols["edge"] = rng.normal(edge, 0.01, n)
    return pd.DataFrame(cols)


def test_spa_and_stepm_find_the_real_edge():
    rng = np.random.default_rng(4)
    n = 4000
    frame = _strategies(rng, n, 6, edge=0.001)  # per-hour t-stat 0.1 * sqrt(4000) = 6.3
    res = inf.multiple_test(frame, rng.normal(0.0, 0.01, n), "bench", reps=1000, seed=0)
    assert res.spa_p_consistent < 0.05
    assert res.superior == ("edge",)
    assert res.best == "edge"
    assert res.block_hours >= inf.MIN_BLOCK_HOURS


def test_spa_and_stepm_on_nulls_find_nothing_in_most_seeds():
    hits = 0
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        frame = _strategies(rng, 3000, 6, edge=None)
        res = inf.multiple_test(frame, np.zeros(3000), "flat", reps=300, seed=seed)
        hits += res.spa_p_consistent < 0.05 or bool(res.superior)
    assert hits <= 2


def test_multiple_test_is_deterministic():
    rng = np.random.default_rng(5)
    frame = _strategies(rng, 2000, 3, edge=0.0003)
    bench = rng.normal(0, 0.01, 2000)
    a = inf.multiple_test(frame, bench, "b", reps=200, seed=7)
    b = inf.multiple_test(frame, bench, "b", reps=200, seed=7)
    assert a == b
