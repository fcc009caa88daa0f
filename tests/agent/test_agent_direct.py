"""The direct learner's pieces alone: its objectives and its Adam step on a caller's
objective (the ledger's rollout is tests/training/test_direct.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.agent.direct import episode_objective, make_direct
from cryptorl_jax.config import DirectConfig


def test_the_objectives():
    rewards = jnp.asarray([[1.0, 3.0, 2.0, 2.0], [0.0, 0.0, -1.0, 1.0]])
    assert float(episode_objective(rewards, "log_growth")) == pytest.approx(1.0)
    sharpe = np.mean([2.0 / np.sqrt(0.5 + 1e-8), 0.0])
    assert float(episode_objective(rewards, "sharpe")) == pytest.approx(sharpe, rel=1e-5)
    with pytest.raises(ValueError, match="agent.direct.objective"):
        episode_objective(rewards, "sortino")


def test_an_update_ascends_the_objective_and_acts_deterministically():
    obs = (jnp.asarray(np.random.default_rng(0).normal(size=(32, 5)), jnp.float32),)
    direct = make_direct(DirectConfig(learning_rate=1e-2), (16,), (jnp.zeros(5),))
    state = direct.init(jax.random.key(0))

    def objective_fn(policy):  # the mean action: ascent pushes every action up
        return jnp.mean(jnp.tanh(policy(obs)[0])), {}

    before = float(jnp.mean(direct.act_deterministic(state, obs)))
    step = jax.jit(lambda s: direct.update(s, objective_fn))
    for _ in range(20):
        state, metrics = step(state)
    after = direct.act_deterministic(state, obs)
    assert float(jnp.mean(after)) > before + 0.3 and int(state.step) == 20
    assert set(metrics) == {"objective", "grad_norm"}
    np.testing.assert_array_equal(np.asarray(after),
                                  np.asarray(direct.act_deterministic(state, obs)))
    # the log-std head is never read: Adam leaves it as initialised
    fresh = direct.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(state.params["log_std"]["kernel"][...]),
                                  np.asarray(fresh.params["log_std"]["kernel"][...]))


def test_an_empty_net_arch_is_a_linear_policy():
    """agent.direct.net_arch []: a_t = tanh(w . o_t + b), nothing else learnt."""
    from cryptorl_jax.config import load_config

    cfg = load_config(None, ["agent.kind=direct", "agent.direct.net_arch=[]"])
    assert cfg.agent.direct.net_arch == ()
    direct = make_direct(DirectConfig(), (), (jnp.zeros(5),))
    state = direct.init(jax.random.key(0))
    kernels = [x.shape for x in jax.tree.leaves(state.params) if x.ndim == 2]
    assert sorted(kernels) == [(5, 1), (5, 1)]  # the mean head (and the unread log-std head)
    obs = (jnp.asarray(np.random.default_rng(1).normal(size=(8, 5)), jnp.float32),)
    w = np.asarray(state.params["mean"]["kernel"][...])
    b = np.asarray(state.params["mean"]["bias"][...])
    np.testing.assert_allclose(np.asarray(direct.act_deterministic(state, obs)),
                               np.tanh(np.asarray(obs[0]) @ w + b), rtol=1e-5, atol=1e-6)
