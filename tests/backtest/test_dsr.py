"""probabilistic_sharpe, expected_max_sharpe and deflated_sharpe (Bailey & López de Prado 2012,
2014) against hand formulas in plain Python, and their behaviour in a null simulation: the DSR
is for the sample the best trial was selected on; a fresh sample needs only the PSR."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from cryptorl_jax.backtest.metrics import (
    EULER_GAMMA,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
)

# twelve explicit per-period returns: skewed (one large gain) and fat-tailed
RETURNS = [0.012, -0.004, 0.007, 0.031, -0.011, 0.002, -0.006, 0.009, 0.015, -0.002, 0.004,
           -0.009]


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _hand_moments(xs: list[float]) -> tuple[float, float, float]:
    """(SR = mean / stdev(ddof=1), biased skewness, biased non-excess kurtosis), plain Python."""
    n = len(xs)
    mean = sum(xs) / n
    m2 = sum((x - mean) ** 2 for x in xs) / n
    m3 = sum((x - mean) ** 3 for x in xs) / n
    m4 = sum((x - mean) ** 4 for x in xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean / sd, m3 / m2**1.5, m4 / m2**2


def _hand_psr(xs: list[float], sr_star: float) -> float:
    sr, skew, kurt = _hand_moments(xs)
    n = len(xs)
    return _phi((sr - sr_star) * math.sqrt(n - 1)
                / math.sqrt(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2))


def _hand_expected_max(n_trials: int, variance: float) -> float:
    inv = statistics.NormalDist().inv_cdf
    g = 0.5772156649015329
    return math.sqrt(variance) * ((1 - g) * inv(1 - 1 / n_trials)
                                  + g * inv(1 - 1 / (n_trials * math.e)))


def test_hand_moments_of_the_fixed_series():
    sr, skew, kurt = _hand_moments(RETURNS)
    # the series is meant to be non-normal enough that the skew and kurtosis terms matter
    assert sr == pytest.approx(0.3374, abs=1e-3)
    assert skew > 0.5 and kurt > 3.0
    assert EULER_GAMMA == 0.5772156649015329


@pytest.mark.parametrize("sr_star", [0.0, 0.1, -0.05, 0.4])
def test_psr_matches_hand_formula(sr_star):
    assert probabilistic_sharpe(RETURNS, sr_star) == pytest.approx(
        _hand_psr(RETURNS, sr_star), rel=0, abs=1e-12)
    assert probabilistic_sharpe(np.array(RETURNS), sr_star) == pytest.approx(
        _hand_psr(RETURNS, sr_star), rel=0, abs=1e-12)


def test_psr_default_benchmark_is_zero():
    assert probabilistic_sharpe(RETURNS) == pytest.approx(_hand_psr(RETURNS, 0.0), abs=1e-12)


@pytest.mark.parametrize("n_trials", [2, 10, 100])
def test_expected_max_sharpe_matches_hand_formula(n_trials):
    v = 0.0004
    assert expected_max_sharpe(n_trials, v) == pytest.approx(
        _hand_expected_max(n_trials, v), rel=1e-12, abs=1e-15)


def test_expected_max_sharpe_n10():
    # N = 10, V = 0.0004: sqrt(V) = 0.02; Φ^-1(0.9) = 1.2815516, Φ^-1(1 - 1/(10 e)) = 1.7892418
    expected = _hand_expected_max(10, 0.0004)
    assert expected_max_sharpe(10, 0.0004) == pytest.approx(expected, rel=0, abs=1e-12)
    assert expected == pytest.approx(0.02 * (0.4227843 * 1.2815516 + 0.5772157 * 1.7892418),
                                     abs=1e-8)


def test_expected_max_sharpe_degenerate_cases():
    assert expected_max_sharpe(1, 0.0004) == 0.0
    assert expected_max_sharpe(10, 0.0) == 0.0


@pytest.mark.parametrize(("n_trials", "variance"), [(10, 0.0004), (50, 0.002), (3, 1e-5)])
def test_dsr_matches_hand_formula(n_trials, variance):
    sr_star = _hand_expected_max(n_trials, variance)
    assert deflated_sharpe(RETURNS, n_trials, variance) == pytest.approx(
        _hand_psr(RETURNS, sr_star), rel=0, abs=1e-12)


def test_dsr_with_one_trial_is_the_psr():
    assert deflated_sharpe(RETURNS, 1, 0.0004) == probabilistic_sharpe(RETURNS)


# ----------------------------------------------------------------------------------------------
# null simulation: R repetitions of N = 20 pure-noise trials, the best picked by its Sharpe on a
# validation sample of T_VAL periods, then a fresh out-of-sample series of T_OOS periods


R, N, T_VAL, T_OOS = 400, 20, 500, 4000


@pytest.fixture(scope="module")
def null_study():
    rng = np.random.default_rng(2024)
    val = rng.normal(0.0, 0.01, size=(R, T_VAL, N))
    sharpes = val.mean(axis=1) / val.std(axis=1, ddof=1)           # [R, N] per-period Sharpes
    best = sharpes.argmax(axis=1)
    sr_var = sharpes.var(axis=1, ddof=1)                            # across the 20 trials
    oos = rng.normal(0.0, 0.01, size=(R, T_OOS))                    # the selected trial, later
    out = {"dsr_val": [], "psr_val": [], "psr_oos": [], "dsr_oos_wrong": []}
    for i in range(R):
        picked = val[i, :, best[i]]
        out["dsr_val"].append(deflated_sharpe(picked, N, float(sr_var[i])))
        out["psr_val"].append(probabilistic_sharpe(picked))
        out["psr_oos"].append(probabilistic_sharpe(oos[i]))
        out["dsr_oos_wrong"].append(deflated_sharpe(oos[i], N, float(sr_var[i])))
    return {k: np.array(v) for k, v in out.items()}


def test_null_dsr_on_the_selection_sample_is_not_concentrated_at_one(null_study):
    dsr = null_study["dsr_val"]
    assert np.isfinite(dsr).all()
    assert 0.2 < dsr.mean() < 0.8
    assert (dsr > 0.95).mean() < 0.15


def test_null_undeflated_psr_of_the_selected_trial_is_biased_high(null_study):
    psr, dsr = null_study["psr_val"], null_study["dsr_val"]
    # the best of 20 noise trials looks significant on its own selection sample
    assert psr.mean() > 0.85
    assert psr.mean() > dsr.mean() + 0.3
    assert (psr >= dsr).all()


def test_null_psr_on_a_fresh_oos_sample_is_uniform(null_study):
    # nothing was selected on the OOS sample, so N = 1: the plain PSR, uniform under the null
    psr = null_study["psr_oos"]
    assert 0.4 < psr.mean() < 0.6
    assert (psr < 0.05).mean() < 0.1
    assert (psr > 0.95).mean() < 0.1
    # and spread like a uniform (std 1/sqrt(12) = 0.289, a quarter in each quartile), not piled
    # up at 0.5 or at the ends
    assert 0.24 < psr.std() < 0.34
    quartiles = np.histogram(psr, bins=[0.0, 0.25, 0.5, 0.75, 1.0])[0] / R
    assert ((quartiles > 0.15) & (quartiles < 0.35)).all()


def test_null_deflating_the_oos_series_with_validation_trials_is_wrong(null_study):
    """The old report's way: the DSR of the long OOS series with the validation trials' N and
    Sharpe variance. The OOS series was not selected on its own data, and its Sharpe estimate is
    far tighter (T_OOS = 4000) than the validation trials' spread (T_VAL = 500), so the
    deflation's benchmark E[max] ~ 1.9 sqrt(1/500) ~ 0.085 sits ~5 OOS standard errors above
    zero: even a true Sharpe of 0 (and most genuinely good strategies) gets a DSR near 0."""
    wrong = null_study["dsr_oos_wrong"]
    assert wrong.mean() < 0.1
    assert (wrong < null_study["psr_oos"]).all()
