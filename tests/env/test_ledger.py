"""The env, `backtest.simulate` and the OOS rollout against the units-and-cash ledger (float64).

tests/reference/ledger.py holds units and cash and trades to q_t = e_t NAV_t / c_t at every
close; the package's accounting carries the drifted weight instead. The two must agree to
1e-9 relative in float64 for a constant exposure of 2, a constant -1 and a random path, with
trading costs and financing on, and with bars that cannot trade; both with the original vol
targeting (a 24-hour std, a trade at every change) and with the default's shape (an
exponentially weighted vol and a no-trade band, which the ledger applies to what it holds).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.env import accounting, trading
from cryptorl_jax.training.rollout import policy_rollout
from tests.envcfg import banded_env, original_env
from tests.reference import numpy_env as ref
from tests.reference.ledger import ledger

N, START = 600, 30
RTOL = 1e-9
# a huge vol target makes L_t = max_leverage (2) at every defined row
CFG = original_env(target_volatility=100.0, borrow_rate_annual=0.08, fee_bps=5.0,
                   slippage_bps=2.0)
BANDED = banded_env(target_volatility=100.0, borrow_rate_annual=0.08, fee_bps=5.0,
                    slippage_bps=2.0, no_trade_band=0.05)


def _close(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, N)))


def _paths():
    rng = np.random.default_rng(7)
    random = rng.uniform(-1.0, 1.0, N)
    slow = np.clip(np.cumsum(rng.normal(0.0, 0.08, N)), -1.0, 1.0)  # a persistent action path
    return {"constant_2": (CFG, np.full(N, 1.0)),  # a = 1, L = 2: e = 2
            "constant_minus_1": (CFG, np.full(N, -0.5)),  # e = -1
            "random": (dataclasses.replace(CFG, target_volatility=0.05), random),
            "banded_constant_2": (BANDED, np.full(N, 1.0)),
            "banded_random": (dataclasses.replace(BANDED, target_volatility=0.5), random),
            "banded_slow": (dataclasses.replace(BANDED, target_volatility=0.5), slow)}


def _expected(close, actions, cfg, tradable=None):
    """The ledger run on the target path a_t * L_t of the numpy reference, with the band."""
    vol = ref.realised_vol(ref.log_returns(close), cfg.vol_window, cfg.vol_horizon_hours,
                           cfg.vol_halflife_hours)
    lev = np.array([ref.leverage(v, cfg.target_volatility, cfg.vol_floor, cfg.max_leverage)
                    for v in vol])
    rate = (cfg.fee_bps + cfg.slippage_bps) / 1e4
    return ledger(close, actions * lev, rate, cfg.borrow_rate_annual / 8760.0, START, tradable,
                  band=cfg.no_trade_band)


def _tradable(seed: int = 3) -> np.ndarray:
    m = np.ones(N, bool)
    m[np.random.default_rng(seed).choice(np.arange(START, N - 1), 40, replace=False)] = False
    return m


@pytest.mark.parametrize("name", list(_paths()))
@pytest.mark.parametrize("with_holds", [False, True])
def test_simulate_matches_the_ledger(name, with_holds):
    cfg, actions = _paths()[name]
    close = _close()
    tradable = _tradable() if with_holds else None
    exp = _expected(close, actions, cfg, tradable)
    out = simulate(close, actions, cfg, start=START, tradable=tradable)
    assert out["nav"].dtype == np.float64
    np.testing.assert_allclose(out["nav"], exp["nav"], rtol=RTOL)
    nav = np.asarray(exp["nav"][:-1])
    np.testing.assert_allclose(out["turnover"], exp["turnover"], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(out["cost"] * nav, exp["cost"], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(out["financing"] * nav, exp["financing"], rtol=RTOL, atol=1e-15)
    if name in ("constant_2", "banded_constant_2"):
        assert (out["leverage"][cfg.vol_window:] == 2.0).all()
    if name == "constant_2":
        defined = out["leverage"] > 0
        if tradable is not None:
            defined &= tradable[START:-1]
        np.testing.assert_allclose(out["exposure"][defined], 2.0)
    if with_holds:  # a bar that cannot trade holds the drifted position: no turnover
        held = ~tradable[START:-1]
        assert (out["turnover"][held] == 0).all()
    if cfg.no_trade_band > 0:  # the band: hours without a trade, and every trade leaves it
        traded = out["turnover"] > 0
        assert 0 < traded.mean() < 0.9
        gap = np.abs(out["action"] * out["leverage"] - out["weight"])
        assert (gap[traded] > cfg.no_trade_band).all()


def test_drift_is_charged():
    """A constant exposure still trades every hour: the drift back to e (not |e_t - e_{t-1}|)."""
    close = _close()
    cfg, actions = _paths()["constant_minus_1"]
    out = simulate(close, actions, cfg, start=START)
    steady = out["turnover"][cfg.vol_window + 2:]
    assert (steady > 0).all()
    naive = np.abs(np.diff(out["exposure"]))[cfg.vol_window + 1:]
    assert steady.sum() > 10 * max(naive.sum(), 1e-12)


def _f64_market(close, cfg, tradable=None):
    features = np.zeros((len(close), 2))
    return trading.MarketData.from_arrays(features, close, cfg, tradable=tradable,
                                          dtype=jnp.float64)


@pytest.mark.parametrize("name", list(_paths()))
def test_env_matches_the_ledger(name):
    cfg, actions = _paths()[name]
    cfg = dataclasses.replace(cfg, window=4, episode_length=10 * N, ruin_nav=0.0)
    close = _close()
    tradable = _tradable(5)
    exp = _expected(close, actions, cfg, tradable)
    with jax.enable_x64(True):
        market = _f64_market(close, cfg, tradable)
        params = trading.EnvParams.from_config(cfg, dtype=jnp.float64)
        coeffs = trading.Coeffs.create()
        _, state = trading.reset(jax.random.key(0), params, market,
                                 trading.StartRange.create(START, START, N - 1))
        assert state.nav.dtype == jnp.float64

        def body(state, a):
            _, nxt, _, _, _, info = trading.step(jax.random.key(1), state, a, params, market,
                                                 coeffs)
            return nxt, (info["nav"], info["turnover"], info["financing"])

        navs, turnover, financing = jax.lax.scan(body, state, jnp.asarray(actions[START:-2]))[1]
        navs, turnover = np.asarray(navs), np.asarray(turnover)
    n = len(navs)
    np.testing.assert_allclose(navs, exp["nav"][1:n + 1], rtol=RTOL)
    np.testing.assert_allclose(turnover, exp["turnover"][:n], rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(np.asarray(financing) * np.asarray(exp["nav"][:n]),
                               exp["financing"][:n], rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("name", list(_paths()))
def test_rollout_matches_the_ledger(name):
    """The rollout's scan (`policy_rollout`) with a policy that replays the action path."""
    cfg, actions = _paths()[name]
    close = _close()
    tradable = _tradable(6)
    exp = _expected(close, actions, cfg, tradable)
    n = N - 1 - START
    with jax.enable_x64(True):
        market = _f64_market(close, cfg, tradable)
        params = trading.EnvParams.from_config(cfg, dtype=jnp.float64)
        path = jnp.asarray(actions)
        got, acc = jax.jit(lambda: policy_rollout(lambda t: path[t], lambda t, agent: t,
                                                  params, market, START, n))()
        nav = np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(acc.net_return))])
        turnover = np.asarray(acc.turnover)
    np.testing.assert_array_equal(np.asarray(got), np.clip(actions[START:START + n], -1, 1))
    np.testing.assert_allclose(nav, exp["nav"], rtol=RTOL)
    np.testing.assert_allclose(turnover, exp["turnover"], rtol=RTOL, atol=1e-15)


