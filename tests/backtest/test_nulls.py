"""The circular-shift timing null: it detects real timing, is uniform without it, and keeps the
strategy's own exposure and charges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptorl_jax.backtest import nulls


def _market(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, n)


def test_p_value_is_the_permutation_formula():
    null = np.array([0.1, 0.5, 0.9, np.nan, 1.5])
    assert nulls.p_value(1.0, null) == pytest.approx((1 + 1) / (1 + 4))
    assert nulls.p_value(5.0, null) == pytest.approx(1 / 5)  # never 0
    assert nulls.p_value(-1.0, null) == pytest.approx(1.0)
    assert math.isnan(nulls.p_value(float("nan"), null))


def test_real_timing_is_detected():
    n = 3000
    r = _market(n, 0)
    rng = np.random.default_rng(1)
    # a position that knows the sign of the next hour's return 55 % of the time
    right = rng.random(n) < 0.55
    e = np.where(right, np.sign(r), -np.sign(r)) * 0.8
    charges = np.full(n, 1e-5)
    res = nulls.timing_null(e, r, charges, np.repeat([0, 1, 2], n // 3), n_null=300, seed=2)
    assert res.n_null == 300 and res.sharpe > 0
    assert res.p_value < 0.01


def test_no_timing_gives_uniform_p_values():
    """Positions independent of the returns: p-values spread over (0, 1], not near 0 or 1."""
    p = []
    for seed in range(60):
        n = 1500
        r = _market(n, 100 + seed)
        e = np.cumsum(np.random.default_rng(200 + seed).normal(0, 0.1, n))  # persistent, blind
        e = np.clip(e, -2, 2)
        res = nulls.timing_null(e, r, np.zeros(n), np.repeat([0, 1], n // 2), n_null=200,
                                seed=seed)
        p.append(res.p_value)
    p = np.asarray(p)
    assert 0.35 < p.mean() < 0.65
    assert (p < 0.05).mean() < 0.15 and (p > 0.95).mean() < 0.15


def test_null_keeps_the_exposure_and_the_charges():
    n = 500
    r = _market(n, 3)
    e = np.random.default_rng(4).uniform(-2, 2, n)
    c = np.abs(np.random.default_rng(5).normal(0, 1e-4, n))
    seg = np.repeat([0, 1], n // 2)
    res = nulls.timing_null(e, r, c, seg, n_null=50, seed=0, min_shift=10)
    assert res.sharpe == pytest.approx((e * r - c).mean() / (e * r - c).std(ddof=1)
                                       * math.sqrt(8760))
    # rebuild one null by hand: each segment rotated by its own lag, within the segment
    rng = np.random.default_rng(0)
    shifts = [rng.integers(10, 250 - 10 + 1, size=50) for _ in range(2)]
    k0, k1 = shifts[0][0], shifts[1][0]
    e_null = np.concatenate([np.roll(e[:250], -k0), np.roll(e[250:], -k1)])
    c_null = np.concatenate([np.roll(c[:250], -k0), np.roll(c[250:], -k1)])
    x = e_null * r - c_null
    assert res.null_sharpes[0] == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(8760))
    assert np.sort(np.abs(e_null)).tolist() == pytest.approx(np.sort(np.abs(e)).tolist())
    assert c_null.sum() == pytest.approx(c.sum())
    assert (np.abs(shifts[0]) >= 10).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="aligned"):
        nulls.timing_null(np.zeros(5), np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="exposure is not finite at position 2"):
        nulls.timing_null(np.array([0, 1, np.nan, 0.0]), np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="n_null"):
        nulls.timing_null(np.zeros(4), np.zeros(4), np.zeros(4), n_null=0)
