"""The direct learner's step of ONE member on ONE device (`make_direct_member_step`): the same
`MemberStep` interface as TQC's (`training.member`), so `training.trainer` maps it over the
members, segments and devices and the loop, checkpoints and rollout serve both learners.

One iteration of the chunk is one update (`agent.direct`):
  episodes: n_envs episodes of H = agent.direct.horizon hours start at rows drawn uniformly in
            [first_start, last_row - H] (so no episode reads a return past last_row); a
            `lax.scan` over the H hours asks the policy for a_t on the observation the env
            gives (the same `make_observe`, with train.obs_noise on its market part), and
            steps the ledger (`trading.market_step`, i.e. `accounting.advance`) with the
            no-trade band relaxed (agent.direct.band_temperature); the reward is the env's
            (`accounting.reward`, the curriculum's current churn and smoothness coefficients);
  update:   one Adam step on -J (`agent.direct.episode_objective`), the gradient taken through
            the whole scan: the ledger's exposure, cost, NAV and drifted weight, and the agent
            state the policy reads the next hour; with agent.direct.action_penalty > 0, J minus
            that times the mean squared pre-tanh output (metric `pre_tanh_sq`).
The policy is deterministic: exploration comes only from the sampled starts and the
observation noise. Episodes do not stop at ruin (an H-hour episode runs whole; the growth
floor keeps the log finite); `ruined` counts those whose NAV fell below env.ruin_nav. An
update counts n_envs x H env steps, so the curriculum's progress and train.total_env_steps
are in the env's own steps; a chunk runs train.steps_per_chunk updates, or fewer when the
whole budget needs fewer (`chunk_updates`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cryptorl_jax.agent.direct import Direct, DirectState, episode_objective
from cryptorl_jax.agent.networks import deterministic_action
from cryptorl_jax.env import accounting, trading
from cryptorl_jax.env.trading import EnvParams
from cryptorl_jax.training.curriculum import penalty_coefficients_arrays
from cryptorl_jax.training.data import TrainData, make_observe
from cryptorl_jax.training.member import MemberStep, _replace_encoder
from cryptorl_jax.training.noise import add_obs_noise, column_scale
from cryptorl_jax.training.placement import Placement
from cryptorl_jax.training.spec import Hyper, TrainerSpec

# the per-update metrics averaged over a chunk (besides the learner's objective and grad_norm)
EPISODE_METRICS = ("reward", "pnl", "cost", "financing", "churn_penalty", "smooth_penalty",
                   "turnover", "exposure", "action", "episode_nav", "ruined_share")


@struct.dataclass
class DirectLocal:
    """Per device and member: the PRNG key (no envs persist between updates, no buffer)."""

    key: jax.Array


def chunk_updates(spec: TrainerSpec) -> int:
    """Updates per chunk: train.steps_per_chunk, or fewer when the whole budget needs fewer
    (ceil(total_env_steps / (n_envs x horizon))), so a small budget is not rounded up to a
    whole chunk of steps_per_chunk updates. walkforward.plan's dry run counts the same."""
    per_update = spec.n_envs * spec.agent.direct.horizon
    return min(spec.steps_per_chunk, max(1, math.ceil(spec.total_env_steps / per_update)))


def check_horizon(data: TrainData, horizon: int) -> None:
    """Host check that an episode of `horizon` hours fits in the train rows (every segment's
    when `data` holds a batch): the starts are drawn in [first_start, last_row - horizon]."""
    sr = data.start_range
    room = np.asarray(sr.last_row) - np.asarray(sr.first_start)
    if np.any(room < horizon):
        raise ValueError(f"agent.direct.horizon = {horizon} hours does not fit in the train "
                         f"rows: an episode may start at row {np.asarray(sr.first_start)} and "
                         f"realise returns up to row {np.asarray(sr.last_row)}")


