"""The action-rotation timing null: it detects real timing, computes the actual Sharpe as the
fund `simulate` books, and re-applies the market's own leverage to every rotation. Its size on
real BTC is tests/backtest/test_null_size.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cryptorl_jax.backtest import nulls, portfolio
from cryptorl_jax.backtest.replay import simulate, simulate_paths
from cryptorl_jax.config import EnvConfig
from cryptorl_jax.env import accounting

CFG = EnvConfig(borrow_rate_annual=0.08)


def _close(n: int, seed: int, sigma: float = 0.008) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def _market(close: np.ndarray, first: int, cfg: EnvConfig = CFG):
    """(leverage, R_{t+1}) at the decision rows first .. len(close) - 2."""
    vol = accounting.realised_vol_np(accounting.log_returns_np(close), cfg.vol_window,
                                     cfg.vol_horizon_hours, cfg.vol_halflife_hours)
    lev = accounting.leverage_np(vol, cfg.target_volatility, cfg.vol_floor, cfg.max_leverage)
    t = np.arange(first, len(close) - 1)
    return lev[t], close[t + 1] / close[t] - 1.0


def _sharpe(x: np.ndarray) -> float:
    return float(x.mean() / x.std(ddof=1) * math.sqrt(8760))


def _blind(n: int, seed: int, s: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.cumsum(rng.normal(0.0, 0.1, (s, n)), axis=1), -1.0, 1.0)


def test_p_value_is_the_permutation_formula():
    null = np.array([0.1, 0.5, 0.9, np.nan, 1.5])
    assert nulls.p_value(1.0, null) == pytest.approx((1 + 1) / (1 + 4))
    assert nulls.p_value(5.0, null) == pytest.approx(1 / 5)  # never 0
    assert nulls.p_value(-1.0, null) == pytest.approx(1.0)
    assert math.isnan(nulls.p_value(float("nan"), null))


def test_real_timing_is_detected():
    close = _close(3600, 0)
    first = CFG.vol_window + 1
    lev, ret = _market(close, first)
    n = len(lev)
    rng = np.random.default_rng(1)
    # two seeds, each knowing the sign of the next hour's return 55 % of the time
    right = rng.random((2, n)) < 0.55
    actions = np.where(right, np.sign(ret), -np.sign(ret)) * 0.8
    seg = np.repeat([0, 1, 2], n // 3 + 1)[:n]
    res = nulls.action_timing_null(actions, lev, ret, np.ones(n, bool), seg, CFG, n_null=300,
                                   seed=2)
    assert res.n_null == 300 and res.n_seeds == 2
    # flipping almost every hour, it pays more in costs than it earns; its rotations pay the
    # same costs without the edge
    assert res.sharpe > res.null_sharpes.max()
    assert res.p_value < 0.01
    assert res.p_value == nulls.p_value(res.sharpe, res.null_sharpes)


def test_actual_sharpe_is_the_simulated_fund():
    """The null's actual Sharpe is that of the equal-weight fund of the seeds' books that
    `simulate` runs, each segment from flat."""
    close = _close(1600, 3)
    first = CFG.vol_window + 20
    ends = [first + 500, len(close) - 1]  # two segments of decision rows
    actions = _blind(len(close), 4, s=2)
    tradable = np.random.default_rng(5).random(len(close)) > 0.03
    fund, lev = [], []
    for lo, hi in zip([first, ends[0]], ends):
        sims = [simulate(close[:hi + 1], a[:hi + 1], CFG, start=lo,
                         tradable=tradable[:hi + 1]) for a in actions]
        fund.append(portfolio.equal_weight(sims)["returns"])
        lev.append(sims[0]["leverage"])
    lev = np.concatenate(lev)
    t = np.arange(first, len(close) - 1)
    seg = np.where(t < ends[0], 0, 1)
    res = nulls.action_timing_null(actions[:, t], lev, close[t + 1] / close[t] - 1.0,
                                   tradable[t], seg, CFG, n_null=20, seed=0)
    assert res.sharpe == pytest.approx(_sharpe(np.concatenate(fund)), rel=1e-9)


def _rebuilt_null_draw(rotated, lev, ret, tradable, bounds, cfg):
    """One null draw's Sharpe rebuilt by hand: each segment's rows of the rotated paths
    re-simulated from flat; with no band the exposure is the rotated action times the
    UNROTATED leverage wherever the bar traded."""
    fund = []
    for lo, hi in bounds:
        sim = simulate_paths(rotated[:, lo:hi], lev[lo:hi], np.log1p(ret[lo:hi]),
                             tradable[lo:hi], cfg)
        traded = tradable[lo:hi]
        np.testing.assert_allclose(sim["exposure"][:, traded],
                                   (rotated[:, lo:hi] * lev[lo:hi])[:, traded], rtol=1e-12)
        fund.append(portfolio.equal_weight_returns(sim["returns"]))
    return _sharpe(np.concatenate(fund))


def _two_segment_market(cfg):
    close = _close(1500, 6)
    lev, ret = _market(close, cfg.vol_window + 1, cfg)
    n = len(lev)
    actions = _blind(n, 7, s=2)
    tradable = np.random.default_rng(8).random(n) > 0.05
    seg = np.repeat([4, 9], [600, n - 600])
    return actions, lev, ret, tradable, seg


def test_every_rotation_reapplies_the_markets_leverage():
    """One null draw rebuilt by hand: the seeds' whole stitched action paths rotated by one lag
    k in [M + 1, N - M - 1] (the same for every seed), cut at the segments, each re-simulated
    from flat with the market's own leverage."""
    cfg = dataclasses.replace(CFG, no_trade_band=0.0)
    actions, lev, ret, tradable, seg = _two_segment_market(cfg)
    n = len(lev)
    bounds = nulls.block_bounds(seg, n)
    assert bounds == [(0, 600), (600, n)]
    lags = nulls.stitched_lags(n, 30, seed=11, min_shift=10, memory_hours=100)
    assert lags.shape == (30,) and (lags >= 101).all() and (lags <= n - 101).all()
    rotated = np.roll(actions, -lags[0], axis=1)  # a'_t = a_{(t + k) mod N}
    res = nulls.action_timing_null(actions, lev, ret, tradable, seg, cfg, n_null=30, seed=11,
                                   min_shift=10, memory_hours=100)
    assert res.memory_hours == 100 and res.scheme == "stitched" and res.reason is None
    assert res.null_sharpes[0] == pytest.approx(
        _rebuilt_null_draw(rotated, lev, ret, tradable, bounds, cfg), rel=1e-9)
    # the same lag for every seed: two copies of one seed are that seed's book
    one = nulls.action_timing_null(actions[0], lev, ret, tradable, seg, cfg, n_null=30,
                                   seed=11, memory_hours=100)
    two = nulls.action_timing_null(np.stack([actions[0]] * 2), lev, ret, tradable, seg, cfg,
                                   n_null=30, seed=11, memory_hours=100)
    np.testing.assert_allclose(two.null_sharpes, one.null_sharpes, rtol=1e-9)


