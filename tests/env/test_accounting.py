"""The shared accounting against the plain-numpy loop reference (tests/reference/numpy_env.py)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.env import accounting
from tests.reference import numpy_env as ref


def _close(n: int, seed: int = 0, sigma: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def test_log_returns_match_reference():
    close = _close(300)
    expected = ref.log_returns(close)
    np.testing.assert_allclose(accounting.log_returns_np(close), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(accounting.log_returns(jnp.asarray(close))), expected,
                               atol=2e-6)
    assert accounting.log_returns_np(close)[0] == 0.0


@pytest.mark.parametrize("vol_window,horizon,halflife", [(24, 24, None), (5, 1, None),
                                                         (2, 8, None), (48, 8760, 12.0),
                                                         (30, 24, 3.5)])
def test_realised_vol_matches_reference(vol_window, horizon, halflife):
    r = ref.log_returns(_close(200, seed=1))
    expected = ref.realised_vol(r, vol_window, horizon, halflife)
    host = accounting.realised_vol_np(r, vol_window, horizon, halflife)
    dev = np.asarray(accounting.realised_vol(jnp.asarray(r, jnp.float32), vol_window, horizon,
                                             halflife))
    assert np.isnan(expected[:vol_window]).all()
    assert np.isnan(host[:vol_window]).all() and np.isnan(dev[:vol_window]).all()
    np.testing.assert_allclose(host[vol_window:], expected[vol_window:], rtol=1e-12)
    np.testing.assert_allclose(dev[vol_window:], expected[vol_window:], rtol=1e-5)


@pytest.mark.parametrize("halflife", [None, 6.0])
def test_realised_vol_is_causal(halflife):
    r = ref.log_returns(_close(120, seed=2))
    before = accounting.realised_vol_np(r, 24, 24, halflife)
    changed = r.copy()
    changed[80:] *= 5.0
    after = accounting.realised_vol_np(changed, 24, 24, halflife)
    np.testing.assert_array_equal(before[:80], after[:80])
    assert not np.allclose(before[80:], after[80:])


def test_weighted_vol_depends_only_on_its_window():
    """A finite exponentially weighted window: s_t is the same in any slice holding rows
    t-V+1..t (the walk-forward's train and test slices start at different rows)."""
    r = ref.log_returns(_close(400, seed=5))
    full = accounting.realised_vol_np(r, 48, 8760, 12.0)
    lo = 150  # a slice starting at row lo: its r_0 is re-based to 0, so rows >= lo + 48 + 1
    part = accounting.realised_vol_np(np.r_[0.0, r[lo + 1:]], 48, 8760, 12.0)
    np.testing.assert_allclose(part[49:], full[lo + 49:], rtol=1e-12)


def test_weighted_vol_reacts_faster_than_equal_weights():
    """The half-life puts more weight on recent returns: after a jump in vol the weighted
    estimate moves first, and with a very long half-life it is the plain rolling std."""
    rng = np.random.default_rng(6)
    r = np.r_[0.0, rng.normal(0, 0.005, 300), rng.normal(0, 0.02, 30)]
    eq = accounting.realised_vol_np(r, 200, 24)
    fast = accounting.realised_vol_np(r, 200, 24, 10.0)
    assert fast[-1] > eq[-1] * 1.5
    np.testing.assert_allclose(accounting.realised_vol_np(r, 200, 24, 1e9)[200:], eq[200:],
                               rtol=1e-6)
    w = accounting.vol_weights(200, 10.0)
    assert w.sum() == pytest.approx(1.0) and w[10] == pytest.approx(w[0] / 2)


def test_leverage_cap_binds_when_vol_is_low():
    target, floor, cap = 0.05, 0.005, 2.0
    low = jnp.asarray([1e-6, 0.001, 0.01, 0.025])  # target / vol >= cap for all
    np.testing.assert_allclose(np.asarray(accounting.leverage(low, target, floor, cap)), cap)
    # The floor: vol below it is read as the floor (cap lifted to see it).
    np.testing.assert_allclose(float(accounting.leverage(1e-6, target, floor, 100.0)),
                               target / floor, rtol=1e-6)


def test_leverage_falls_as_vol_rises():
    vols = np.linspace(0.026, 0.5, 50)
    lev = np.asarray(accounting.leverage(jnp.asarray(vols), 0.05, 0.005, 2.0))
    assert (np.diff(lev) < 0).all()
    np.testing.assert_allclose(lev, 0.05 / vols, rtol=1e-6)
    for v, l in zip(vols, lev):
        assert l == pytest.approx(ref.leverage(v, 0.05, 0.005, 2.0), rel=1e-6)


def test_leverage_is_zero_where_vol_is_undefined():
    lev = accounting.leverage(jnp.asarray([jnp.nan, 0.1]), 0.05, 0.005, 2.0)
    np.testing.assert_allclose(np.asarray(lev), [0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(accounting.leverage_np(np.array([np.nan, 0.1]), 0.05, 0.005, 2.0),
                               [0.0, 0.5])


def test_step_accounting_and_reward_match_reference():
    rng = np.random.default_rng(3)
    n = 500
    nav = rng.uniform(0.5, 2.0, n)
    prev_e = rng.uniform(-2, 2, n)
    a = rng.uniform(-1, 1, n)
    lev = rng.uniform(0, 2, n)
    r_next = rng.normal(0, 0.02, n)
    rate = 7e-4
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    acc = accounting.step_accounting(f(nav), f(prev_e), f(a), f(lev), f(r_next), rate)
    rew = accounting.reward(acc.pnl, acc.turnover, 100.0, 0.3, 0.02)
    for i in range(n):
        exp = ref.account(nav[i], prev_e[i], a[i], lev[i], r_next[i], rate)
        assert float(acc.exposure[i]) == pytest.approx(exp["exposure"], abs=1e-6)
        assert float(acc.turnover[i]) == pytest.approx(exp["turnover"], abs=1e-6)
        assert float(acc.cost[i]) == pytest.approx(exp["cost"], abs=1e-9)
        assert float(acc.pnl[i]) == pytest.approx(exp["pnl"], abs=1e-7)
        assert float(acc.next_nav[i]) == pytest.approx(exp["next_nav"], rel=1e-6)
        exp_rew = ref.reward(exp["pnl"], exp["turnover"], 100.0, 0.3, 0.02)
        assert float(rew.reward[i]) == pytest.approx(exp_rew, abs=1e-5)
    np.testing.assert_allclose(np.asarray(rew.pnl_term - rew.churn - rew.smooth),
                               np.asarray(rew.reward), atol=1e-6)


def test_accounting_equations_by_hand():
    # e = 0.5 * 1.5 = 0.75; u = |0.75 - 0.25| = 0.5; cost = 7e-4 * 0.5; gross = 0.75 (e^0.01 - 1)
    acc = accounting.step_accounting(2.0, 0.25, 0.5, 1.5, 0.01, 7e-4)
    gross = 0.75 * (math.exp(0.01) - 1.0)
    assert float(acc.exposure) == pytest.approx(0.75)
    assert float(acc.turnover) == pytest.approx(0.5)
    assert float(acc.cost) == pytest.approx(3.5e-4)
    assert float(acc.gross) == pytest.approx(gross, rel=1e-6)
    assert float(acc.next_nav) == pytest.approx(2.0 * (1 + gross - 3.5e-4), rel=1e-6)
    assert float(acc.pnl) == pytest.approx(math.log(1 + gross - 3.5e-4), rel=1e-5)
    # the penalties act on the turnover u = 0.5: churn 0.1 * 0.5, smooth 0.02 * 0.25
    rew = accounting.reward(acc.pnl, acc.turnover, 100.0, 0.1, 0.02)
    assert float(rew.churn) == pytest.approx(0.05)
    assert float(rew.smooth) == pytest.approx(0.005)
    assert float(rew.reward) == pytest.approx(100 * float(acc.pnl) - 0.055, rel=1e-6)


def test_no_trade_band_holds_the_drifted_weight_inside_and_trades_to_target_outside():
    # target 0.5 * 1.5 = 0.75 from w = 0.7: inside a 0.1 band -> hold 0.7, no turnover, no cost
    inside = accounting.step_accounting(1.0, 0.7, 0.5, 1.5, 0.01, 7e-4, band=0.1)
    assert float(inside.exposure) == pytest.approx(0.7)
    assert float(inside.turnover) == 0.0 and float(inside.cost) == 0.0
    # from w = 0.6 the target leaves the band: trade all the way to it
    outside = accounting.step_accounting(1.0, 0.6, 0.5, 1.5, 0.01, 7e-4, band=0.1)
    assert float(outside.exposure) == pytest.approx(0.75)
    assert float(outside.turnover) == pytest.approx(0.15)
    # band 0 trades any difference; a row that cannot trade holds whatever the band
    assert float(accounting.step_accounting(1.0, 0.7, 0.5, 1.5, 0.01, 7e-4).exposure) == \
        pytest.approx(0.75)
    held = accounting.step_accounting(1.0, 0.6, 0.5, 1.5, 0.01, 7e-4, tradable=False, band=0.0)
    assert float(held.exposure) == pytest.approx(0.6)
    rng = np.random.default_rng(8)
    w, a, lev = rng.uniform(-2, 2, 300), rng.uniform(-1, 1, 300), rng.uniform(0, 2, 300)
    acc = accounting.step_accounting(1.0, jnp.asarray(w), jnp.asarray(a), jnp.asarray(lev),
                                     0.0, 7e-4, band=0.2)
    for i in range(300):
        exp = ref.account(1.0, w[i], a[i], lev[i], 0.0, 7e-4, band=0.2)
        assert float(acc.exposure[i]) == pytest.approx(exp["exposure"], abs=1e-6)


def test_penalties_charge_the_ledgers_turnover_not_the_action_change():
    """Holding a steady exposure while leverage moves needs trades (penalised); an action that
    swings with leverage to keep the exposure costs nothing and is not penalised."""
    # a steady action 1 while L moves 1.0 -> 1.5: the exposure moves 0.5 (a trade of 0.5)
    steady = accounting.step_accounting(1.0, 1.0, 1.0, 1.5, 0.0, 7e-4)
    rew = accounting.reward(steady.pnl, steady.turnover, 100.0, 0.3, 0.0)
    assert float(rew.churn) == pytest.approx(0.3 * 0.5)
    # the action falls 1 -> 2/3 as L rises to 1.5: exposure stays 1, no trade, no penalty
    swing = accounting.step_accounting(1.0, 1.0, 2.0 / 3.0, 1.5, 0.0, 7e-4)
    rew = accounting.reward(swing.pnl, swing.turnover, 100.0, 0.3, 0.02)
    assert float(swing.turnover) == pytest.approx(0.0, abs=1e-6)
    assert float(rew.churn) == pytest.approx(0.0, abs=1e-6)
    assert float(rew.smooth) == pytest.approx(0.0, abs=1e-6)


def test_zero_cost_nav_is_the_frictionless_product():
    rng = np.random.default_rng(4)
    n = 1000
    e = rng.uniform(-2, 2, n)
    r = rng.normal(0, 0.01, n)
    nav, prev = jnp.float32(1.0), jnp.float32(0.0)
    for i in range(n):
        acc = accounting.step_accounting(nav, prev, jnp.float32(e[i]), 1.0, jnp.float32(r[i]), 0.0)
        assert float(acc.cost) == 0.0
        nav, prev = acc.next_nav, acc.exposure
    expected = np.prod(1.0 + e * np.expm1(r))
    assert float(nav) == pytest.approx(expected, rel=1e-4)


def test_total_loss_is_floored_not_nan():
    acc = accounting.step_accounting(1.0, 0.0, 1.0, 3.0, math.log(0.5), 0.0)  # gross = -1.5
    assert float(acc.next_nav) == pytest.approx(accounting.MIN_GROWTH, rel=0.05)
    assert np.isfinite(float(acc.pnl))