def make_direct_member_step(spec: TrainerSpec, placement: Placement, direct: Direct,
                            env_params: EnvParams, uses_embeddings: bool) -> MemberStep:
    """The direct learner's one-member step (module docstring); `rebuild` is None (there is
    no replay)."""
    d = spec.agent.direct
    horizon, window, n_local = d.horizon, spec.env.window, placement.n_envs_local
    n_updates = chunk_updates(spec)
    penalised = d.action_penalty > 0
    total_steps = float(spec.total_env_steps)
    phase_ends = jnp.asarray(spec.phase_ends, jnp.float32)
    observe = make_observe(env_params, uses_embeddings)
    batched_observe = jax.vmap(observe, in_axes=(None, 0, 0))
    step_books = jax.vmap(trading.market_step, in_axes=(None, None, 0, 0, None, None))

    def coefficients(iteration, hyper: Hyper) -> trading.Coeffs:
        progress = (iteration * spec.n_envs * horizon).astype(jnp.float32) / total_steps
        churn, smooth = penalty_coefficients_arrays(progress, phase_ends, hyper.churn,
                                                    hyper.smooth)
        return trading.Coeffs(churn=churn, smooth=smooth)

    def starts(key, data: TrainData) -> jnp.ndarray:
        """n_local start rows, uniform in [first_start, last_row - horizon]."""
        sr = data.start_range
        n = jnp.maximum(sr.last_row - horizon - sr.first_start + 1, 1)
        return sr.first_start + jax.random.randint(key, (n_local,), 0, n)

    def episodes(policy, data: TrainData, params: EnvParams, coeffs, t0, keys, noise, noisy):
        """Roll the policy over the episodes: rewards [n_local, H] and the update's metrics."""
        dtype = data.market.log_returns.dtype
        books = jax.vmap(lambda t: accounting.Book.start(t, dtype))(t0)

        def hour(books, key):
            obs = batched_observe(data, books.t, trading.book_agent_state(books))
            if noisy:  # static: the step without noise draws none (MemberStep's `noisy`)
                obs = add_obs_noise(obs, key, *noise)
            mean = policy(obs)[0]
            action = deterministic_action(mean)[:, 0]  # [n_local]
            acc, nxt, _ = step_books(params, data.market, books, action, None,
                                     d.band_temperature)
            rew = accounting.reward(acc.pnl, acc.turnover, params.reward_scale, coeffs.churn,
                                    coeffs.smooth)
            out = {"reward": rew.reward, "pnl": acc.pnl, "cost": acc.cost,
                   "financing": acc.financing, "churn_penalty": rew.churn,
                   "smooth_penalty": rew.smooth, "turnover": acc.turnover,
                   "exposure": jnp.abs(acc.exposure), "action": action, "nav": acc.next_nav}
            if penalised:  # static: without the penalty the step is unchanged
                out["pre_tanh_sq"] = jnp.square(mean[:, 0])
            return nxt, out

        _, path = jax.lax.scan(hour, books, keys)  # each [H, n_local]
        rewards = path["reward"].T  # [n_local, H]
        aux = {name: jnp.mean(path[name]) for name in EPISODE_METRICS[:-2]}
        aux["episode_nav"] = jnp.mean(path["nav"][-1])
        aux["ruined_share"] = jnp.mean(
            (jnp.min(path["nav"], axis=0) < params.ruin_nav).astype(jnp.float32))
        penalty = None
        if penalised:
            penalty = aux["pre_tanh_sq"] = jnp.mean(path["pre_tanh_sq"])
        return rewards, jax.lax.stop_gradient(aux), penalty

    def chunk(agent: DirectState, local: DirectLocal, iteration, data: TrainData,
              hyper: Hyper, noisy: bool = True):
        """`chunk_updates` updates of one member on one device; `noisy` as TQC's (static:
        False draws no observation noise, the same numbers as sd 0; the keys are split alike)."""
        params = env_params.replace(reward_scale=hyper.reward_scale)
        noise = (hyper.obs_noise, column_scale(data, uses_embeddings, window))

        def body(carry, _):
            agent, key, iteration = carry
            key, k_start, k_noise = jax.random.split(key, 3)
            coeffs = coefficients(iteration, hyper)
            t0 = starts(k_start, data)
            keys = jax.random.split(k_noise, horizon)

            def objective_fn(policy):
                rewards, aux, penalty = episodes(policy, data, params, coeffs, t0, keys, noise,
                                                 noisy)
                objective = episode_objective(rewards, d.objective)
                if penalised:
                    objective = objective - d.action_penalty * penalty
                return objective, aux

            agent, metrics = direct.update(agent, objective_fn, hyper.direct)
            return (agent, key, iteration + 1), metrics

        (agent, key, iteration), per_update = jax.lax.scan(
            body, (agent, local.key, iteration), None, length=n_updates)
        metrics = {name: jnp.mean(v) for name, v in per_update.items()}
        share = metrics.pop("ruined_share")
        n_episodes = float(n_updates * spec.n_envs)
        coeffs = coefficients(iteration, hyper)
        metrics.update({"nav": metrics["episode_nav"], "episodes": jnp.float32(n_episodes),
                        "ruined": share * n_episodes, "churn_coef": coeffs.churn,
                        "smooth_coef": coeffs.smooth,
                        "updates": jnp.float32(n_updates)})
        return agent, DirectLocal(key=key), iteration, metrics

    def init_member(key, seed, hyper: Hyper, encoder_params):
        k_agent, k_local = jax.random.split(jax.random.fold_in(key, seed))
        agent = direct.init(k_agent, hyper.direct)
        if encoder_params is not None:
            agent = agent.replace(params=_replace_encoder(agent.params, encoder_params))
        return agent, k_local

    def init_local(key, data: TrainData) -> DirectLocal:
        del data
        return DirectLocal(key=key)

    return MemberStep(observe=observe, rebuild=None, chunk=chunk, init_member=init_member,
                      init_local=init_local)

