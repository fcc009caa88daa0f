"""SPA / StepM on two footings (backtest.inference): mean return and risk-adjusted (each
strategy vol-scaled to the benchmark's sd, M^2). The scaling and the stationary bootstrap's
variance against plain-numpy references; a half-exposure strategy with a higher Sharpe than a
rising buy & hold loses on mean return and wins risk-adjusted; a worse strategy loses on
both; the statistic is studentised (a volatile null does not hide a steady edge); StepM
finishes when its last models fall in a later round; the full-sample scale is benign (its
bootstrap spread against a scale re-estimated in every draw); the risk-adjusted SPA's size
at the boundary of equal Sharpes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import inference as inf
from tests.reference import numpy_inference as ref

N = 8760


def _rising_market(rng, n: int = N, sr_annual: float = 2.5, vol: float = 0.01) -> np.ndarray:
    """Hourly returns with fat tails (t4) and clustered volatility, annual Sharpe sr_annual."""
    h = np.zeros(n)
    e = rng.normal(size=n)
    for t in range(1, n):
        h[t] = 0.98 * h[t - 1] + 0.2 * e[t]
    z = rng.standard_t(4, n)
    r = np.exp(h / 2) * z
    r = (r - r.mean()) / r.std(ddof=1) * vol
    return r + sr_annual / math.sqrt(N) * vol


def test_vol_scale_matches_reference_and_gives_the_sharpe_difference():
    rng = np.random.default_rng(0)
    rb = _rising_market(rng, 500)
    cols = {"half": 0.5 * rb + rng.normal(1e-4, 2e-3, 500), "noise": rng.normal(0, 0.02, 500)}
    target = ref.sample_sd(rb)
    got = inf.vol_scale(pd.DataFrame(cols), target)
    want = ref.vol_scale(cols, target)
    for k in cols:
        np.testing.assert_allclose(got[k].to_numpy(), want[k], rtol=1e-12)
        # the differential's mean is sd_b (SR_k - SR_b) per period
        assert (got[k] - rb).mean() == pytest.approx(
            target * (ref.per_period_sharpe(cols[k]) - ref.per_period_sharpe(rb)), rel=1e-9)
        assert ref.sample_sd(got[k]) == pytest.approx(target, rel=1e-12)
    with pytest.raises(ValueError, match="without volatility"):
        inf.vol_scale(pd.DataFrame({"flat": np.zeros(10)}), 0.01)


def test_stationary_bootstrap_variance_matches_reference_and_arch():
    from arch.bootstrap import SPA

    rng = np.random.default_rng(1)
    x = rng.standard_t(4, (400, 2)) + np.cumsum(rng.normal(size=(400, 2)), axis=0) * 0.05
    got = inf.stationary_bootstrap_variance(x, 24)
    for j in range(2):
        assert got[j] == pytest.approx(ref.stationary_bootstrap_variance(x[:, j], 24), rel=1e-9)
    spa = SPA(np.zeros(400), -x, block_size=24, reps=10)
    spa._compute_variance()  # the estimator arch's SPA uses without nesting
    np.testing.assert_allclose(got, spa._loss_diff_var, rtol=1e-9)


def _half_exposure_case(seed: int = 0):
    """A rising buy & hold (annual Sharpe ~2.5), a half-exposure strategy with a small
    independent edge (mean below buy & hold's, Sharpe ~4), a strategy worse on both, and
    three nulls (independent, volatile)."""
    rng = np.random.default_rng(seed)
    rb = _rising_market(rng)
    frame = pd.DataFrame({"half": 0.5 * rb + rng.normal(1e-4, 1.5e-3, N),
                          "worse": rb + rng.normal(-2e-4, 4e-3, N),
                          **{f"null_{i}": rng.normal(0.0, 0.01, N) for i in range(3)}})
    return frame, rb


def test_half_exposure_with_a_higher_sharpe_loses_on_mean_and_wins_risk_adjusted():
    frame, rb = _half_exposure_case()
    sr = {c: ref.per_period_sharpe(frame[c]) for c in frame}
    assert frame["half"].mean() < rb.mean() and sr["half"] > ref.per_period_sharpe(rb)
    mean = inf.multiple_test(frame, rb, "buy_and_hold", reps=300, seed=0)
    risk = inf.risk_adjusted_test(frame, rb, "buy_and_hold", reps=300, seed=0)
    assert mean.footing == inf.MEAN_RETURN and "half" not in mean.superior
    assert mean.spa_p_consistent > 0.2
    assert risk.footing.startswith("risk-adjusted (vol-scaled to buy_and_hold's")
    assert risk.vol_scaled_to == pytest.approx(rb.std(ddof=1) * math.sqrt(N))
    assert risk.superior == ("half",) and risk.spa_p_consistent < 0.01
    assert risk.best == "half"  # the highest Sharpe
    row = risk.row()
    assert row["footing"] == risk.footing and row["stepm_superior"] == "half"


def test_a_worse_strategy_loses_on_both_footings_and_the_benchmark_beats_it_on_both():
    frame, rb = _half_exposure_case(1)
    worse = frame["worse"]
    assert worse.mean() < rb.mean()
    assert ref.per_period_sharpe(worse) < ref.per_period_sharpe(rb)
    for test in (inf.multiple_test, inf.risk_adjusted_test):
        res = test(frame[["worse"]], rb, "buy_and_hold", reps=300, seed=0)
        # a clearly worse model is not recentred (consistent p ~ 1/2, Hansen 2005)
        assert res.superior == () and res.spa_p_consistent > 0.3 and res.spa_p_upper > 0.9
        assert (worse - rb).mean() < 0
        # the other way round the inferiority shows: buy & hold beats it on either footing
        back = test(pd.DataFrame({"buy_and_hold": rb}), worse.to_numpy(), "worse", reps=300,
                    seed=0)
        assert back.superior == ("buy_and_hold",) and back.spa_p_consistent < 0.05


def test_the_statistic_is_studentised_a_volatile_null_does_not_hide_a_steady_edge():
    """'steady' beats the benchmark with a t-statistic of ~6 on a small tracking error; 'wild'
    is an independent null 20 times as volatile. Unstudentised (arch's SPA as it is), the max
    of the means is wild's noise and the edge is missed."""
    rng = np.random.default_rng(2)
    rb = rng.normal(1e-4, 0.01, N)
    frame = pd.DataFrame({"steady": rb + rng.normal(3e-5, 5e-4, N),
                          "wild": rng.normal(0.0, 0.02, N)})
    res = inf.multiple_test(frame, rb, "bench", reps=300, seed=0)
    assert res.superior == ("steady",) and res.spa_p_consistent < 0.01


def test_stepm_finishes_when_the_last_model_falls_in_a_later_round():
    """'a' is rejected in the first round; 'b' (t ~ 1.8) only once 'a' is out, with the
    one-sided 5 % critical value of a single model. arch 8.0's StepM then raises on an empty
    subset."""
    rng = np.random.default_rng(3)
    n = 3000
    e = rng.normal(0.0, 0.01, (n, 2))
    e -= e.mean(axis=0)
    omega = np.sqrt(inf.stationary_bootstrap_variance(e[:, 1], 24))[0]
    frame = pd.DataFrame({"a": 0.01 + e[:, 0], "b": 1.8 * omega / math.sqrt(n) + e[:, 1]})
    pv, sup = inf.spa_stepm(frame, 24, 500, 0, 0.05)
    assert sup == ("a", "b") and pv["consistent"] < 0.01
    # one round alone finds only 'a'
    from arch.bootstrap import SPA

    z = frame / np.sqrt(inf.stationary_bootstrap_variance(frame.to_numpy(), 24))
    spa = SPA(np.zeros(n), -z, block_size=24, reps=500, seed=np.random.default_rng(0))
    spa.compute()
    assert [int(i) for i in spa.better_models(0.05)] == [0]  # 'a' only


def test_risk_adjusted_excludes_what_cannot_be_scaled_and_needs_a_moving_benchmark():
    frame, rb = _half_exposure_case(4)
    frame = frame[["half"]].assign(idle=0.0)
    res = inf.risk_adjusted_test(frame, rb, "buy_and_hold", reps=100, seed=0)
    assert res.strategies == ("half",) and res.excluded == ("idle",)
    assert res.row()["excluded"] == "idle"
    with pytest.raises(ValueError, match="no volatility"):
        inf.risk_adjusted_test(frame, np.zeros(N), "flat", reps=100)
    # a strategy equal to the benchmark is left out of the mean-return test too
    res = inf.multiple_test(frame.assign(same=rb), rb, "buy_and_hold", reps=100, seed=0)
    assert res.excluded == ("same",)


def test_the_full_sample_scale_is_benign():
    """The risk-adjusted differential holds each series' full-sample sd fixed over the
    bootstrap draws; the spread of its mean is within 3 % of the spread when the sds are
    re-estimated in every draw (the Sharpe difference's own sampling error), on fat-tailed,
    clustered hourly returns at annual Sharpes 0 to 4."""
    from arch.bootstrap import StationaryBootstrap

    rng = np.random.default_rng(5)
    for sr in (0.0, 2.0, 4.0):
        rb = _rising_market(rng, sr_annual=sr)
        rh = 0.5 * rb + rng.normal(1e-4, 2e-3, N)
        c = rb.std(ddof=1) / rh.std(ddof=1)
        fixed, again = [], []
        for (b, h), _ in StationaryBootstrap(24, rb, rh, seed=np.random.default_rng(6)
                                             ).bootstrap(600):
            fixed.append(h.mean() * c - b.mean())
            again.append(h.mean() * b.std(ddof=1) / h.std(ddof=1) - b.mean())
        assert np.std(fixed) / np.std(again) == pytest.approx(1.0, abs=0.03), sr


def _equal_sharpe_rejections(paths: int, n: int = 4000) -> float:
    """Share of paths where the risk-adjusted SPA (consistent p < 5 %) rejects when every
    strategy's true Sharpe equals buy & hold's (exposures 0.5, 1 and 1.5 plus independent
    noise, means set to equalise the Sharpes)."""
    hits = 0
    mu, s = 2.0 / math.sqrt(N) * 0.01, 0.01
    sr = mu / s
    for p in range(paths):
        rng = np.random.default_rng(1000 + p)
        rb = rng.normal(mu, s, n)
        cols = {}
        for a, se in ((0.5, 0.002), (1.0, 0.004), (1.5, 0.003)):
            m = sr * math.sqrt(a * a * s * s + se * se) - a * mu
            cols[f"x{a}"] = a * rb + rng.normal(m, se, n)
        res = inf.risk_adjusted_test(pd.DataFrame(cols), rb, "bh", reps=200, seed=p,
                                     block_hours=24)
        hits += res.spa_p_consistent < 0.05
    return hits / paths


def test_risk_adjusted_size_at_equal_sharpes_cheap():
    assert _equal_sharpe_rejections(20) <= 4 / 20


@pytest.mark.slow
def test_risk_adjusted_size_at_equal_sharpes():
    assert _equal_sharpe_rejections(200) <= 0.08
