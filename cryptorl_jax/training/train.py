"""The one compiled training step and its host loop.

`make_train(spec)` (a `training.spec.TrainerSpec`; `trainer_for(cfg, n_features, ...)` builds
it from a config) returns a `Trainer` whose `train_chunk(state, data, hyper)` is ONE jitted
function: a `lax.scan` over `train.steps_per_chunk` iterations of
  collect: policy acts for all envs (vmap) -> env step (vmap) -> compact transitions into the
           replay buffer;
  learn:   G TQC updates on batches rebuilt by gather from the market arrays, with rewards
           composed from the *current* curriculum coefficients and the member's reward scale,
run data-parallel over the local devices (`training.parallel`) and vmapped over the population's
members, each with its own seed and its own dynamic hyperparameters (`Hyper`, an argument:
members and runs that differ only in those share the compilation). The market arrays are an
argument (`TrainData`), so every walk-forward segment of the same shape reuses the compilation.
`train(...)` is the host loop: it calls `train_chunk`, checks the reduced metrics for NaN/Inf,
logs, checkpoints and resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from cryptorl_jax.agent import replay
from cryptorl_jax.agent.tqc import TQC, Batch, TQCState, make_tqc
from cryptorl_jax.config import Config, ConfigError
from cryptorl_jax.encoder.mae import MAEEncoder
from cryptorl_jax.env import trading
from cryptorl_jax.env.trading import (
    EnvParams,
    EnvState,
    MarketData,
    Observation,
    StartRange,
)
from cryptorl_jax.hooks import Hooks
from cryptorl_jax.training import parallel
from cryptorl_jax.training.checkpoint import Checkpointer
from cryptorl_jax.training.curriculum import penalty_coefficients_arrays
from cryptorl_jax.training.logging import Progress, ScalarLogger
from cryptorl_jax.training.spec import Hyper, Member, TrainerSpec, members_from_config, stack

log = logging.getLogger("cryptorl_jax.training")

EMBEDDING_MODES = ("random", "pretrained-frozen")


class TrainingDivergedError(RuntimeError):
    """A chunk produced a NaN/Inf metric; training stopped, the last good checkpoint is kept."""


@struct.dataclass
class TrainData:
    """What one segment trains on: the market arrays, the allowed rows, optional embeddings."""

    market: MarketData
    start_range: StartRange
    embeddings: jnp.ndarray | None = None  # [T, D] for encoder.mode random / pretrained-frozen


@struct.dataclass
class LocalState:
    """Per device and seed: the envs, this device's replay shard and the PRNG key."""

    env: EnvState  # [n_envs_local]
    buffer: replay.ReplayState
    key: jax.Array


@struct.dataclass
class TrainState:
    agent: TQCState  # [S, ...]: replicated over devices
    local: LocalState  # [n_devices, S, ...]: sharded over the device axis
    iteration: jnp.ndarray  # int32 []: vectorised env steps done (each moves n_envs envs)


@dataclass(frozen=True)
class Metric:
    """One training metric: its per-step value and how the chunk reduces the step sums.

    reduce: "mean" over the chunk's steps; "sum" over them; "learning" the mean over the steps
    that ran updates (agent metrics, 0 before learning starts); "internal" a sum the chunk's
    reduction uses but does not report.
    """

    name: str
    step: Callable[[dict], jnp.ndarray]
    reduce: str = "mean"


def _env_mean(key: str, absolute: bool = False) -> Callable[[dict], jnp.ndarray]:
    if absolute:
        return lambda c: jnp.mean(jnp.abs(c["info"][key]))
    return lambda c: jnp.mean(c["info"][key])


AGENT_METRICS = ("critic_loss", "actor_loss", "alpha_loss", "q_mean", "entropy")
METRICS = (
    Metric("reward", lambda c: jnp.mean(c["reward"])),
    Metric("pnl", _env_mean("pnl")),
    Metric("cost", _env_mean("cost")),
    Metric("financing", _env_mean("financing")),
    Metric("churn_penalty", _env_mean("churn")),
    Metric("smooth_penalty", _env_mean("smooth")),
    Metric("turnover", _env_mean("turnover")),
    Metric("exposure", _env_mean("exposure", absolute=True)),
    Metric("episodes", lambda c: jnp.sum(c["done"]).astype(jnp.float32), "sum"),
    Metric("ruined", lambda c: jnp.sum(c["terminated"]).astype(jnp.float32), "sum"),
    Metric("episode_nav_sum", lambda c: jnp.sum(jnp.where(c["done"], c["info"]["nav"], 0.0)),
           "internal"),
    Metric("learning", lambda c: c["learning"].astype(jnp.float32), "internal"),
    *(Metric(name, lambda c, name=name: c["updates"][name] * c["learning"], "learning")
      for name in AGENT_METRICS),
)


def initial_sums() -> dict[str, jnp.ndarray]:
    return {m.name: jnp.zeros((), jnp.float32) for m in METRICS}


