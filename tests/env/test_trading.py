"""The JAX trading env: parity with the numpy loop reference, causality, replay, compile count."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.config import EnvConfig
from cryptorl_jax.env import trading
from tests.envcfg import BANDED, ORIGINAL
from tests.reference.numpy_env import NumpyTradingEnv

VMAP_RESET = jax.vmap(trading.reset, in_axes=(0, None, None, None))
VMAP_STEP = jax.vmap(trading.step, in_axes=(0, 0, 0, None, None, None))


def make_market_arrays(n_rows: int, n_features: int = 4, seed: int = 0, sigma: float = 0.01):
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n_rows)))
    features = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    return features, close


def small_config(**overrides) -> EnvConfig:
    base = dict(ORIGINAL, window=8, episode_length=60, vol_window=24, max_leverage=3.0,
                target_volatility=0.08, ruin_nav=0.9)
    base.update(overrides)
    return dataclasses.replace(EnvConfig(), **base)


def rollout(cfg, features, close, start_range, actions, key, coeffs):
    """Scan the vmapped env over actions [S, N]; returns the reset state and per-step outputs."""
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    n_envs = actions.shape[1]
    key_reset, key_steps = jax.random.split(key)
    obs0, state0 = VMAP_RESET(jax.random.split(key_reset, n_envs), params, market, start_range)

    @jax.jit
    def run(state, actions, key):
        keys = jax.random.split(key, actions.shape[:2])  # [S, N] keys

        def body(state, x):
            action, k = x
            ct = trading.compact(state, action, False, False)
            obs, new_state, reward, term, trunc, info = VMAP_STEP(k, state, action, params,
                                                                   market, coeffs)
            plain = new_state.replace(key=jax.random.key_data(new_state.key))  # numpy-able
            out = dict(obs=obs, state=plain, reward=reward, terminated=term,
                       truncated=trunc, info=info, ct=ct.replace(terminated=term, truncated=trunc))
            return new_state, out

        return jax.lax.scan(body, state, (actions, keys))[1]

    return market, params, obs0, state0, run(state0, jnp.asarray(actions, jnp.float32), key_steps)


def reference_envs(cfg, features, close, start_range, n_envs, coeffs):
    sr = start_range
    return [NumpyTradingEnv.from_config(
        features, close, cfg, int(sr.first_start), int(sr.last_start), int(sr.last_row),
        churn_coef=float(coeffs.churn), smooth_coef=float(coeffs.smooth)) for _ in range(n_envs)]


@pytest.mark.parametrize("episode_length,ruin_nav,banded", [(60, 0.9, False), (2000, 0.0, False),
                                                             (2000, 0.0, True)])
def test_parity_with_numpy_reference(episode_length, ruin_nav, banded):
    """2,000 steps of random actions, across resets (time limit, end of range, ruin)."""
    cfg = small_config(episode_length=episode_length, ruin_nav=ruin_nav,
                       **(dict(BANDED, vol_window=24, max_leverage=3.0) if banded else {}))
    n_rows, n_envs, n_steps = 6000, 4, 2000
    features, close = make_market_arrays(n_rows, seed=1, sigma=0.02)
    if episode_length == 60:  # short range too: some episodes end at last_row
        start_range = trading.make_start_range(0, 400, cfg, n_rows)
    else:
        start_range = trading.make_start_range(0, n_rows - 1, cfg, n_rows)
        start_range = start_range.replace(last_start=jnp.int32(n_rows - 1 - n_steps))
    coeffs = trading.Coeffs.create(0.3, 0.05)
    actions = np.random.default_rng(2).uniform(-1.2, 1.2, (n_steps, n_envs))  # some clipped
    _, _, obs0, state0, out = rollout(cfg, features, close, start_range, actions,
                                      jax.random.key(0), coeffs)
    refs = reference_envs(cfg, features, close, start_range, n_envs, coeffs)
    out = jax.tree.map(np.asarray, out)
    counts = {"terminated": 0, "truncated": 0}
    for i, env in enumerate(refs):
        window, agent = env.reset(start=int(state0.t[i]))
        np.testing.assert_array_equal(window, np.asarray(obs0.window[i]))
        for s in range(n_steps):
            (window, agent), reward, term, trunc, info = env.step(actions[s, i])
            assert bool(out["terminated"][s, i]) == term, (i, s)
            assert bool(out["truncated"][s, i]) == trunc, (i, s)
            assert out["reward"][s, i] == pytest.approx(reward, abs=1e-5), (i, s)
            assert out["info"]["exposure"][s, i] == pytest.approx(info["exposure"], abs=1e-5)
            assert out["info"]["nav"][s, i] == pytest.approx(info["nav"], rel=1e-4), (i, s)
            assert out["info"]["cost"][s, i] == pytest.approx(info["cost"], abs=1e-7)
            assert out["info"]["churn"][s, i] == pytest.approx(info["churn"], abs=1e-5)
            if term or trunc:
                counts["terminated"] += term
                counts["truncated"] += trunc
                window, agent = env.reset(start=int(out["state"].t[s, i]))
            assert env.t == out["state"].t[s, i]
            np.testing.assert_array_equal(window, out["obs"].window[s, i])
            np.testing.assert_allclose(agent, out["obs"].agent[s, i], atol=1e-5, rtol=1e-4)
    if episode_length == 60:
        assert counts["terminated"] > 0 and counts["truncated"] > 0, counts
        assert (out["info"]["t"] + 1 == int(start_range.last_row)).any()  # range end reached
    else:
        assert counts == {"terminated": 0, "truncated": n_envs}  # the time limit, at the end
        assert out["truncated"][-1].all() and not out["truncated"][:-1].any()


def test_step_accepts_scalar_and_vector_actions():
    cfg = small_config()
    features, close = make_market_arrays(200)
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    sr = trading.make_start_range(0, 199, cfg, 200)
    coeffs = trading.Coeffs.create()
    _, state = trading.reset(jax.random.key(0), params, market, sr)
    a = trading.step(jax.random.key(1), state, 0.3, params, market, coeffs)
    b = trading.step(jax.random.key(1), state, jnp.asarray([0.3]), params, market, coeffs)
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[5]["exposure"], b[5]["exposure"])


def test_no_look_ahead():
    """Changing r_{t+1} (and every later row) leaves the observation and exposure at t alone."""
    cfg = small_config()
    n_rows, t = 300, 150
    features, close = make_market_arrays(n_rows, seed=3)
    changed_close = close.copy()
    changed_close[t + 1:] *= 1.05  # r_{t+1} changes; later returns do not
    changed_features = features.copy()
    changed_features[t + 1:] += 1.0
    params = trading.EnvParams.from_config(cfg)
    sr = trading.StartRange.create(t, t, n_rows - 1)
    coeffs = trading.Coeffs.create(0.1, 0.01)
    results = []
    for f, c in ((features, close), (changed_features, changed_close)):
        market = trading.MarketData.from_arrays(f, c, cfg)
        obs, state = trading.reset(jax.random.key(0), params, market, sr)
        assert int(state.t) == t
        out = trading.step(jax.random.key(1), state, 0.7, params, market, coeffs)
        results.append((market, obs, out))
    (m_a, obs_a, out_a), (m_b, obs_b, out_b) = results
    np.testing.assert_array_equal(obs_a.window, obs_b.window)
    np.testing.assert_array_equal(obs_a.agent, obs_b.agent)
    np.testing.assert_array_equal(m_a.realised_vol[:t + 1], m_b.realised_vol[:t + 1])
    assert float(out_a[5]["exposure"]) == float(out_b[5]["exposure"])
    assert float(out_a[5]["leverage"]) == float(out_b[5]["leverage"])
    assert float(m_a.log_returns[t + 1]) != float(m_b.log_returns[t + 1])
    assert float(out_a[2]) != pytest.approx(float(out_b[2]), abs=1e-3)  # the reward did change


def test_train_episode_never_reads_beyond_last_row():
    cfg = small_config(episode_length=10_000, ruin_nav=0.0)
    n_rows, last_row = 400, 250
    features, close = make_market_arrays(n_rows, seed=4)
    market = trading.MarketData.from_arrays(features, close, cfg)
    poisoned = market.replace(  # rows after last_row are NaN: any read would show
        features=market.features.at[last_row + 1:].set(jnp.nan),
        log_returns=market.log_returns.at[last_row + 1:].set(jnp.nan),
        realised_vol=market.realised_vol.at[last_row + 1:].set(jnp.nan))
    params = trading.EnvParams.from_config(cfg)
    sr = trading.make_start_range(0, last_row, cfg, n_rows)
    n_envs, n_steps = 16, 600
    obs, state = VMAP_RESET(jax.random.split(jax.random.key(0), n_envs), params, poisoned, sr)
    coeffs = trading.Coeffs.create(0.1, 0.01)

    @jax.jit
    def run(state, key):
        def body(state, k):
            ka, ks = jax.random.split(k)
            actions = jax.random.uniform(ka, (n_envs,), minval=-1, maxval=1)
            obs, state, reward, term, trunc, info = VMAP_STEP(
                jax.random.split(ks, n_envs), state, actions, params, poisoned, coeffs)
            return state, (obs.window, obs.agent, reward, info["t"], trunc)
        return jax.lax.scan(body, state, jax.random.split(key, n_steps))[1]

    windows, agents, rewards, ts, trunc = jax.tree.map(np.asarray, run(state, jax.random.key(1)))
    assert np.isfinite(windows).all() and np.isfinite(agents).all()
    assert np.isfinite(rewards).all()
    assert ts.max() == last_row - 1  # reached the end of the range, never beyond it
    np.testing.assert_array_equal(trunc, ts + 1 == last_row)


def test_vol_scaling_in_env():
    """Calm market: the cap binds. Volatile market: exposure = target / vol < cap."""
    cfg = small_config(max_leverage=2.0, target_volatility=0.05)
    rng = np.random.default_rng(5)
    n_rows = 200
    sigma = np.where(np.arange(n_rows) < 100, 0.0005, 0.03)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1.0, n_rows) * sigma))
    features = rng.normal(size=(n_rows, 4))
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    coeffs = trading.Coeffs.create()
    exposures = {}
    for t in (60, 180):
        sr = trading.StartRange.create(t, t, n_rows - 1)
        _, state = trading.reset(jax.random.key(0), params, market, sr)
        exposures[t] = float(trading.step(jax.random.key(1), state, 1.0, params, market,
                                          coeffs)[5]["exposure"])
    assert exposures[60] == pytest.approx(2.0)
    vol = float(market.realised_vol[180])
    assert exposures[180] == pytest.approx(0.05 / vol, rel=1e-5)
    assert exposures[180] < 1.0


def test_zero_cost_env_nav_is_frictionless_product():
    cfg = small_config(fee_bps=0.0, slippage_bps=0.0, borrow_rate_annual=0.0,
                       episode_length=1000, ruin_nav=0.0)
    n_rows = 1200
    features, close = make_market_arrays(n_rows, seed=6)
    sr = trading.StartRange.create(50, 50, n_rows - 1)
    actions = np.random.default_rng(7).uniform(-1, 1, (999, 1))
    market, _, _, _, out = rollout(cfg, features, close, sr, actions, jax.random.key(0),
                                   trading.Coeffs.create())
    info = jax.tree.map(np.asarray, out["info"])
    assert (info["cost"] == 0).all() and (info["financing"] == 0).all()
    r_next = np.log(close[51:1050] / close[50:1049])
    expected = np.cumprod(1.0 + info["exposure"][:, 0].astype(np.float64) * np.expm1(r_next))
    np.testing.assert_allclose(info["nav"][:, 0], expected, rtol=1e-4)


def test_replay_reproduces_step_exactly():
    cfg = small_config()
    n_rows, n_envs, n_steps = 1500, 8, 300
    features, close = make_market_arrays(n_rows, seed=8, sigma=0.02)
    sr = trading.make_start_range(0, 1000, cfg, n_rows)
    coeffs = trading.Coeffs.create(0.2, 0.03)
    actions = np.random.default_rng(9).uniform(-1, 1, (n_steps, n_envs))
    market, params, _, _, out = rollout(cfg, features, close, sr, actions, jax.random.key(3),
                                        coeffs)
    ct = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out["ct"])  # [S * N]
    replay = jax.jit(jax.vmap(trading.replay, in_axes=(None, None, 0, None)))
    rep = jax.tree.map(np.asarray, replay(params, market, ct, coeffs))
    flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), out)
    np.testing.assert_array_equal(rep.reward, flat["reward"])
    np.testing.assert_array_equal(rep.t_next, flat["info"]["t"] + 1)
    np.testing.assert_array_equal(rep.terminated, flat["terminated"])
    np.testing.assert_array_equal(rep.truncated, flat["truncated"])
    true_next = np.stack([np.clip(actions.reshape(-1), -1, 1), flat["info"]["weight"],
                          flat["info"]["drawdown"]], axis=-1)
    np.testing.assert_array_equal(rep.agent_state_next[:, 1:], true_next[:, 1:])
    np.testing.assert_allclose(rep.agent_state_next[:, 0], true_next[:, 0], atol=1e-7)
    # Where no reset happened, the env's next state is the replayed next state.
    done = flat["terminated"] | flat["truncated"]
    state_agent = trading.book_agent_state(flat["state"].book)
    np.testing.assert_array_equal(rep.agent_state_next[~done], np.asarray(state_agent)[~done])
    assert done.any()
    # The observation rebuilt at t_next equals the env's where no reset happened.
    obs_next = jax.vmap(trading.observe, in_axes=(None, None, 0, 0))(
        params, market, jnp.asarray(rep.t_next), jnp.asarray(rep.agent_state_next))
    np.testing.assert_array_equal(np.asarray(obs_next.window)[~done],
                                  flat["obs"].window[~done])
    # Current coefficients, not stale ones: the reward moves by the penalty difference.
    rep2 = replay(params, market, ct, trading.Coeffs.create(0.0, 0.0))
    # the penalties act on the turnover the ledger charges (|e_t - w_t|), not on |a_t - a_t-1|
    delta = flat["info"]["turnover"]
    np.testing.assert_allclose(np.asarray(rep2.reward) - rep.reward,
                               0.2 * delta + 0.03 * delta ** 2, atol=2e-5)


def test_batched_step_compiles_once_for_two_markets():
    cfg = dataclasses.replace(EnvConfig(), window=16)
    n_rows, n_envs = 1000, 512
    traces = []

    def counted_step(keys, state, actions, params, market, coeffs):
        traces.append(1)  # runs only while tracing
        return VMAP_STEP(keys, state, actions, params, market, coeffs)

    step = jax.jit(counted_step)
    rewards = []
    for seed, cost_mult in ((0, 1.0), (1, 2.0)):
        features, close = make_market_arrays(n_rows, n_features=16, seed=seed)
        market = trading.MarketData.from_arrays(features, close, cfg)
        params = trading.EnvParams.from_config(cfg, cost_multiplier=cost_mult)
        sr = trading.make_start_range(100 * seed, n_rows - 1, cfg, n_rows)
        keys = jax.random.split(jax.random.key(0), n_envs)
        _, state = VMAP_RESET(keys, params, market, sr)
        out = step(keys, state, jnp.full((n_envs,), 0.5), params, market,
                   trading.Coeffs.create(0.1 * seed, 0.0))
        rewards.append(np.asarray(out[2]))
    assert len(traces) == 1
    assert not np.allclose(rewards[0], rewards[1])


def test_reset_draws_inside_the_range():
    cfg = small_config()
    features, close = make_market_arrays(500)
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    sr = trading.StartRange.create(100, 140, 300)
    obs, state = VMAP_RESET(jax.random.split(jax.random.key(0), 4000), params, market, sr)
    t = np.asarray(state.t)
    assert t.min() == 100 and t.max() == 140
    counts = np.bincount(t - 100, minlength=41)  # ~97.6 expected per start
    assert counts.min() > 60 and counts.max() < 140, counts
    assert (np.asarray(state.nav) == 1).all() and (np.asarray(state.weight) == 0).all()
    np.testing.assert_array_equal(obs.window[0], features[t[0] - 7:t[0] + 1])
    again = VMAP_RESET(jax.random.split(jax.random.key(0), 4000), params, market, sr)[1]
    np.testing.assert_array_equal(np.asarray(again.t), t)  # deterministic


def test_check_start_range_errors():
    cfg = small_config(window=32, vol_window=24)
    with pytest.raises(ValueError, match="first_start = 10 < window - 1 = 31"):
        trading.check_start_range(500, trading.StartRange.create(10, 100, 200), 32, 24)
    with pytest.raises(ValueError, match="first_start = 20 < vol_window = 24"):
        trading.check_start_range(500, trading.StartRange.create(20, 100, 200), 8, 24)
    with pytest.raises(ValueError, match="last_row = 500 must be < the market's 500 rows"):
        trading.check_start_range(500, trading.StartRange.create(40, 100, 500), 32, 24)
    with pytest.raises(ValueError, match="last_row = 100 must exceed last_start = 100"):
        trading.check_start_range(500, trading.StartRange.create(40, 100, 100), 32, 24)
    with pytest.raises(ValueError, match="last_start = 30 < first_start = 40"):
        trading.check_start_range(500, trading.StartRange.create(40, 30, 100), 32, 24)
    sr = trading.make_start_range(0, 300, cfg, 500)
    assert (int(sr.first_start), int(sr.last_start), int(sr.last_row)) == (31, 299, 300)


def test_market_data_errors_name_the_row():
    cfg = small_config()
    features, close = make_market_arrays(100)
    bad = close.copy()
    bad[42] = np.nan
    with pytest.raises(ValueError, match="row 42"):
        trading.MarketData.from_arrays(features, bad, cfg)
    bad[42] = -1.0
    with pytest.raises(ValueError, match="row 42"):
        trading.MarketData.from_arrays(features, bad, cfg)
    bad_f = features.copy()
    bad_f[7, 2] = np.inf
    with pytest.raises(ValueError, match="row 7, column 2"):
        trading.MarketData.from_arrays(bad_f, close, cfg)
    with pytest.raises(ValueError, match="close must be"):
        trading.MarketData.from_arrays(features, close[:-1], cfg)
    market = trading.MarketData.from_arrays(features, close, cfg)
    assert market.features.dtype == jnp.float32 and market.n_rows == 100
    assert np.isnan(np.asarray(market.realised_vol[:24])).all()
    assert np.isfinite(np.asarray(market.realised_vol[24:])).all()
