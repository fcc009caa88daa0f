"""The baselines that read the market (backtest.strategies): positions against hand
computations and numpy references, ridge against its closed form, the selection on train rows,
and causality (the fitted parameters and the past actions do not move when the future does)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cryptorl_jax.backtest import strategies as st
from cryptorl_jax.config import BaselinesConfig, Config
from tests.reference import numpy_baselines as ref

ENV = Config().env


def _market(T: int = 4000, seed: int = 0, trend: float = 0.0, n_feat: int = 4):
    """A random walk whose drift follows a slow average of its own shocks (`trend` > 0), and
    features: that average (noisy) and pure noise."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.01, T)
    slow = np.zeros(T)
    for t in range(1, T):
        slow[t] = 0.99 * slow[t - 1] + 0.01 * shocks[t - 1]
    r = shocks + trend * slow
    close = 100.0 * np.exp(np.cumsum(r))
    feats = np.column_stack([slow * 100 + rng.normal(0, 0.05, T),
                             rng.normal(size=(T, n_feat - 1))]).astype(np.float32)
    feats[:50] = np.nan  # a warm-up, as the real matrix has
    return st.Market(close=close, tradable=np.ones(T, bool), features=feats, lookback=400)


def test_momentum_sign_by_hand():
    close = np.array([100.0, 101.0, 99.0, 99.0, 102.0, 98.0])
    # k = 2: row 2: log(99/100) < 0; row 3: log(99/101) < 0; row 4: 102 > 99; row 5: 98 < 99
    np.testing.assert_array_equal(st.momentum_actions(close, 2), [0, 0, -1, -1, 1, -1])
    # k = 1 with a flat hour: sign 0
    np.testing.assert_array_equal(st.momentum_actions(close, 1), [0, 1, -1, 0, 1, -1])


def test_crossover_by_hand():
    close = np.exp(np.array([0.0, 1.0, 2.0, 1.0, 0.0, 0.0]))
    # fast 1 (the log price itself) vs slow 3 (mean of the last 3 log prices):
    # row 2: 2 vs 1 -> +1; row 3: 1 vs 4/3 -> -1; row 4: 0 vs 1 -> -1; row 5: 0 vs 1/3 -> -1
    np.testing.assert_array_equal(st.crossover_actions(close, 1, 3), [0, 0, 1, -1, -1, -1])


@pytest.mark.parametrize("k", [3, 24, 200])
def test_rules_match_numpy_loops(k):
    close = _market(T=700, seed=3).close
    np.testing.assert_array_equal(st.momentum_actions(close, k), ref.momentum_sign(close, k))
    np.testing.assert_allclose(st.momentum_scaled_actions(close, k),
                               ref.momentum_scaled(close, k), atol=1e-9)
    np.testing.assert_array_equal(st.crossover_actions(close, k, 2 * k),
                                  ref.crossover(close, k, 2 * k))


def test_ridge_matches_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    y = x @ rng.normal(size=6) + 0.3 + rng.normal(0, 0.5, 300)
    for alpha in (0.1, 10.0, 1000.0):
        coef, intercept = st.ridge_fit(x, y, alpha)
        ref_coef, ref_intercept = ref.ridge(x, y, alpha)
        np.testing.assert_allclose(coef, ref_coef, rtol=1e-8, atol=1e-10)
        assert intercept == pytest.approx(ref_intercept, rel=1e-8, abs=1e-10)


def test_rule_choice_is_the_best_train_sharpe():
    m = _market(T=3000, seed=2, trend=3.0)
    cfg = BaselinesConfig(momentum_lookbacks=(6, 48, 240))
    fitted = {f.name: f for f in st.fit_all(cfg, ENV, m, (500, 2500))}
    for name in ("momentum", "momentum_scaled", "crossover"):
        p = fitted[name].params
        scores = [g["train_sharpe"] for g in p["grid"]]
        assert p["train_sharpe"] == max(scores)
        assert fitted[name].n_tried == len(p["grid"])
    k = fitted["momentum"].params["lookback"]
    # recompute the chosen rule's in-sample Sharpe by hand through the same backtest
    by_row = st.momentum_actions(m.close, k)
    assert st.backtest_sharpe(m, ENV, by_row, 500, 2500) * math.sqrt(8760) == pytest.approx(
        fitted["momentum"].params["train_sharpe"])
    assert fitted["ridge"].n_tried == (len(cfg.forecast_horizons) * len(cfg.ridge_alphas)
                                       * len(cfg.forecast_smoothing_hours))
    json.dumps(st.params_record(list(fitted.values())))  # baselines.json is plain JSON


