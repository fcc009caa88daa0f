"""Deterministic policy rollouts over a row range (the acting half of the OOS backtest).

The agent's observation at row t holds its own state (previous action, drifted weight,
drawdown), so the action path is sequential: a `lax.scan` steps the env accounting
(`trading.market_step`, i.e. `accounting.advance`) and asks the policy at every row. The
returned action series is then replayed by `backtest.simulate` in float64, which produces the
reported numbers with the same accounting.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from cryptorl_jax.agent.tqc import TQCState
from cryptorl_jax.env import accounting, trading
from cryptorl_jax.training.train import TrainData, Trainer


def policy_rollout(policy, observe, params: trading.EnvParams, market: trading.MarketData,
                   first_row, n_steps: int, cost_rate=None):
    """Scan `policy(observe(t, agent_vector))` from a flat book at `first_row` for n_steps.

    Returns (actions [n_steps], accounting [n_steps] as `accounting.StepAccounting`). Traceable;
    the dtype follows the market arrays (float64 under `jax.enable_x64` in tests).
    """

    def body(book: accounting.Book, _):
        action = jnp.clip(policy(observe(book.t, trading.book_agent_state(book))), -1.0, 1.0)
        acc, book, _ = trading.market_step(params, market, book, action, cost_rate)
        return book, (action, acc)

    start = accounting.Book.start(first_row, market.log_returns.dtype)
    _, (actions, acc) = jax.lax.scan(body, start, None, length=n_steps)
    return actions, acc


def make_rollout(trainer: Trainer):
    """rollout(agents [S], data, first_row, n_steps, cost_multiplier) -> actions [S, n_steps].

    Each seed acts alone on its OWN book (its previous action, drifted weight and drawdown:
    the states it was trained on). The ensemble is built from these books afterwards
    (`backtest.portfolio`: the equal-weight fund of the seeds' books), never by feeding one
    seed the states of another. Action i is chosen at the close of row first_row + i and
    realises r_{first_row + i + 1}.
    """
    params = trainer.env_params
    act = trainer.tqc.act_deterministic

    def single(agent: TQCState, obs):
        batched = jax.tree.map(lambda x: x[None], obs)
        return act(agent, batched)[0, 0]

    @partial(jax.jit, static_argnames=("n_steps",))
    def rollout(agents: TQCState, data: TrainData, first_row, n_steps: int,
                cost_multiplier=1.0):
        cost_rate = params.cost_rate * cost_multiplier

        def run(agent):
            actions, _ = policy_rollout(partial(single, agent), partial(trainer.observe, data),
                                        params, data.market, first_row, n_steps, cost_rate)
            return actions

        return jax.vmap(run)(agents)

    return rollout
