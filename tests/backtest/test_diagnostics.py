"""Turnover attribution: what the agent chose vs what vol targeting and drift made."""

import numpy as np
import pytest

from cryptorl_jax.backtest.diagnostics import turnover_attribution
from cryptorl_jax.backtest.replay import simulate
from tests.envcfg import banded_env, original_env


def _close(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    return 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, n)))


def _split(sim):
    return turnover_attribution(sim["action"], sim["leverage"], sim["weight"], sim["turnover"])


def test_a_constant_action_makes_only_mechanical_turnover():
    for cfg in (original_env(), banded_env()):
        sim = simulate(_close(), np.ones(1500), cfg, start=60)
        chosen, mech = _split(sim)
        np.testing.assert_allclose(chosen + mech, sim["turnover"], rtol=1e-12, atol=1e-15)
        first = int(np.argmax(sim["turnover"] > 0))  # the entry trade is chosen
        assert chosen[first] > 0
        assert chosen[first + 1:].sum() < 1e-9 * max(mech.sum(), 1.0)
        assert mech.sum() > 0


def test_a_decision_only_book_has_only_chosen_turnover():
    """Leverage fixed at the cap (a huge target) and zero returns: no drift, no re-leverage:
    every trade is a change of the action."""
    close = np.full(800, 100.0)  # constant price: r = 0, vol 0 -> floored, L at the cap
    cfg = original_env(target_volatility=100.0, fee_bps=0.0, slippage_bps=0.0,
                       borrow_rate_annual=0.0)  # no charge moves the weight either
    a = np.repeat(np.random.default_rng(1).uniform(-1, 1, 80), 10)
    sim = simulate(close, a, cfg, start=30)
    chosen, mech = _split(sim)
    np.testing.assert_allclose(chosen, sim["turnover"], atol=1e-12)
    assert mech.max() < 1e-12


def test_random_actions_are_mostly_chosen_and_parts_add_up():
    sim = simulate(_close(seed=3), np.random.default_rng(4).uniform(-1, 1, 1500),
                   banded_env(), start=60)
    chosen, mech = _split(sim)
    np.testing.assert_allclose(chosen + mech, sim["turnover"], rtol=1e-12, atol=1e-15)
    assert (chosen >= 0).all() and (mech >= -1e-15).all()
    assert chosen.sum() > 0.8 * sim["turnover"].sum()


# --------------------------------------------------------------------------------------------
# diagnostics per frame, flags, verdict
# --------------------------------------------------------------------------------------------

import pandas as pd  # noqa: E402

from cryptorl_jax.backtest import diagnostics as diag  # noqa: E402


def _frame(strategy, exposure, bh=None, actions=None, turnover=None, mechanical=None):
    n = len(strategy)
    f = pd.DataFrame({"strategy": strategy, "exposure": exposure,
                      "buy_and_hold": bh if bh is not None else np.zeros(n),
                      "turnover": turnover if turnover is not None else np.zeros(n)})
    f["turnover_mechanical"] = mechanical if mechanical is not None else np.zeros(n)
    for s, a in enumerate(actions or []):
        f[f"action_{s}"] = a
        f[f"seed_{s}"] = strategy
    return f


def test_memorised_flag_needs_a_high_in_sample_sharpe_far_above_oos():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 4000)
    oos = _frame(noise - 0.0005, np.full(4000, 0.5))
    good_in_sample = _frame(noise + 0.002, np.full(4000, 0.5))  # Sharpe ~ 18
    d = diag.frame_diagnostics(oos, good_in_sample)
    assert d["insample_sharpe"] > 10 and d["oos_sharpe"] < 0
    assert "memorised" in diag.flags_of(d)
    honest = diag.frame_diagnostics(oos, _frame(noise - 0.0005, np.full(4000, 0.5)))
    assert "memorised" not in diag.flags_of(honest)


def test_collapsed_flat_and_churning_flags():
    rng = np.random.default_rng(1)
    bh = rng.normal(0, 0.01, 3000)
    collapsed = diag.frame_diagnostics(_frame(bh * 0.98, np.full(3000, 0.98), bh))
    assert "collapsed to buy & hold" in diag.flags_of(collapsed)
    flat = diag.frame_diagnostics(_frame(bh * 0.01, np.full(3000, 0.01), bh))
    assert diag.flags_of(flat) == ["flat"]
    churn = diag.frame_diagnostics(_frame(bh * 0.3, np.full(3000, 0.3), -bh,
                                          turnover=np.full(3000, 0.02),
                                          mechanical=np.full(3000, 0.005)))
    assert churn["turnover"] == pytest.approx(0.02 * 8760)
    assert churn["mechanical_share"] == pytest.approx(0.25)
    assert churn["turnover_per_exposure"] == pytest.approx(0.02 * 8760 / 0.3)
    assert diag.flags_of(churn) == ["churning"]


def test_action_dispersion_across_seeds():
    a0 = np.linspace(-1, 1, 100)
    d = diag.frame_diagnostics(_frame(np.zeros(100) + 1e-4, np.ones(100), actions=[a0, a0]))
    assert d["action_dispersion"] == 0.0 and d["action_std"] > 0.5
    d = diag.frame_diagnostics(_frame(np.zeros(100) + 1e-4, np.ones(100), actions=[a0, -a0]))
    assert d["action_dispersion"] == pytest.approx(np.abs(a0).mean())
