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

from cryptorl_jax.env import accounting, trading
from cryptorl_jax.training.data import TrainData
from cryptorl_jax.training.trainer import Trainer


def policy_action(policy, observe, book: accounting.Book) -> jnp.ndarray:
    """The action a_t chosen at the close of book.t: the policy on the window that ends at t
    and on the book's own state, clipped to [-1, 1]. The rollout's step and paper trading's
    decision are both this function."""
    return jnp.clip(policy(observe(book.t, trading.book_agent_state(book))), -1.0, 1.0)


def policy_rollout(policy, observe, params: trading.EnvParams, market: trading.MarketData,
                   first_row, n_steps: int, cost_rate=None):
    """Scan `policy(observe(t, agent_vector))` from a flat book at `first_row` for n_steps.

    Returns (actions [n_steps], accounting [n_steps] as `accounting.StepAccounting`). Traceable;
    the dtype follows the market arrays (float64 under `jax.enable_x64` in tests).
    """

    def body(book: accounting.Book, _):
        action = policy_action(policy, observe, book)
        acc, book, _ = trading.market_step(params, market, book, action, cost_rate)
        return book, (action, acc)

    start = accounting.Book.start(first_row, market.log_returns.dtype)
    _, (actions, acc) = jax.lax.scan(body, start, None, length=n_steps)
    return actions, acc


def _single_policy(trainer: Trainer):
    act = trainer.learner.act_deterministic  # TQC's or the direct learner's

    def single(agent, obs):
        batched = jax.tree.map(lambda x: x[None], obs)
        return act(agent, batched)[0, 0]

    return single


def make_stepper(trainer: Trainer):
    """The rollout's scan body cut at the hour: (decide, realise), both jitted.

    decide(agents [S], data, books [S]) -> actions [S]: each seed's `policy_action` at its
    book's row; realise(data, books [S], actions [S]) -> books [S] one row later
    (`trading.market_step`, the rollout's accounting at 1x costs). Stepping decide then
    realise row by row gives the rollout's actions exactly (paper trading, tests/paper).
    """
    params = trainer.env_params
    single = _single_policy(trainer)

    @jax.jit
    def decide(agents, data: TrainData, books: accounting.Book):
        def one(agent, book):
            return policy_action(partial(single, agent), partial(trainer.observe, data), book)

        return jax.vmap(one)(agents, books)

    @jax.jit
    def realise(data: TrainData, books: accounting.Book, actions):
        def one(book, action):
            _, nxt, _ = trading.market_step(params, data.market, book, action)
            return nxt

        return jax.vmap(one)(books, actions)

    return decide, realise


def make_rollout(trainer: Trainer):
    """rollout(agents [S], data, first_row, n_steps, cost_multiplier) -> actions [S, n_steps].

    Each seed acts alone on its OWN book (its previous action, drifted weight and drawdown:
    the states it was trained on). The ensemble is built from these books afterwards
    (`backtest.portfolio`: the equal-weight fund of the seeds' books), never by feeding one
    seed the states of another. Action i is chosen at the close of row first_row + i and
    realises r_{first_row + i + 1}.
    """
    params = trainer.env_params
    single = _single_policy(trainer)

    @partial(jax.jit, static_argnames=("n_steps",))
    def rollout(agents, data: TrainData, first_row, n_steps: int,
                cost_multiplier=1.0):
        cost_rate = params.cost_rate * cost_multiplier

        def run(agent):
            actions, _ = policy_rollout(partial(single, agent), partial(trainer.observe, data),
                                        params, data.market, first_row, n_steps, cost_rate)
            return actions

        return jax.vmap(run)(agents)

    return rollout