def test_the_segments_scheme_rotates_within_each_segment():
    """scheme="segments" (the null before issue 39 at M = 0): one lag per segment and draw,
    a'_t = a_{lo + (t - lo + k) mod n_b}."""
    cfg = dataclasses.replace(CFG, no_trade_band=0.0)
    actions, lev, ret, tradable, seg = _two_segment_market(cfg)
    n = len(lev)
    bounds = nulls.block_bounds(seg, n)
    lags = nulls.draw_lags(bounds, 30, seed=11, min_shift=10)
    assert lags.shape == (30, 2) and (lags >= 10).all()
    assert (lags[:, 0] <= 590).all() and (lags[:, 1] <= n - 600 - 10).all()
    k0, k1 = lags[0]
    rotated = np.concatenate([np.roll(actions[:, :600], -k0, axis=1),
                              np.roll(actions[:, 600:], -k1, axis=1)], axis=1)
    res = nulls.action_timing_null(actions, lev, ret, tradable, seg, cfg, n_null=30, seed=11,
                                   min_shift=10, scheme="segments")
    assert res.null_sharpes[0] == pytest.approx(
        _rebuilt_null_draw(rotated, lev, ret, tradable, bounds, cfg), rel=1e-9)
    # with a memory, every segment's lags exceed it; a segment too short for it: undefined
    deep = nulls.draw_lags(bounds, 50, seed=3, memory_hours=200)
    assert (deep >= 201).all() and (deep[:, 0] <= 399).all()
    short = nulls.action_timing_null(actions, lev, ret, tradable, seg, cfg, n_null=30,
                                     memory_hours=299, scheme="segments")
    assert math.isnan(short.p_value) and "segment 0" in short.reason