def step_sums(context: dict) -> dict[str, jnp.ndarray]:
    return {m.name: m.step(context) for m in METRICS}


def reduce_sums(sums: dict[str, jnp.ndarray], n_steps: int) -> dict[str, jnp.ndarray]:
    """The chunk's metrics from its step sums (episode_nav is added by the caller)."""
    n_learn = jnp.maximum(sums["learning"], 1.0)
    out = {}
    for m in METRICS:
        if m.reduce == "internal":
            continue
        if m.reduce == "mean":
            out[m.name] = sums[m.name] / float(n_steps)
        elif m.reduce == "learning":
            out[m.name] = sums[m.name] / n_learn
        else:
            out[m.name] = sums[m.name]
    return out


class InitFn(Protocol):
    def __call__(self, key: jax.Array, data: TrainData, encoder_params: nnx.State | None = None,
                 *, hyper: Hyper, seeds: Any, segment: Any = None) -> TrainState: ...


class TrainChunkFn(Protocol):
    def __call__(self, state: TrainState, data: TrainData, hyper: Hyper, segment: Any = None
                 ) -> tuple[TrainState, dict[str, jnp.ndarray]]: ...


@dataclass(frozen=True, eq=False)
class Trainer:
    """Static pieces of a run: the learner, the mesh and layout, and the compiled functions."""

    spec: TrainerSpec
    tqc: TQC
    env_params: EnvParams
    mesh: Any
    layout: Layout
    uses_embeddings: bool
    init: InitFn  # fresh members (TrainState) for seeds [P], hyper [P]
    train_chunk: TrainChunkFn  # (state, data, hyper [P], segment [P]) -> (state, metrics [P])
    observe: Callable[[TrainData, jnp.ndarray, jnp.ndarray], Observation]  # unbatched
    rebuild: Callable[..., Batch]  # (data, compact transitions [B], coeffs, params) -> Batch
    trace_counts: dict = field(default_factory=dict)
    # the members of the config `trainer_for` was given (None for a bare make_train(spec))
    default_members: tuple[Member, ...] | None = None

    @property
    def n_devices(self) -> int:
        return self.layout.n_devices

    @property
    def n_envs_local(self) -> int:
        return self.layout.n_envs_local

    @property
    def batch_local(self) -> int:
        return self.layout.batch_local

    @property
    def capacity_local(self) -> int:
        return self.layout.capacity_local

    @property
    def segments(self) -> int:
        return self.layout.segments

    @property
    def default_hyper(self) -> Hyper:
        """The default members' stacked Hyper [P] (what `train` uses without `members`)."""
        if self.default_members is None:
            raise ValueError("this trainer was built from a bare TrainerSpec: pass the members")
        return stack([m.hyper for m in self.default_members])

    @property
    def population(self) -> int:
        return self.spec.population

    @property
    def env_steps_per_chunk(self) -> int:
        return self.spec.steps_per_chunk * self.spec.n_envs

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.spec.total_env_steps / self.env_steps_per_chunk)

    def put_data(self, data: TrainData) -> TrainData:
        """Replicate a segment's arrays on every device of the mesh."""
        return jax.device_put(data, parallel.replicated(self.mesh))


def _check_divisible(value: int, n_devices: int, key: str, source: str | None) -> int:
    if value % n_devices:
        raise ConfigError(key, f"{value} is not divisible by the {n_devices} devices", source)
    return value // n_devices


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


def column_scale(data: TrainData, uses_embeddings: bool, window: int) -> jnp.ndarray:
    """Each column's sd of the observation's market part over the rows training reads: the
    decision rows [first_start, last_row] of the embeddings, or those rows' windows of the
    features ([first_start - window + 1, last_row]); [D] or [F]. No row after last_row enters
    (train.obs_noise's unit)."""
    x = data.embeddings if uses_embeddings else data.market.features
    sr = data.start_range
    lo = sr.first_start if uses_embeddings else sr.first_start - (window - 1)
    rows = jnp.arange(x.shape[0])
    mask = ((rows >= lo) & (rows <= sr.last_row))[:, None]
    n = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(mask, x, 0.0), axis=0) / n
    var = jnp.sum(jnp.where(mask, jnp.square(x - mean), 0.0), axis=0) / n
    return jnp.sqrt(var)


def add_obs_noise(obs: Observation, key: jax.Array, sd, scale: jnp.ndarray) -> Observation:
    """obs with N(0, (sd * scale)^2) noise on its market part (`window`: an embedding [.., D]
    or a feature window [.., W, F]; scale broadcasts over the last axis); the agent-state part
    stays exact. sd 0 returns the same values."""
    part = obs.window
    eps = jax.random.normal(key, part.shape, part.dtype)
    return obs.replace(window=part + (sd * scale).astype(part.dtype) * eps)


