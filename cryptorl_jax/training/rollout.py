"""Deterministic policy rollouts over a row range (the acting half of the OOS backtest).

The agent's observation at row t holds its own state (previous action, previous exposure,
drawdown), so the action path is sequential: a `lax.scan` steps the env accounting and asks
the policy at every row. The returned action series is then replayed by `backtest.simulate`,
which produces the reported numbers with the same accounting.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from cryptorl_jax.agent.tqc import TQCState
from cryptorl_jax.env import accounting, trading
from cryptorl_jax.training.train import TrainData, Trainer


def make_rollout(trainer: Trainer):
    """rollout(agents [S], data, first_row, n_steps, cost_multiplier) -> actions.

    Returns (ensemble [n_steps], per_seed [S, n_steps]): the ensemble acts with the mean of the
    seeds' deterministic actions on its own path; each seed also acts alone on its own path.
    Action i is chosen at the close of row first_row + i and realises r_{first_row + i + 1}.
    """
    params = trainer.env_params
    act = trainer.tqc.act_deterministic

    def run(policy, data: TrainData, first_row, n_steps: int, cost_multiplier):
        market = data.market
        cost_rate = params.cost_rate * cost_multiplier

        def body(carry, _):
            t, prev_action, prev_exposure, nav, peak = carry
            agent_vec = trading.agent_state(prev_action, prev_exposure, nav, peak)
            action = jnp.clip(policy(trainer.observe(data, t, agent_vec)), -1.0, 1.0)
            lev = accounting.leverage(market.realised_vol[t], params.target_volatility,
                                      params.vol_floor, params.max_leverage)
            acc = accounting.step_accounting(nav, prev_exposure, action, lev,
                                             market.log_returns[t + 1], cost_rate)
            carry = (t + 1, action, acc.exposure, acc.next_nav,
                     jnp.maximum(peak, acc.next_nav))
            return carry, action

        zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
        carry = (jnp.asarray(first_row, jnp.int32), zero, zero, one, one)
        _, actions = jax.lax.scan(body, carry, None, length=n_steps)
        return actions

    def single(agent: TQCState, obs):
        batched = jax.tree.map(lambda x: x[None], obs)
        return act(agent, batched)[0, 0]

    @partial(jax.jit, static_argnames=("n_steps",))
    def rollout(agents: TQCState, data: TrainData, first_row, n_steps: int,
                cost_multiplier=1.0):
        def ensemble_policy(obs):
            return jnp.mean(jax.vmap(single, in_axes=(0, None))(agents, obs))

        ensemble = run(ensemble_policy, data, first_row, n_steps, cost_multiplier)
        per_seed = jax.vmap(lambda a: run(partial(single, a), data, first_row, n_steps,
                                          cost_multiplier))(agents)
        return ensemble, per_seed

    return rollout