def test_ridge_policy_is_its_forecast_through_the_mapping():
    m = _market(T=3000, seed=4, trend=3.0)
    cfg = BaselinesConfig(forecast_horizons=(24,), ridge_alphas=(10.0,),
                          forecast_smoothing_hours=(6.0,))
    ridge = {f.name: f for f in st.fit_all(cfg, ENV, m, (500, 2500))}["ridge"]
    p = ridge.params
    assert p["horizon"] == 24 and p["alpha"] == 10.0 and p["smoothing_hours"] == 6.0
    # refit on all train rows: decision rows 500 .. 2475 (labels end at row 2499's close), the
    # label the next 24 h's log return over sigma_t sqrt(24)
    rows = np.arange(500, 2500 - 24)
    y = np.array([ref.forecast_target(m.close, t, 24) for t in rows])
    coef, intercept = ref.ridge(m.features[rows].astype(float), y, 10.0)
    np.testing.assert_allclose(p["coef"], coef, rtol=1e-6, atol=1e-12)
    # the forecast on every row (0 in the NaN warm-up), smoothed from row 0 by the EMA
    x = m.features.astype(float)
    raw = np.where(np.isfinite(x).all(axis=1), np.nan_to_num(x) @ coef + intercept, 0.0)
    path = ref.ema(raw, 6.0)
    scale = np.std(path[rows])
    assert p["scale"] == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(ridge.actions(2600, 2700), np.clip(path[2600:2700] / scale, -1, 1),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ridge.actions(0, 50), np.clip(path[:50] / scale, -1, 1),
                               rtol=1e-5, atol=1e-7)


def test_forecast_smoothing_cuts_the_forecasters_turnover():
    """Unsmoothed, an hourly forecast from noisy features flips with the noise; the EMA is the
    turnover control (the same fitted model, only the smoothing differs)."""
    m = _market(T=3000, seed=4, trend=3.0)
    fit, _ = st._train_forecaster("ridge", m, 24, 10.0, 500, 2500, 0)
    turnover = {hl: np.abs(np.diff(fit.policy(hl)[0](np.arange(2500, 3000)))).sum()
                for hl in (0.0, 24.0)}
    assert turnover[24.0] < 0.5 * turnover[0.0]


def test_fitted_parameters_ignore_the_future():
    """Poison every row from the end of the train window on (prices and features): every fitted
    parameter, and every action decided up to the last train row, is unchanged."""
    m = _market(T=3000, seed=5, trend=2.0)
    train = (500, 2200)
    cfg = BaselinesConfig(lightgbm=True, forecast_horizons=(1, 24))
    pytest.importorskip("lightgbm")
    clean = st.fit_all(cfg, ENV, m, train)
    rng = np.random.default_rng(9)
    close = m.close.copy()
    close[train[1]:] *= np.exp(np.cumsum(rng.normal(0, 0.05, len(close) - train[1])))
    feats = m.features.copy()
    feats[train[1]:] = rng.normal(0, 50, feats[train[1]:].shape)
    poisoned = st.fit_all(cfg, ENV, st.Market(close, m.tradable, feats, m.lookback), train)
    assert st.params_record(clean) == st.params_record(poisoned)
    for a, b in zip(clean, poisoned, strict=True):
        np.testing.assert_array_equal(a.actions(0, train[1]), b.actions(0, train[1]))