def trainer_for(cfg: Config, n_features: int, embedding_dim: int | None = None, *,
                population: int | None = None, devices: list | None = None,
                segments: int = 1) -> Trainer:
    """make_train of the config's spec (population per segment: default train.n_seeds; K
    `segments`), with the config's members (seeds 0..S-1 in each segment, its
    hyperparameters) as the trainer's defaults."""
    spec = TrainerSpec.from_config(cfg, n_features, embedding_dim, population, segments)
    trainer = make_train(spec, devices=devices)
    per_segment = members_from_config(cfg, spec.population // spec.segments)
    return dataclasses.replace(trainer, default_members=tuple(per_segment * spec.segments))


@dataclass(frozen=True)
class Layout:
    """Where a spec's members live, computed once (`Layout.of`): the members per device, each
    device's envs, batch and replay capacity, and whether a gradient collective is needed.

    "population" parallelism places whole members on devices (population / n_devices each,
    no collective); "data" parallelism gives every device every member, a 1/n_devices share of
    its envs, batch and buffer, and averages the gradients over the device axis. `segments`
    K > 1: the population is K segments x S seeds, member m reading segment `segment[m]`'s
    market arrays (the data argument then has a leading [K] axis).
    """

    n_devices: int
    by_member: bool
    population: int
    segments: int
    members_local: int
    n_envs_local: int
    batch_local: int
    capacity_local: int
    axis_name: str | None

    @classmethod
    def of(cls, spec: TrainerSpec, n_devices: int) -> Layout:
        q, source = spec.tqc, spec.source
        by_member = spec.parallel == "population"
        if spec.segments < 1 or spec.population % spec.segments:
            raise ConfigError("wfo.segments_per_batch", f"{spec.segments} segments do not "
                              f"divide the population of {spec.population}", source)
        if by_member:
            members_local = _check_divisible(spec.population, n_devices,
                                             "train.n_seeds (the population)", source)
            n_local, batch_local, capacity_local = spec.n_envs, q.batch_size, q.buffer_size
        else:
            members_local = spec.population
            n_local = _check_divisible(spec.n_envs, n_devices, "train.n_envs", source)
            batch_local = _check_divisible(q.batch_size, n_devices, "tqc.batch_size", source)
            capacity_local = q.buffer_size // n_devices
        axis_name = parallel.DEVICE_AXIS if n_devices > 1 and not by_member else None
        return cls(n_devices=n_devices, by_member=by_member, population=spec.population,
                   segments=spec.segments, members_local=members_local, n_envs_local=n_local,
                   batch_local=batch_local, capacity_local=capacity_local, axis_name=axis_name)


ChunkFn = Callable[[TQCState, LocalState, jnp.ndarray, TrainData, Hyper],
                   tuple[TQCState, LocalState, jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclass(frozen=True)
class MemberStep:
    """The step of ONE member on ONE device: no member axis, no mesh (testable alone).

    `chunk(agent, local, iteration, data, hyper)` runs train.steps_per_chunk iterations of
    collect + learn and returns the chunk's metrics; `init_member(key, seed, hyper,
    encoder_params)` a fresh learner and the member's env key; `init_local(key, data)` its
    envs and empty replay buffer. `Layout` says how many of these a device runs.
    """

    observe: Callable[[TrainData, jnp.ndarray, jnp.ndarray], Observation]
    rebuild: Callable[..., Batch]
    chunk: ChunkFn
    init_member: Callable[[jax.Array, jnp.ndarray, Hyper, Any], tuple[TQCState, jax.Array]]
    init_local: Callable[[jax.Array, TrainData], LocalState]


def make_member_step(spec: TrainerSpec, layout: Layout, tqc: TQC, env_params: EnvParams,
                     uses_embeddings: bool) -> MemberStep:
    """The one-member step of a spec (see `MemberStep`); the member's envs, batch and buffer
    are the layout's per-device shares."""
    q, window = spec.tqc, spec.env.window
    n_local, batch_local = layout.n_envs_local, layout.batch_local
    total_steps = float(spec.total_env_steps)
    n_updates = q.gradient_steps
    phase_ends = jnp.asarray(spec.phase_ends, jnp.float32)
    example_ct = trading.CompactTransition.example()

    def observe(data: TrainData, t: jnp.ndarray, agent_vector: jnp.ndarray) -> Observation:
        if uses_embeddings:
            return Observation(window=data.embeddings[t], agent=agent_vector)
        return trading.observe(env_params, data.market, t, agent_vector)

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
        """One vectorised env step of every env: act, step, store the compact transitions."""
        k_random, k_policy, k_env = keys
        env = local.env
        obs = batched_observe(data, env.t, trading.book_agent_state(env.book))
        obs = add_obs_noise(obs, jax.random.fold_in(k_policy, 1), *noise)
        actions = jax.lax.cond(
            learning,
            lambda: tqc.act(agent, obs, k_policy),
            lambda: jax.random.uniform(k_random, (n_local, 1), jnp.float32, -1.0, 1.0))
        _, env_next, reward, terminated, truncated, info = jax.vmap(
            trading.step, in_axes=(0, 0, 0, None, None, None))(
            jax.random.split(k_env, n_local), env, actions, params, data.market, coeffs)
        buffer = replay.add(local.buffer, jax.vmap(trading.compact)(
            env, actions, terminated, truncated))
        context = {"reward": reward, "info": info, "terminated": terminated,
                   "done": terminated | truncated}
        return env_next, buffer, context

    def learn(agent: TQCState, buffer, data: TrainData, params: EnvParams, coeffs,
              hyper: Hyper, learning, key, noise):
        """G updates on batches rebuilt from the buffer (none before learning starts)."""

        def sample_fn(k):
            batch = rebuild(data, replay.sample(buffer, k, batch_local), coeffs, params)
            k_obs, k_next = jax.random.split(jax.random.fold_in(k, 1))
            return batch._replace(obs=add_obs_noise(batch.obs, k_obs, *noise),
                                  next_obs=add_obs_noise(batch.next_obs, k_next, *noise))

        def do_updates(a):
            return tqc.update_many(a, sample_fn, key, n_updates, hyper.tqc)

        metric_shapes = jax.eval_shape(do_updates, agent)[1]

        def no_updates(a):
            return a, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

        return jax.lax.cond(learning, do_updates, no_updates, agent)

    def chunk(agent: TQCState, local: LocalState, iteration, data: TrainData, hyper: Hyper):
        """steps_per_chunk iterations for one member on one device."""
        params = env_params.replace(reward_scale=hyper.reward_scale)
        noise = (hyper.obs_noise, column_scale(data, uses_embeddings, window))

        def body(carry, _):
            agent, local, iteration, sums = carry
            key, k_random, k_policy, k_env, k_update = jax.random.split(local.key, 5)
            coeffs = coefficients(iteration, hyper)
            learning = iteration * spec.n_envs >= q.learning_starts
            env_next, buffer, context = collect(agent, local, data, params, coeffs, learning,
                                                (k_random, k_policy, k_env), noise)
            agent, upd = learn(agent, buffer, data, params, coeffs, hyper, learning, k_update,
                               noise)
            context.update(learning=learning, updates=upd)
            sums = jax.tree.map(jnp.add, sums, step_sums(context))
            local = LocalState(env=env_next, buffer=buffer, key=key)
            return (agent, local, iteration + 1, sums), None

        (agent, local, iteration, sums), _ = jax.lax.scan(
            body, (agent, local, iteration, initial_sums()), None, length=spec.steps_per_chunk)
        metrics = reduce_sums(sums, spec.steps_per_chunk)
        running_nav = jnp.mean(local.env.nav)
        # mean final NAV of the episodes that ended in this chunk (the running NAV if none did)
        metrics["episode_nav"] = jnp.where(sums["episodes"] > 0,
                                           sums["episode_nav_sum"]
                                           / jnp.maximum(sums["episodes"], 1.0), running_nav)
        metrics["nav"] = running_nav
        metrics["alpha"] = jnp.exp(agent.log_alpha)
        coeffs = coefficients(iteration, hyper)
        metrics["churn_coef"] = coeffs.churn
        metrics["smooth_coef"] = coeffs.smooth
        metrics["updates"] = sums["learning"] * n_updates
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
        return LocalState(env=env, buffer=replay.init(example_ct, layout.capacity_local),
                          key=k_local)

    return MemberStep(observe=observe, rebuild=rebuild, chunk=chunk, init_member=init_member,
                      init_local=init_local)


def _take(tree: Any, index) -> Any:
    """tree's leaves at `index` of their leading axis (a member's segment: a gather)."""
    return jax.tree.map(lambda x: x[index], tree)


def make_train(spec: TrainerSpec, *, devices: list | None = None) -> Trainer:
    """Build the trainer of a spec: one compiled step for its population of members.

    The step of one member on one device (`make_member_step`: collect, learn and the metrics
    spec `METRICS`, split as Brax's SAC trainer is) is mapped over the members and devices as
    the `Layout` says: vmap over a device's members (each with its own `Hyper`, an argument,
    and with K > 1 segments its own segment's market arrays), shard_map over the devices, one
    jit. Members and segments that differ only in those arguments share the compilation.
    """
    q, window, source = spec.tqc, spec.env.window, spec.source
    devices = devices if devices is not None else parallel.select_devices(spec.devices, source)
    mesh = parallel.make_mesh(devices)
    layout = Layout.of(spec, len(devices))
    mode = spec.encoder_mode
    uses_embeddings = mode in EMBEDDING_MODES
    if uses_embeddings and spec.embedding_dim is None:
        raise ValueError(f"encoder.mode '{mode}' trains on precomputed embeddings: "
                         "make_train needs embedding_dim")
    env_params = EnvParams.from_config(spec.env)
    first = jnp.zeros((spec.embedding_dim,) if uses_embeddings else (window, spec.n_features),
                      jnp.float32)
    obs_example = Observation(window=first, agent=jnp.zeros(3, jnp.float32))
    encoder_factory = None
    encoder_lr = None
    if mode == "pretrained-finetune":
        e = spec.encoder

        def encoder_factory(rngs):
            return MAEEncoder(spec.n_features, window, e, rngs=rngs)

        encoder_lr = e.finetune_learning_rate
    tqc = make_tqc(q, obs_example, 1, encoder_factory=encoder_factory, encoder_lr=encoder_lr,
                   axis_name=layout.axis_name)
    step = make_member_step(spec, layout, tqc, env_params, uses_embeddings)
    trace_counts = {"train_chunk": 0, "init": 0}
    n_dev, by_member, segmented = layout.n_devices, layout.by_member, layout.segments > 1

    def members_chunk(agent, local, iteration, data, hyper, segment):
        """All members of this device: vmap over the member axis (none when P = 1)."""
        if segmented:  # member m reads its segment's arrays
            def one(a, lo, h, s):
                return step.chunk(a, lo, iteration, _take(data, s), h)

            return jax.vmap(one, out_axes=(0, 0, None, 0))(agent, local, hyper, segment)
        if layout.members_local == 1:  # a size-1 vmap turns every matmul into a batched dot
            squeeze = partial(jax.tree.map, lambda x: x[0])
            expand = partial(jax.tree.map, lambda x: x[None])
            agent, local, iteration_out, metrics = step.chunk(
                squeeze(agent), squeeze(local), iteration, data, squeeze(hyper))
            return expand(agent), expand(local), iteration_out, expand(metrics)
        return jax.vmap(step.chunk, in_axes=(0, 0, None, None, 0), out_axes=(0, 0, None, 0))(
            agent, local, iteration, data, hyper)

    def sharded_chunk(agent, local, iteration, data, hyper, segment):
        local = jax.tree.map(lambda x: x[0], local)  # this device's [P_local, ...] slice
        agent, local, iteration_out, metrics = members_chunk(agent, local, iteration, data,
                                                             hyper, segment)
        if not by_member:
            metrics = jax.lax.pmean(metrics, parallel.DEVICE_AXIS)
        return agent, jax.tree.map(lambda x: x[None], local), iteration_out, metrics

    rep_spec, shard_spec = parallel.REPLICATED, parallel.SHARDED
    member_spec = shard_spec if by_member else rep_spec  # agents, hyper, segment, metrics [P]
    chunk_sharded = parallel.data_parallel(
        sharded_chunk, mesh,
        in_specs=(member_spec, shard_spec, rep_spec, rep_spec, member_spec, member_spec),
        out_specs=(member_spec, shard_spec, rep_spec, member_spec))

    def train_chunk_impl(state: TrainState, data: TrainData, hyper: Hyper, segment):
        trace_counts["train_chunk"] += 1  # Python side effect: runs only when (re)traced
        agent, local, iteration, metrics = chunk_sharded(state.agent, state.local,
                                                         state.iteration, data, hyper, segment)
        return TrainState(agent=agent, local=local, iteration=iteration), metrics

    chunk_jit = jax.jit(train_chunk_impl, donate_argnums=(0,))

    def init_impl(key, data: TrainData, hyper: Hyper, seeds, encoder_params, segment):
        trace_counts["init"] += 1

        def one_member(seed, h, s):
            if segmented:  # the segment's own key and (fine-tune) encoder
                return step.init_member(key[s], seed, h,
                                        None if encoder_params is None
                                        else _take(encoder_params, s))
            return step.init_member(key, seed, h, encoder_params)

        agent, env_keys = jax.vmap(one_member)(seeds, hyper, segment)  # [P]
        if by_member:  # [D, P / D]: device d holds members d * P/D .. (d + 1) * P/D - 1,
            # with the streams a single device gives them (device index 0)
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(env_keys)
            keys = keys.reshape((n_dev, layout.members_local) + keys.shape[1:])
            segs = segment.reshape((n_dev, layout.members_local))
        else:  # [D, P]: every device holds every member's envs and replay shard
            keys = jax.vmap(lambda d: jax.vmap(lambda k: jax.random.fold_in(k, d))(env_keys))(
                jnp.arange(n_dev))
            segs = jnp.broadcast_to(segment, (n_dev, layout.population))
        if segmented:
            local = jax.vmap(jax.vmap(lambda k, s: step.init_local(k, _take(data, s))))(
                keys, segs)
        else:
            local = jax.vmap(jax.vmap(lambda k: step.init_local(k, data)))(keys)
        return TrainState(agent=agent, local=local, iteration=jnp.zeros((), jnp.int32))

    rep, shard = parallel.replicated(mesh), parallel.per_device(mesh)
    init_jit = jax.jit(init_impl, out_shardings=TrainState(
        agent=shard if by_member else rep, local=shard, iteration=rep))

    def segment_array(segment) -> jnp.ndarray:
        """The members' segment indices [P] (member m of K segments x S seeds: m // S)."""
        if segment is None:
            segment = np.arange(layout.population) // (layout.population // layout.segments)
        segment = jnp.asarray(segment, jnp.int32)
        if segment.shape != (layout.population,):
            raise ValueError(f"segment must be [{layout.population}], got {segment.shape}")
        return segment

    def train_chunk(state: TrainState, data: TrainData, hyper: Hyper,
                    segment=None) -> tuple[TrainState, dict[str, jnp.ndarray]]:
        """steps_per_chunk iterations of every member (metrics [P]); `segment` [P] (default
        m // S) says which of the K segments' arrays member m reads when K > 1."""
        return chunk_jit(state, data, hyper, segment_array(segment))

    def init(key, data: TrainData, encoder_params: nnx.State | None = None, *,
             hyper: Hyper, seeds, segment=None) -> TrainState:
        """Fresh learners, envs and empty buffers for the members (seeds [P], hyper [P]);
        `encoder_params` seed fine-tuned encoders. Member m's streams derive from
        fold_in(key, seed_m) alone, so a member trains the same in any population. With K > 1
        segments, `key`, `data` and `encoder_params` have a leading [K] axis and member m
        uses its segment's (`segment`, default m // S)."""
        if (encoder_params is None) == (mode == "pretrained-finetune"):
            raise ValueError("encoder_params must be given exactly when encoder.mode is "
                             f"pretrained-finetune (mode: {mode})")
        seeds = jnp.asarray(seeds, jnp.int32)
        if seeds.shape != (layout.population,):
            raise ValueError(f"the trainer is built for {layout.population} members, got "
                             f"seeds of shape {seeds.shape}")
        return init_jit(key, data, hyper, seeds, encoder_params, segment_array(segment))

    return Trainer(spec=spec, tqc=tqc, env_params=env_params, mesh=mesh, layout=layout,
                   uses_embeddings=uses_embeddings, init=init, train_chunk=train_chunk,
                   observe=step.observe, rebuild=step.rebuild, trace_counts=trace_counts)


# --------------------------------------------------------------------------------------------
# Host loop
# --------------------------------------------------------------------------------------------


def check_train_data(data: TrainData, window: int, vol_window: int = 0) -> None:
    """Host check that every row an episode can read is finite; names the row and column."""
    sr = data.start_range
    first = int(sr.first_start) - window + 1
    last = int(sr.last_row)
    trading.check_start_range(int(data.market.n_rows), sr, window, vol_window)
    arrays = {"features": data.market.features, "log_returns": data.market.log_returns,
              "realised_vol": data.market.realised_vol, "close": data.market.close}
    if data.embeddings is not None:
        arrays["embeddings"] = data.embeddings
    for name, arr in arrays.items():
        # realised vol and embeddings are read at decision rows only (an embedding at t already
        # summarises the window ending at t); the raw arrays also at the window's lookback
        lo = int(sr.first_start) if name in ("realised_vol", "embeddings") else first
        part = np.asarray(arr[lo: last + 1])
        bad = ~np.isfinite(part)
        if bad.any():
            idx = np.argwhere(bad)[0]
            row = lo + int(idx[0])
            col = f", column {int(idx[1])}" if part.ndim == 2 else ""
            raise ValueError(f"train data: {name} is not finite at row {row}{col} (value "
                             f"{float(part[tuple(idx)])}); rows {lo}..{last} are read by "
                             "training")


@dataclass
class TrainResult:
    state: TrainState
    history: list[dict[str, Any]]
    env_steps: int
    wall_s: float
    compile_s: float
    # entropy_summary(history, the members' target entropies): where the entropy coefficient
    # and the policy's entropy ended, and whether the entropy reached its target
    entropy: dict[str, Any] = field(default_factory=dict)


# nats above the target entropy still counted as "reached" (entropy_summary): SAC's alpha
# holds the entropy AT the target, and a chunk's mean of noisy minibatch estimates scatters
# around it; 0.1 nat is a chosen margin, not a measured one
ENTROPY_TOLERANCE = 0.1


def entropy_summary(history: Sequence[dict[str, Any]], target_entropy: float | Sequence[float],
                    tol: float = ENTROPY_TOLERANCE) -> dict[str, Any]:
    """Where the entropy tuning ended, from the last record of a training `history`.

    `final_alpha` is the entropy coefficient exp(log_alpha) at the end of the last chunk.
    `final_entropy` is the last chunk's mean policy entropy: the mean, over the chunk's
    iterations that learned, of the update's estimate -mean_B log pi(a|s), a ~ pi(.|s) on the
    replay minibatch (averaged over the iteration's actor updates; the "entropy" metric). None
    when the last chunk made no update (training had not started learning).
    SAC's entropy coefficient drives the entropy DOWN to `target_entropy` from above (a fresh
    policy's entropy is normally well above the default target); `entropy_reached_target` is
    final_entropy <= target + tol (`tol` nats, ENTROPY_TOLERANCE by default), false when there
    is no final entropy.

    `target_entropy` is one value, or one per member (`hyper.tqc.target_entropy`; "auto" is
    -action_dim = -1). For a population (records with "members") the top-level alpha, entropy
    and target are the members' means, `entropy_reached_target` is true only if EVERY member
    reached its own target, and "members" holds the per-member lists. An empty history gives
    None values and False.
    """
    targets = np.atleast_1d(np.asarray(target_entropy, np.float64)).tolist()
    last = history[-1] if len(history) else None
    members = None if last is None else last.get("members")
    n = len(targets) if members is None else len(members["entropy"])
    if len(targets) == 1:
        targets = targets * n
    if len(targets) != n:
        raise ValueError(f"{len(targets)} target entropies for {n} members")

    def per_member(name: str) -> list[float | None]:
        if last is None:
            return [None] * n
        if members is None:
            return [float(last[name])] * n if name in last else [None] * n
        return [float(v) for v in members[name]] if name in members else [None] * n

    alphas = per_member("alpha")
    updates = per_member("updates")
    entropies = [e if u is not None and u > 0 else None
                 for e, u in zip(per_member("entropy"), updates, strict=True)]
    reached = [e is not None and e <= t + tol for e, t in zip(entropies, targets, strict=True)]

    def mean(xs: list[float | None]) -> float | None:
        known = [x for x in xs if x is not None]
        return float(np.mean(known)) if known else None

    out: dict[str, Any] = {
        "final_alpha": mean(alphas), "final_entropy": mean(entropies),
        "target_entropy": float(np.mean(targets)), "entropy_reached_target": all(reached),
        "tolerance": float(tol), "chunk": None if last is None else last.get("chunk")}
    if members is not None:
        out["members"] = {"final_alpha": alphas, "final_entropy": entropies,
                          "target_entropy": targets, "entropy_reached_target": reached}
    return out


def _finite_or_raise(metrics: dict[str, np.ndarray], chunk: int, last_good: str) -> None:
    for name, value in metrics.items():
        arr = np.asarray(value)
        if not np.isfinite(arr).all():
            seed = int(np.argmax(~np.isfinite(arr.reshape(-1))))
            raise TrainingDivergedError(
                f"training diverged in chunk {chunk}: metric '{name}' is "
                f"{float(arr.reshape(-1)[seed])} (seed {seed}); {last_good}")


def train(cfg: Config, data: TrainData, workdir: str | Path, *, key: jax.Array | None = None,
          trainer: Trainer | None = None, encoder_params: nnx.State | None = None,
          resume: bool = True, progress: bool | None = None, tensorboard_dir: str | Path | None
          = None, hooks: Hooks | None = None, desc: str = "train",
          check_inputs: bool = True,
          on_chunk: Callable[[int, dict[str, Any]], None] | None = None,
          members: list[Member] | None = None) -> TrainResult:
    """Run `train_chunk` until `train.total_env_steps`, checkpointing into `workdir`.

    With `resume`, a checkpoint in `workdir/checkpoints` is restored and training continues from
    it; the final parameters equal those of an uninterrupted run. `hooks.stop_after_chunk`
    (tests) ends the loop early (after that many chunks in all), as a kill would.
    `on_chunk(chunk, record)` is called after every chunk (after its checkpoint, if any) with a
    copy of the chunk's history record; an exception it raises (e.g. optuna.TrialPruned) ends
    training and propagates after the logger and checkpointer are closed.
    `members` (default: `train.n_seeds` members with the config's hyperparameters) are the
    population the trainer trains; its size must be the trainer's. A history record holds the
    members' means and, under "members", each member's value of every metric. The result's
    `entropy` is `entropy_summary(history, the members' target entropies)`.
    """
    workdir = Path(workdir)
    tc = cfg.train
    if trainer is None:
        emb_dim = None if data.embeddings is None else int(data.embeddings.shape[-1])
        trainer = trainer_for(cfg, int(data.market.features.shape[-1]), emb_dim,
                              population=None if members is None else len(members))
    k_segments = trainer.segments
    if members is None:
        members = members_from_config(cfg) * k_segments
    members = list(members)
    if len(members) != trainer.population:
        raise ValueError(f"{len(members)} members for a trainer of population "
                         f"{trainer.population}")
    hyper = stack([m.hyper for m in members])
    seeds = [m.seed for m in members]
    if check_inputs:
        for k in range(k_segments):
            part = data if k_segments == 1 else _take(data, k)
            try:
                check_train_data(part, cfg.env.window, cfg.env.vol_window)
            except ValueError as exc:
                raise ValueError(f"segment {k} of the batch: {exc}" if k_segments > 1
                                 else str(exc)) from None
    if key is None:
        key = jax.random.key(cfg.seed)
    if k_segments > 1 and np.shape(key) != (k_segments,):
        raise ValueError(f"a batch of {k_segments} segments trains with one key per segment "
                         f"(a key array of shape ({k_segments},)), got shape {np.shape(key)}")
    progress = cfg.output.progress if progress is None else progress
    data = trainer.put_data(data)
    t0 = time.perf_counter()
    state = trainer.init(key, data, encoder_params, hyper=hyper, seeds=seeds)
    start_chunk = 0
    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints)
    history: list[dict[str, Any]] = []
    latest = ckpt.latest_step()
    if not resume and latest is not None:
        ckpt.close()
        raise FileExistsError(f"{ckpt.directory} already holds training checkpoints (step "
                              f"{latest}); pass resume=True to continue them, or use an empty "
                              "directory (nothing was overwritten)")
    if latest is not None:
        state, meta = ckpt.restore(latest, state)
        start_chunk = int(meta["chunk"])
        history = list(meta.get("history", []))
        log.info("resumed training from %s (chunk %d)", ckpt.directory / str(latest),
                 start_chunk)
    n_chunks = trainer.n_chunks
    logger = ScalarLogger(tensorboard_dir)
    bar = Progress(n_chunks * trainer.env_steps_per_chunk,
                   initial=start_chunk * trainer.env_steps_per_chunk, desc=desc,
                   enabled=progress)
    compile_s = 0.0
    last_good = (f"the last good checkpoint is {ckpt.directory / str(latest)}" if latest
                 is not None else "no checkpoint was written yet")
    try:
        for chunk in range(start_chunk, n_chunks):
            if hooks is not None and hooks.stop_after_chunk is not None \
                    and chunk >= hooks.stop_after_chunk:
                break
            tc0 = time.perf_counter()
            state, metrics = trainer.train_chunk(state, data, hyper)
            metrics = jax.device_get(metrics)
            if chunk == start_chunk:
                compile_s = time.perf_counter() - tc0  # includes the first chunk's run
            _finite_or_raise(metrics, chunk, last_good)
            env_steps = (chunk + 1) * trainer.env_steps_per_chunk
            record: dict[str, Any] = {k: float(np.mean(v)) for k, v in metrics.items()}
            record.update({"chunk": chunk, "env_steps": env_steps})
            if trainer.population > 1:
                record["members"] = {k: [float(x) for x in np.asarray(v).reshape(-1)]
                                     for k, v in metrics.items()}
            history.append(record)
            rates = bar.update(env_steps, int(record["updates"]),
                               {"reward": record["reward"], "nav": record["episode_nav"]})
            scalars = {k: v for k, v in record.items() if k != "members"}
            logger.scalars(env_steps, {**scalars, **rates}, prefix="train/")
            if (chunk + 1) % tc.checkpoint_every_chunks == 0 or chunk + 1 == n_chunks:
                ckpt.save(chunk + 1, state, {"chunk": chunk + 1, "history": history,
                                             "config_digest": cfg.digest()})
                last_good = f"the last good checkpoint is {ckpt.directory / str(chunk + 1)}"
            if on_chunk is not None:
                on_chunk(chunk, dict(record))
    finally:
        bar.close()
        logger.close()
        ckpt.close()
    jax.block_until_ready(state)
    done_chunks = len(history)
    targets = np.asarray(jax.device_get(hyper.tqc.target_entropy)).reshape(-1).tolist()
    return TrainResult(state=state, history=history,
                       env_steps=done_chunks * trainer.env_steps_per_chunk,
                       wall_s=time.perf_counter() - t0, compile_s=compile_s,
                       entropy=entropy_summary(history, targets))


def stack_segments(datas: Sequence[TrainData]) -> TrainData:
    """K segments' TrainData (same shapes) as one with a leading [K] axis (a batch's data)."""
    shapes = {tuple(leaf.shape for leaf in jax.tree.leaves(d)) for d in datas}
    if len(shapes) != 1:
        raise ValueError(f"the segments of a batch must have the same shapes, got {shapes}")
    return stack(list(datas))


def segment_results(result: TrainResult, segments: int) -> list[TrainResult]:
    """Each segment's share of a batch's `TrainResult` (K segments x S seeds, segment-major):
    its members' agents, a history whose records hold its members' means (and "members" when
    S > 1, as a population of S alone would), and its entropy summary."""
    if segments == 1:
        return [result]
    population = int(jax.tree.leaves(result.state.agent)[0].shape[0])
    s = population // segments
    targets = result.entropy["members"]["target_entropy"]  # K > 1: a population, per member
    out = []
    for k in range(segments):
        part = slice(k * s, (k + 1) * s)
        history = []
        for rec in result.history:
            members = rec["members"]
            r: dict[str, Any] = {name: float(np.mean(np.asarray(v[part], np.float32)))
                                 for name, v in members.items()}
            r.update({"chunk": rec["chunk"], "env_steps": rec["env_steps"]})
            if s > 1:
                r["members"] = {name: list(v[part]) for name, v in members.items()}
            history.append(r)
        agent = jax.tree.map(lambda x, p=part: x[p], result.state.agent)
        out.append(TrainResult(state=TrainState(agent=agent, local=None,
                                                iteration=result.state.iteration),
                               history=history, env_steps=result.env_steps,
                               wall_s=result.wall_s, compile_s=result.compile_s,
                               entropy=entropy_summary(history, targets[part])))
    return out