def test_every_lag_exceeds_the_memory_and_short_paths_are_undefined():
    """Lags lie in [M + 1, N - M - 1] (min_shift below M + 1); when that range holds at most
    n_null lags each is used once; N <= 2M + 2 leaves none: p NaN with the reason, the
    strategy's own Sharpe still computed."""
    for n, mem in ((1000, 0), (1000, 300), (5000, 481), (965, 481)):
        lags = nulls.stitched_lags(n, 200, seed=1, memory_hours=mem)
        lo = max(mem + 1, min(nulls.MIN_SHIFT_HOURS, n // 4))
        assert len(lags) > 0 and lags.min() >= lo and lags.max() <= n - lo, (n, mem)
    every = nulls.stitched_lags(1000, 500, memory_hours=300)
    np.testing.assert_array_equal(every, np.arange(301, 700))  # 399 lags <= 500: each once
    assert nulls.too_short(965, 481) is None and len(nulls.stitched_lags(965, 9, 0, 24, 481)) == 2
    for n in (964, 963, 100):  # N <= 2M + 2
        assert len(nulls.stitched_lags(n, 100, memory_hours=481)) == 0
    assert nulls.too_short(962, 481) == ("OOS too short for the timing null at memory "
                                         "M = 481 h: 962 h, it needs at least 965 h (lags from "
                                         "482 h to N - 482 h)")
    close = _close(1300, 2)
    lev, ret = _market(close, CFG.vol_window + 1)
    n = len(lev)
    a = _blind(n, 3, s=2)
    res = nulls.action_timing_null(a, lev, ret, np.ones(n, bool), None, CFG, n_null=50,
                                   memory_hours=(n - 2) // 2)
    assert math.isnan(res.p_value) and res.n_null == 0 and math.isfinite(res.sharpe)
    assert res.reason == nulls.too_short(n, (n - 2) // 2)
    full = nulls.action_timing_null(a, lev, ret, np.ones(n, bool), None, CFG, n_null=50)
    assert res.sharpe == full.sharpe and full.reason is None
    # N = 2M + 4: the three lags M + 1 .. M + 3, each once
    assert n % 2 == 0
    few = nulls.action_timing_null(a, lev, ret, np.ones(n, bool), None, CFG, n_null=50,
                                   memory_hours=(n - 4) // 2)
    assert few.n_null == 3 and few.reason is None and math.isfinite(few.p_value)


def test_a_constant_path_has_no_timing_to_test():
    """Vol-targeted buy & hold (a = 1) equals each of its rotations: p = 1, not evidence
    against it; a flat book has no Sharpe (p undefined)."""
    close = _close(1200, 9)
    lev, ret = _market(close, CFG.vol_window + 1)
    n = len(lev)
    seg = np.repeat([0, 1], [300, n - 300])
    res = nulls.action_timing_null(np.ones((2, n)), lev, ret, np.ones(n, bool), seg, CFG,
                                   n_null=50)
    assert math.isfinite(res.sharpe) and res.p_value == 1.0
    assert (res.null_sharpes == res.sharpe).all()
    flat = nulls.action_timing_null(np.zeros(n), lev, ret, np.ones(n, bool), None, CFG,
                                    n_null=5)
    assert math.isnan(flat.p_value)


def test_bad_input_is_refused():
    n = 40
    lev, ret, ok = np.ones(n), np.zeros(n), np.ones(n, bool)
    a = np.zeros((2, n))
    with pytest.raises(ValueError, match=r"leverage must have shape \(40,\)"):
        nulls.action_timing_null(a, np.ones(n - 1), ret, ok, None, CFG)
    with pytest.raises(ValueError, match=r"segments must have shape \(40,\)"):
        nulls.action_timing_null(a, lev, ret, ok, np.zeros(n + 1), CFG)
    bad = a.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"actions must be finite.*actions\[1, 7\]"):
        nulls.action_timing_null(bad, lev, ret, ok, None, CFG)
    bad[1, 7] = 1.5
    with pytest.raises(ValueError, match=r"in \[-1, 1\]: actions\[1, 7\] holds 1.5"):
        nulls.action_timing_null(bad, lev, ret, ok, None, CFG)
    neg = lev.copy()
    neg[3] = -0.5
    with pytest.raises(ValueError, match=r"leverage must be finite and >= 0: position 3"):
        nulls.action_timing_null(a, neg, ret, ok, None, CFG)
    r = ret.copy()
    r[5] = np.inf
    with pytest.raises(ValueError, match=r"market_return must be finite.*position 5"):
        nulls.action_timing_null(a, lev, r, ok, None, CFG)
    with pytest.raises(ValueError, match="n_null"):
        nulls.action_timing_null(a, lev, ret, ok, None, CFG, n_null=0)
    with pytest.raises(ValueError, match=r"actions\[0, 2\]"):
        simulate_paths(np.array([[0.0, 0.0, 2.0]]), np.ones(3), np.zeros(3), np.ones(3, bool),
                       CFG)
    with pytest.raises(ValueError, match=r"tradable must have shape \(3,\)"):
        simulate_paths(np.zeros((1, 3)), np.ones(3), np.zeros(3), np.ones(4, bool), CFG)
