"""The step of ONE member on ONE device (`make_member_step`): collect, learn, the chunk's scan
and the member's initial state; no member axis, no mesh (`training.trainer` maps it over the
members and devices).

One iteration of the chunk is
  collect: the policy acts for all envs (vmap) -> env step (vmap) -> compact transitions into
           the replay buffer;
  learn:   G TQC updates on batches rebuilt by gather from the market arrays, with rewards
           composed from the *current* curriculum coefficients and the member's reward scale,
and its metrics (`training.metrics`) are summed over the chunk's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cryptorl_jax.agent import replay
from cryptorl_jax.agent.tqc import TQC, Batch, TQCState
from cryptorl_jax.env import trading
from cryptorl_jax.env.trading import EnvParams, Observation
from cryptorl_jax.training.curriculum import penalty_coefficients_arrays
from cryptorl_jax.training.data import TrainData, make_observe
from cryptorl_jax.training.metrics import StepMetrics, StepRecord, chunk_metrics
from cryptorl_jax.training.noise import add_obs_noise, column_scale
from cryptorl_jax.training.placement import Placement
from cryptorl_jax.training.spec import Hyper, TrainerSpec
from cryptorl_jax.training.state import LocalState

ChunkFn = Callable[..., tuple[TQCState, LocalState, jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclass(frozen=True)
class MemberStep:
    """The step of ONE member on ONE device: no member axis, no mesh (testable alone).

    `chunk(agent, local, iteration, data, hyper, noisy=True)` runs train.steps_per_chunk
    iterations of collect + learn and returns the chunk's metrics; `noisy` (static) False
    builds the step without observation noise, for members whose `obs_noise` are all 0 (the
    same numbers as the noisy step at sd 0: the noise's keys are folded off the others, so no
    other draw moves); `init_member(key, seed, hyper,
    encoder_params)` a fresh learner and the member's env key; `init_local(key, data)` its
    envs and empty replay buffer. `Placement` says how many of these a device runs.
    """

    observe: Callable[[TrainData, jnp.ndarray, jnp.ndarray], Observation]
    rebuild: Callable[..., Batch]
    chunk: ChunkFn
    init_member: Callable[[jax.Array, jnp.ndarray, Hyper, Any], tuple[TQCState, jax.Array]]
    init_local: Callable[[jax.Array, TrainData], LocalState]


def _replace_encoder(params: nnx.State, encoder_params: nnx.State) -> nnx.State:
    """A copy of a network's parameters with the encoder's leaves taken from encoder_params.

    The containers (and so the pytree structure the optimiser state was built on) are kept:
    only leaves are swapped, and the two encoder trees must have the same structure.
    """
    out = jax.tree.map(lambda x: x, params)  # a new State with the same containers
    old = params["encoder"]
    if jax.tree.structure(old) != jax.tree.structure(encoder_params):
        raise ValueError("the pretrained encoder's parameters do not match the networks' "
                         f"encoder: {jax.tree.structure(encoder_params)} vs "
                         f"{jax.tree.structure(old)}")
    out["encoder"] = jax.tree.map(lambda _, new: jnp.asarray(new, jnp.float32), old,
                                  encoder_params)
    return out


def _noised(obs: Observation, key: jax.Array, noise) -> Observation:
    """obs with the observation noise (sd, column scale) added; noise None: obs itself (no
    random numbers drawn)."""
    return obs if noise is None else add_obs_noise(obs, key, *noise)


def _branch(learning, if_learning: Callable, if_not: Callable):
    """if_learning() or if_not(): by Python when `learning` is a static bool, else a
    `lax.cond` on the traced one."""
    if isinstance(learning, bool):
        return if_learning() if learning else if_not()
    return jax.lax.cond(learning, if_learning, if_not)


def make_member_step(spec: TrainerSpec, placement: Placement, tqc: TQC, env_params: EnvParams,
                     uses_embeddings: bool, flat_params: bool = False) -> MemberStep:
    """The one-member step of a spec (see `MemberStep`); the member's envs, batch and buffer
    are the placement's per-device shares. `flat_params`: the chunk's loops carry the learner
    with its parameters flat (`TQC.flatten`; the state in and out keeps its trees)."""
    q, window = spec.tqc, spec.env.window
    n_local, batch_local = placement.n_envs_local, placement.batch_local
    total_steps = float(spec.total_env_steps)
    n_updates = q.gradient_steps
    phase_ends = jnp.asarray(spec.phase_ends, jnp.float32)
    example_ct = trading.CompactTransition.example()

    observe = make_observe(env_params, uses_embeddings)
    batched_observe = jax.vmap(observe, in_axes=(None, 0, 0))

    def rebuild(data: TrainData, cts: trading.CompactTransition, coeffs,
                params: EnvParams = env_params) -> Batch:
        """Observations and rewards of sampled compact transitions, by gather (`params`: the
        member's, with its reward scale)."""
        rt = jax.vmap(trading.replay, in_axes=(None, None, 0, None))(
            params, data.market, cts, coeffs)
        return Batch(obs=batched_observe(data, rt.t, rt.agent_state),
                     action=cts.action[:, None],  # [B, 1]
                     reward=rt.reward,
                     next_obs=batched_observe(data, rt.t_next, rt.agent_state_next),
                     terminated=rt.terminated)

    def coefficients(iteration, hyper: Hyper) -> trading.Coeffs:
        progress = (iteration * spec.n_envs).astype(jnp.float32) / total_steps
        churn, smooth = penalty_coefficients_arrays(progress, phase_ends, hyper.churn,
                                                    hyper.smooth)
        return trading.Coeffs(churn=churn, smooth=smooth)

    def collect(agent: TQCState, local: LocalState, data: TrainData, params: EnvParams,
                coeffs, learning, keys, noise):
        """One vectorised env step of every env: act, step, store the compact transitions.
        `learning` True / False (static) or a traced bool: the policy's actions or uniform
        random ones (warm-up). Returns the envs after the step, the buffer and the step's
        (reward, terminated, done, info) for the metrics."""
        k_random, k_policy, k_env = keys
        env = local.env
        obs = batched_observe(data, env.t, trading.book_agent_state(env.book))
        obs = _noised(obs, jax.random.fold_in(k_policy, 1), noise)
        actions = _branch(
            learning,
            lambda: tqc.act(agent, obs, k_policy),
            lambda: jax.random.uniform(k_random, (n_local, 1), jnp.float32, -1.0, 1.0))
        _, env_next, reward, terminated, truncated, info = jax.vmap(
            trading.step, in_axes=(0, 0, 0, None, None, None))(
            jax.random.split(k_env, n_local), env, actions, params, data.market, coeffs)
        buffer = replay.add(local.buffer, jax.vmap(trading.compact)(
            env, actions, terminated, truncated))
        return env_next, buffer, (reward, terminated, terminated | truncated, info)

    def learn(agent: TQCState, buffer, data: TrainData, params: EnvParams, coeffs,
              hyper: Hyper, learning, key, noise):
        """G updates on batches rebuilt from the buffer (none before learning starts;
        `learning` as in `collect`)."""

        def sample_fn(k):
            batch = rebuild(data, replay.sample(buffer, k, batch_local), coeffs, params)
            if noise is None:
                return batch
            k_obs, k_next = jax.random.split(jax.random.fold_in(k, 1))
            return batch._replace(obs=_noised(batch.obs, k_obs, noise),
                                  next_obs=_noised(batch.next_obs, k_next, noise))

        def do_updates():
            # aligned: every learning iteration makes the same G updates, so the learner's
            # update count is a multiple of G here (the actor's turns need no conditional
            # when G is a multiple of tqc.policy_delay)
            return tqc.update_many(agent, sample_fn, key, n_updates, hyper.tqc, aligned=True)

        def no_updates():
            return agent, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                       jax.eval_shape(do_updates)[1])

        return _branch(learning, do_updates, no_updates)

    def chunk(agent: TQCState, local: LocalState, iteration, data: TrainData, hyper: Hyper,
              noisy: bool = True):
        """steps_per_chunk iterations for one member on one device (`noisy`: see MemberStep)."""
        params = env_params.replace(reward_scale=hyper.reward_scale)
        noise = (hyper.obs_noise, column_scale(data, uses_embeddings, window)) if noisy \
            else None

        def body(carry, _, phase: bool | None):
            agent, local, iteration, sums = carry
            key, k_random, k_policy, k_env, k_update = jax.random.split(local.key, 5)
            coeffs = coefficients(iteration, hyper)
            learning = iteration * spec.n_envs >= q.learning_starts
            gate = learning if phase is None else phase  # static in a warm-up/learning loop
            env_next, buffer, (reward, terminated, done, info) = collect(
                agent, local, data, params, coeffs, gate, (k_random, k_policy, k_env), noise)
            agent, upd = learn(agent, buffer, data, params, coeffs, hyper, gate, k_update,
                               noise)
            step = StepMetrics.of(StepRecord(reward=reward, info=info, terminated=terminated,
                                             done=done, learning=learning, updates=upd))
            sums = jax.tree.map(jnp.add, sums, step)
            local = LocalState(env=env_next, buffer=buffer, key=key)
            return (agent, local, iteration + 1, sums), None

        def run(phase: bool | None, carry):
            return jax.lax.scan(partial(body, phase=phase), carry, None,
                                length=spec.steps_per_chunk)[0]

        # The phase is decided once per chunk, outside the loops: a chunk before learning
        # starts runs the warm-up loop (random actions, no updates), a chunk after it the
        # learning loop (the policy's actions, G updates), and neither has a conditional;
        # only the chunk that straddles learning_starts decides in every iteration.
        steps, first = spec.steps_per_chunk, -(-q.learning_starts // spec.n_envs)
        phase = jnp.where(iteration >= first, 1, jnp.where(iteration + steps <= first, 0, 2))
        # with flat_params the loops carry each parameter tree and its Adam moments as one
        # vector (one optimiser kernel per network, not one per leaf), converted once a chunk
        agent, local, iteration, sums = jax.lax.switch(
            phase, [partial(run, False), partial(run, True), partial(run, None)],
            (tqc.flatten(agent) if flat_params else agent, local, iteration,
             StepMetrics.zeros()))
        agent = tqc.unflatten(agent) if flat_params else agent
        metrics = chunk_metrics(sums, spec.steps_per_chunk, local.env.nav, agent.log_alpha,
                                coefficients(iteration, hyper), n_updates)
        return agent, local, iteration, metrics

    def init_member(key, seed, hyper: Hyper, encoder_params):
        k_agent, k_env = jax.random.split(jax.random.fold_in(key, seed))
        agent = tqc.init(k_agent, hyper.tqc)
        if encoder_params is not None:
            agent = agent.replace(
                actor_params=_replace_encoder(agent.actor_params, encoder_params),
                critic_params=_replace_encoder(agent.critic_params, encoder_params),
                target_critic_params=_replace_encoder(agent.target_critic_params,
                                                      encoder_params))
        return agent, k_env

    def init_local(key, data: TrainData) -> LocalState:
        k_reset, k_local = jax.random.split(key)
        _, env = jax.vmap(trading.reset, in_axes=(0, None, None, None))(
            jax.random.split(k_reset, n_local), env_params, data.market, data.start_range)
        return LocalState(env=env, buffer=replay.init(example_ct, placement.capacity_local),
                          key=k_local)

    return MemberStep(observe=observe, rebuild=rebuild, chunk=chunk, init_member=init_member,
                      init_local=init_local)
