"""The ensemble as the equal-weight fund of the seeds' own books, held to the ledger."""

import numpy as np
import pytest

from cryptorl_jax.backtest import portfolio
from cryptorl_jax.backtest.replay import simulate
from tests.envcfg import banded_env
from tests.reference import numpy_env as ref
from tests.reference.ledger import ledger

CFG = banded_env(borrow_rate_annual=0.08)


def _close(n=900, seed=0):
    rng = np.random.default_rng(seed)
    return 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, n)))


def test_fund_is_the_mean_of_the_seeds_ledgers():
    """Three seeds, each on its own book: the fund's NAV is the mean of three units-and-cash
    ledgers, its per-hour cost the ledgers' summed cash costs over the fund's NAV."""
    close = _close()
    rng = np.random.default_rng(1)
    paths = [np.clip(np.cumsum(rng.normal(0, 0.2, len(close))), -1, 1) for _ in range(3)]
    start = 60
    sims = [simulate(close, a, CFG, start=start) for a in paths]
    fund = portfolio.equal_weight(sims)
    vol = ref.realised_vol(ref.log_returns(close), CFG.vol_window, CFG.vol_horizon_hours,
                           CFG.vol_halflife_hours)
    lev = np.array([ref.leverage(v, CFG.target_volatility, CFG.vol_floor, CFG.max_leverage)
                    for v in vol])
    rate = (CFG.fee_bps + CFG.slippage_bps) / 1e4
    books = [ledger(close, a * lev, rate, CFG.borrow_rate_annual / 8760, start,
                    band=CFG.no_trade_band) for a in paths]
    nav = np.mean([b["nav"] for b in books], axis=0)
    np.testing.assert_allclose(fund["nav"], nav, rtol=1e-9)
    np.testing.assert_allclose(np.cumprod(1 + fund["returns"]), nav[1:], rtol=1e-9)
    cash_cost = np.sum([b["cost"] for b in books], axis=0) / 3.0
    np.testing.assert_allclose(fund["cost"] * nav[:-1], cash_cost, rtol=1e-9, atol=1e-15)
    # the fund is not one book acting on the mean action
    mean_action = simulate(close, np.mean(paths, axis=0), CFG, start=start)
    assert not np.allclose(mean_action["nav"], fund["nav"], rtol=1e-3)


def test_equal_weight_returns_from_the_seeds_returns():
    r = np.random.default_rng(2).normal(0, 0.01, (4, 50))
    got = portfolio.equal_weight_returns(r)
    nav = np.cumprod(1 + r, axis=1).mean(axis=0)
    np.testing.assert_allclose(np.cumprod(1 + got), nav, rtol=1e-12)
    np.testing.assert_array_equal(portfolio.equal_weight_returns(r[0]), r[0])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="different rows"):
        portfolio.equal_weight([{"nav": np.ones(3)}, {"nav": np.ones(4)}])
    with pytest.raises(ValueError, match="at least one"):
        portfolio.equal_weight([])
