"""backtest.simulate and the baselines, against the numpy loop reference and the env."""

import dataclasses
import importlib

import jax
import numpy as np
import pytest

from cryptorl_jax.backtest import baselines
from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.env import trading
from tests.envcfg import banded_env, original_env
from tests.reference import numpy_env as ref

CFG = original_env()
BANDED = banded_env()


def _close(n: int, seed: int = 0, sigma: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 40_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def _reference(close, actions, cfg=CFG, **kwargs):
    return ref.simulate(close, actions, cfg.fee_bps, cfg.slippage_bps, cfg.target_volatility,
                        cfg.vol_window, cfg.vol_horizon_hours, cfg.max_leverage, cfg.vol_floor,
                        cfg.reward_scale, borrow_rate_annual=cfg.borrow_rate_annual,
                        halflife_hours=cfg.vol_halflife_hours, band=cfg.no_trade_band, **kwargs)


def test_shapes_follow_the_public_api():
    n = 300
    out = simulate(_close(n), np.zeros(n), CFG)
    assert out["nav"].shape == (n,) and out["nav"][0] == 1.0
    for key in ("exposure", "turnover", "cost", "pnl", "reward", "returns", "leverage"):
        assert out[key].shape == (n - 1,), key
    assert isinstance(out["nav"], np.ndarray)


@pytest.mark.parametrize("start,churn,smooth", [(0, 0.0, 0.0), (0, 0.3, 0.05), (37, 0.1, 0.0)])
def test_matches_numpy_reference(start, churn, smooth):
    n = 2000
    close = _close(n, seed=1, sigma=0.015)
    actions = np.random.default_rng(2).uniform(-1, 1, n)
    out = simulate(close, actions, CFG, churn, smooth, start=start)
    exp = _reference(close, actions, churn_coef=churn, smooth_coef=smooth, start=start)
    np.testing.assert_allclose(out["nav"], exp["nav"], rtol=1e-4)
    np.testing.assert_allclose(out["exposure"], exp["exposure"], atol=1e-5)
    np.testing.assert_allclose(out["reward"], exp["reward"], atol=1e-5)
    np.testing.assert_allclose(out["turnover"], exp["turnover"], atol=1e-5)
    np.testing.assert_allclose(out["cost"], exp["cost"], atol=1e-8)
    np.testing.assert_allclose(out["pnl"], exp["pnl"], atol=1e-7)
    np.testing.assert_allclose(np.cumprod(1 + out["returns"].astype(np.float64)), exp["nav"][1:],
                               rtol=1e-4)
    # While realised vol is undefined (t < V) the exposure is 0.
    undefined = max(CFG.vol_window - start, 0)
    assert (out["exposure"][:undefined] == 0).all()
    assert (out["exposure"][undefined:] != 0).all()


@pytest.mark.parametrize("churn,smooth", [(0.0, 0.0), (0.3, 0.05)])
def test_banded_matches_numpy_reference(churn, smooth):
    """The default's shape: an exponentially weighted annual vol and a no-trade band."""
    n = 2000
    close = _close(n, seed=4, sigma=0.015)
    actions = np.clip(np.cumsum(np.random.default_rng(5).normal(0, 0.15, n)), -1, 1)
    out = simulate(close, actions, BANDED, churn, smooth, start=10)
    exp = _reference(close, actions, BANDED, churn_coef=churn, smooth_coef=smooth, start=10)
    np.testing.assert_allclose(out["nav"], exp["nav"], rtol=1e-9)
    np.testing.assert_allclose(out["exposure"], exp["exposure"], atol=1e-9)
    np.testing.assert_allclose(out["turnover"], exp["turnover"], atol=1e-9)
    np.testing.assert_allclose(out["reward"], exp["reward"], atol=1e-7)
    traded = out["turnover"] > 0
    assert 0.01 < traded.mean() < 0.9  # the band holds the weight in some hours, not all


def test_same_accounting_as_the_env():
    """One env episode from a fixed start equals simulate from that start."""
    cfg = dataclasses.replace(CFG, window=16, episode_length=500, ruin_nav=0.0)
    n, start = 800, 50
    rng = np.random.default_rng(3)
    close = _close(n, seed=3, sigma=0.02)
    features = rng.normal(size=(n, 4))
    actions = rng.uniform(-1, 1, n)
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    coeffs = trading.Coeffs.create(0.2, 0.01)
    _, state = trading.reset(jax.random.key(0), params, market,
                             trading.StartRange.create(start, start, n - 1))

    def body(state, a):
        _, state, reward, _, _, info = trading.step(jax.random.key(1), state, a, params, market,
                                                    coeffs)
        return state, (reward, info["nav"], info["exposure"])

    rewards, navs, exposures = jax.lax.scan(body, state, actions[start:start + 499])[1]
    out = simulate(close, actions, cfg, 0.2, 0.01, start=start)
    np.testing.assert_allclose(out["nav"][1:500], navs, rtol=1e-6)
    np.testing.assert_allclose(out["reward"][:499], rewards, atol=1e-6)
    np.testing.assert_allclose(out["exposure"][:499], exposures, atol=1e-7)


def test_zero_cost_nav_is_the_frictionless_product():
    n = 1500
    close = _close(n, seed=4)
    actions = np.random.default_rng(5).uniform(-1, 1, n)
    out = simulate(close, actions, dataclasses.replace(CFG, borrow_rate_annual=0.0),
                   cost_multiplier=0.0)
    assert (out["cost"] == 0).all()
    r = np.log(close[1:] / close[:-1])
    expected = np.cumprod(1.0 + out["exposure"].astype(np.float64) * np.expm1(r))
    np.testing.assert_allclose(out["nav"][1:], expected, rtol=1e-4)
    free = dataclasses.replace(CFG, fee_bps=0.0, slippage_bps=0.0, borrow_rate_annual=0.0)
    np.testing.assert_allclose(simulate(close, actions, free)["nav"], out["nav"], rtol=1e-6)


def test_cost_multiplier_scales_costs():
    n = 500
    close = _close(n, seed=6)
    actions = np.random.default_rng(7).uniform(-1, 1, n)
    one = simulate(close, actions, CFG)
    two = simulate(close, actions, CFG, cost_multiplier=2.0)
    np.testing.assert_allclose(two["cost"], 14e-4 * two["turnover"], rtol=1e-12)
    np.testing.assert_allclose(one["cost"], 7e-4 * one["turnover"], rtol=1e-12)
    # the same trades: exposures are equal; the drift back to them differs only by the costs
    np.testing.assert_array_equal(two["exposure"], one["exposure"])
    np.testing.assert_allclose(two["turnover"].sum(), one["turnover"].sum(), rtol=1e-3)
    np.testing.assert_array_equal(two["financing"], one["financing"])
    assert two["nav"][-1] < one["nav"][-1]


def test_start_with_lookback_equals_a_fresh_run_on_the_window():
    """With lookback, vol is defined from the first step; NAV starts at 1 at row `start`."""
    n, k = 600, 100
    close = _close(n, seed=8)
    actions = np.random.default_rng(9).uniform(-1, 1, n)
    out = simulate(close, actions, CFG, start=k)
    assert out["nav"].shape == (n - k,) and out["nav"][0] == 1.0
    assert out["exposure"].shape == (n - k - 1,)
    assert (out["leverage"] > 0).all()
    np.testing.assert_allclose(out["action"], actions[k:-1], atol=1e-7)
    # Actions before `start` are ignored; actions before are free to be anything finite.
    mangled = actions.copy()
    mangled[:k] = 5.0
    np.testing.assert_array_equal(simulate(close, mangled, CFG, start=k)["nav"], out["nav"])
    # The same rows without lookback: vol undefined for V steps, so the runs differ there.
    fresh = simulate(close[k:], actions[k:], CFG)
    assert (fresh["exposure"][:CFG.vol_window] == 0).all()
    np.testing.assert_allclose(fresh["exposure"][CFG.vol_window + 1:],
                               out["exposure"][CFG.vol_window + 1:], atol=1e-6)


def test_errors_name_the_row():
    n = 100
    close = _close(n)
    actions = np.zeros(n)
    bad = actions.copy()
    bad[17] = 1.5
    with pytest.raises(ValueError, match="row 17"):
        simulate(close, bad, CFG)
    bad[17] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        simulate(close, bad, CFG)
    bad_close = close.copy()
    bad_close[3] = 0.0
    with pytest.raises(ValueError, match="row 3"):
        simulate(bad_close, actions, CFG)
    with pytest.raises(ValueError, match="shape"):
        simulate(close, actions[:-1], CFG)
    with pytest.raises(ValueError, match="start = 99"):
        simulate(close, actions, CFG, start=99)
    with pytest.raises(ValueError, match="exposure_mode"):
        simulate(close, actions, CFG, exposure_mode="raw")


def test_baselines():
    n = 1000
    close = _close(n, seed=10)
    runs = baselines.run_baselines(close, CFG, seed=3)
    assert set(runs) == set(baselines.BASELINES)
    rate = 7e-4
    bh = runs["buy_and_hold"]
    np.testing.assert_allclose(bh["exposure"], 1.0)
    np.testing.assert_allclose(bh["nav"][-1], close[-1] / close[0] * (1 - rate), rtol=1e-4)
    np.testing.assert_allclose(runs["flat"]["nav"], 1.0)
    vt = runs["vol_targeted_buy_and_hold"]
    vol = ref.realised_vol(ref.log_returns(close), CFG.vol_window, CFG.vol_horizon_hours)
    expected_lev = [ref.leverage(v, CFG.target_volatility, CFG.vol_floor, CFG.max_leverage)
                    for v in vol[:-1]]
    np.testing.assert_allclose(vt["exposure"], expected_lev, atol=1e-5)
    rnd = runs["random"]
    np.testing.assert_allclose(rnd["action"], baselines.random_actions(n, 3)[:-1], atol=1e-7)
    again = baselines.run_baselines(close, CFG, seed=3)["random"]["nav"]
    np.testing.assert_array_equal(again, rnd["nav"])
    other = baselines.run_baselines(close, CFG, seed=4)["random"]["nav"]
    assert not np.allclose(other, rnd["nav"])


def test_simulate_compiles_once_per_length():
    # The package exports the function under the module's name; fetch the module itself.
    simulate_module = importlib.import_module("cryptorl_jax.backtest.replay")

    n = 400
    actions = np.random.default_rng(11).uniform(-1, 1, n)
    simulate(_close(n, seed=12), actions, CFG)
    before = simulate_module._scan._cache_size()
    a = simulate(_close(n, seed=13), actions, CFG, 0.2, 0.01, cost_multiplier=2.0)
    b = simulate(_close(n, seed=14), actions, CFG, exposure_mode="target")
    assert simulate_module._scan._cache_size() == before
    assert not np.allclose(a["nav"], b["nav"])


def test_simulate_paths_is_simulate_for_each_path():
    """simulate_paths runs N books through the same scan body: each row equals `simulate` of
    that action path from the same start, given the leverage `simulate` used; one compile per
    shape."""
    simulate_module = importlib.import_module("cryptorl_jax.backtest.replay")
    n, start = 700, 60
    close = _close(n, seed=21)
    rng = np.random.default_rng(22)
    paths = np.clip(np.cumsum(rng.normal(0, 0.2, (3, n)), axis=1), -1, 1)
    tradable = rng.random(n) > 0.05
    sims = [simulate(close, a, BANDED, start=start, tradable=tradable) for a in paths]
    lev = sims[0]["leverage"]
    r = np.log(close[start + 1:] / close[start:-1])
    out = simulate_module.simulate_paths(paths[:, start:-1], lev, r, tradable[start:-1], BANDED,
                                         keys=simulate_module.SIM_KEYS)
    for i, sim in enumerate(sims):
        for key in simulate_module.SIM_KEYS:
            want = sim[key][1:] if key == "nav" else sim[key]  # simulate prepends NAV 1
            np.testing.assert_array_equal(out[key][i], want, err_msg=key)
    before = simulate_module._scan_paths._cache_size()
    again = simulate_module.simulate_paths(paths[::-1, start:-1], lev, r, tradable[start:-1],
                                           BANDED, keys=simulate_module.SIM_KEYS,
                                           cost_multiplier=2.0)
    assert simulate_module._scan_paths._cache_size() == before
    rate = (BANDED.fee_bps + BANDED.slippage_bps) / 1e4
    np.testing.assert_allclose(again["cost"][2], 2.0 * rate * again["turnover"][2], rtol=1e-12)
    one = simulate_module.simulate_paths(paths[1, start:-1], lev, r, tradable[start:-1], BANDED)
    assert set(one) == set(simulate_module.PATH_KEYS) and one["returns"].shape == (n - start - 1,)
    np.testing.assert_array_equal(one["returns"], sims[1]["returns"])