def test_replay_buffer_record_carries_the_drifted_weight():
    """A compact transition replayed reproduces the env step's reward and next agent state."""
    cfg = dataclasses.replace(_paths()["random"][0], window=4, episode_length=10 * N)
    close = _close(2)
    actions = _paths()["random"][1]
    market = trading.MarketData.from_arrays(np.zeros((N, 2)), close, cfg)
    params = trading.EnvParams.from_config(cfg)
    coeffs = trading.Coeffs.create(0.1, 0.02)
    _, state = trading.reset(jax.random.key(0), params, market,
                             trading.StartRange.create(START, START, N - 1))
    for a in actions[START:START + 40]:
        _, nxt, reward, term, trunc, _ = trading.step(jax.random.key(1), state, a, params, market,
                                                     coeffs)
        rt = trading.replay(params, market, trading.compact(state, a, term, trunc), coeffs)
        assert float(rt.reward) == float(reward)
        np.testing.assert_array_equal(np.asarray(rt.agent_state_next),
                                      np.asarray(trading.book_agent_state(nxt.book)))
        state = nxt
    assert float(state.weight) != 0.0 and float(state.weight) != float(
        accounting.leverage(market.realised_vol[state.t - 1], params.target_volatility,
                            params.vol_floor, params.max_leverage) * actions[START + 39])
