"""Turnover attribution: what the agent chose vs what vol targeting and drift made."""

import numpy as np

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