def test_forecaster_inner_fit_does_not_read_the_validation_rows():
    """The inner fit (before the validation rows v0) is purged: its labels end at row v0 - 1,
    so changing the closes from v0 on leaves the fit as it was."""
    m = _market(T=3000, seed=6, trend=2.0)
    v0 = 2000
    a = st._train_forecaster("ridge", m, 24, 10.0, 500, v0, 0)
    close = m.close.copy()
    close[v0:] *= 1.5
    b = st._train_forecaster("ridge", st.Market(close, m.tradable, m.features, m.lookback), 24,
                             10.0, 500, v0, 0)
    assert a[1] == b[1]


def test_disabled_baselines_fit_nothing():
    assert st.fit_all(BaselinesConfig(enabled=False), ENV, _market(T=1500), (500, 1200)) == []


def _scaled_market(raw: np.ndarray, close: np.ndarray, train: tuple[int, int]) -> st.Market:
    """A market whose features are raw standardised by the mean and sd of the train rows, and
    whose refit(lo, hi) standardises by those of rows [lo, hi) (the runner's scaler, in
    small): the segment's matrix, as `walkforward.runner.baseline_market` builds it."""
    def refit(lo: int, hi: int) -> np.ndarray:
        part = raw[lo:hi]
        mu, sd = np.nanmean(part, axis=0), np.nanstd(part, axis=0)
        return ((raw - mu) / sd).astype(np.float32)

    return st.Market(close=close, tradable=np.ones(len(close), bool), features=refit(*train),
                     lookback=400, refit=refit)


def _shifted_raw(m: st.Market, v0: int, end: int) -> np.ndarray:
    """m's features with the validation rows [v0, end) shifted in level (a regime change)."""
    raw = m.features.astype(np.float64).copy()
    raw[v0:end, 0] += 3.0
    raw[v0:end, 1] *= 4.0
    return raw


def test_forecasters_inner_split_reads_transforms_fitted_on_its_own_rows():
    """The inner fit and its validation rows read the features through transforms fitted on
    the inner train rows only: changing the validation rows' raw values leaves the inner
    train rows' inputs and the inner fit bit-identical (the segment's own transform, fitted
    on all train rows, moves with them: the leak this closes)."""
    m = _market(T=3000, seed=7, trend=3.0)
    train, v0 = (500, 2500), 2000  # validation_fraction 0.25
    raw = _shifted_raw(m, v0, train[1])
    clean = _scaled_market(raw, m.close, train)
    poisoned_raw = raw.copy()
    poisoned_raw[v0:train[1]] = np.random.default_rng(3).normal(0, 40, (train[1] - v0, 4))
    poisoned = _scaled_market(poisoned_raw, m.close, train)
    assert not np.allclose(clean.features[500:v0], poisoned.features[500:v0])  # the leak
    a, b = st.inner_market(clean, train[0], v0), st.inner_market(poisoned, train[0], v0)
    np.testing.assert_array_equal(a.features[:v0], b.features[:v0])
    fit_a = st._train_forecaster("ridge", a, 24, 10.0, train[0], v0, 0)
    fit_b = st._train_forecaster("ridge", b, 24, 10.0, train[0], v0, 0)
    assert fit_a[1] == fit_b[1]


def test_forecasters_selection_is_that_of_inner_train_transforms():
    """fit_all's validation scores are those of features transformed on the inner train rows
    only, not those of the segment's transform (which differ when the validation rows shift)."""
    m = _market(T=3000, seed=7, trend=3.0)
    train, v0 = (500, 2500), 2000
    cfg = BaselinesConfig(forecast_horizons=(1, 24), ridge_alphas=(10.0, 1000.0))
    market = _scaled_market(_shifted_raw(m, v0, train[1]), m.close, train)

    def scores(mk):
        ridge = {f.name: f for f in st.fit_all(cfg, ENV, mk, train)}["ridge"]
        return [g["validation_sharpe"] for g in ridge.params["grid"]]

    got = scores(market)
    inner_only = st.Market(market.close, market.tradable, market.refit(train[0], v0),
                           market.lookback)
    full_train = st.Market(market.close, market.tradable, market.features, market.lookback)
    assert got == scores(inner_only)
    assert got != scores(full_train)
