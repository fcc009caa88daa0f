"""The one compiled training step of a spec (`make_train`): the member step mapped over the
members and devices, jitted.

`make_train(spec)` (a `training.spec.TrainerSpec`; `trainer_for(cfg, n_features, ...)` builds
it from a config) returns a `Trainer` whose `train_chunk(state, data, hyper)` is ONE jitted
function: the member step (`training.member`: a `lax.scan` over `train.steps_per_chunk`
iterations of collect + learn) run data-parallel over the local devices (`training.parallel`)
and vmapped over the population's members as the `Placement` says, each member with its own
seed and its own dynamic hyperparameters (`Hyper`, an argument: members and runs that differ
only in those share the compilation). The market arrays are an argument (`TrainData`), so every
walk-forward segment of the same shape reuses the compilation. `training.loop.train` is the
host loop around it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cryptorl_jax.agent.direct import make_direct
from cryptorl_jax.agent.networks import CRITIC_FORMS, critic_form
from cryptorl_jax.agent.tqc import TQC, Batch, make_tqc
from cryptorl_jax.config import Config
from cryptorl_jax.encoder.mae import MAEEncoder
from cryptorl_jax.env.trading import EnvParams, Observation
from cryptorl_jax.training import parallel
from cryptorl_jax.training.data import TrainData, take
from cryptorl_jax.training.direct_step import (
    check_horizon,
    chunk_updates,
    make_direct_member_step,
)
from cryptorl_jax.training.member import make_member_step
from cryptorl_jax.training.placement import Placement
from cryptorl_jax.training.spec import Hyper, Member, TrainerSpec, members_from_config, stack
from cryptorl_jax.training.state import TrainState

# encoder modes whose observations are precomputed embeddings (TrainData.embeddings)
EMBEDDING_MODES = ("random", "pretrained-frozen")


class InitFn(Protocol):
    def __call__(self, key: jax.Array, data: TrainData, encoder_params: nnx.State | None = None,
                 *, hyper: Hyper, seeds: Any, segment: Any = None) -> TrainState: ...


class TrainChunkFn(Protocol):
    def __call__(self, state: TrainState, data: TrainData, hyper: Hyper, segment: Any = None,
                 *, noisy: bool | None = None) -> tuple[TrainState, dict[str, jnp.ndarray]]: ...


@dataclass(frozen=True, eq=False)
class Trainer:
    """Static pieces of a run: the learner, the mesh and placement, and the compiled
    functions."""

    spec: TrainerSpec
    tqc: TQC | None  # None for agent.kind direct
    env_params: EnvParams
    mesh: Any
    placement: Placement
    uses_embeddings: bool
    init: InitFn  # fresh members (TrainState) for seeds [P], hyper [P]
    train_chunk: TrainChunkFn  # (state, data, hyper [P], segment [P]) -> (state, metrics [P])
    observe: Callable[[TrainData, jnp.ndarray, jnp.ndarray], Observation]  # unbatched
    rebuild: Callable[..., Batch]  # (data, compact transitions [B], coeffs, params) -> Batch
    trace_counts: dict = field(default_factory=dict)
    # the members of the config `trainer_for` was given (None for a bare make_train(spec))
    default_members: tuple[Member, ...] | None = None
    # the learner that acts (TQC or `agent.direct.Direct`): init(key[, hyper]) and
    # act_deterministic(state, obs), what the rollout and the agents' checkpoints read
    learner: Any = None
    critic_form: str = "per-critic"  # how the critics' layers multiply (networks.critic_form)
    params_form: str = "tree"  # how the chunk's loops carry the parameters (step_params_form)
    steps_per_iteration: int = 1  # env steps of each env per chunk iteration (direct: horizon)
    chunk_iterations: int | None = None  # iterations per chunk; None: train.steps_per_chunk

    @property
    def n_devices(self) -> int:
        return self.placement.n_devices

    @property
    def n_envs_local(self) -> int:
        return self.placement.n_envs_local

    @property
    def batch_local(self) -> int:
        return self.placement.batch_local

    @property
    def capacity_local(self) -> int:
        return self.placement.capacity_local

    @property
    def segments(self) -> int:
        return self.placement.segments

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
        iterations = self.spec.steps_per_chunk if self.chunk_iterations is None \
            else self.chunk_iterations
        return iterations * self.spec.n_envs * self.steps_per_iteration

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.spec.total_env_steps / self.env_steps_per_chunk)

    def put_data(self, data: TrainData) -> TrainData:
        """Replicate a segment's arrays on every device of the mesh."""
        return jax.device_put(data, parallel.replicated(self.mesh))


def trainer_for(cfg: Config, n_features: int, embedding_dim: int | None = None, *,
                population: int | None = None, devices: list | None = None,
                segments: int = 1, critics: str | None = None,
                params: str | None = None) -> Trainer:
    """make_train of the config's spec (population per segment: default train.n_seeds; K
    `segments`), with the config's members (seeds 0..S-1 in each segment, its
    hyperparameters) as the trainer's defaults; `critics` and `params` as make_train's."""
    spec = TrainerSpec.from_config(cfg, n_features, embedding_dim, population, segments)
    trainer = make_train(spec, devices=devices, critics=critics, params=params)
    per_segment = members_from_config(cfg, spec.population // spec.segments)
    return dataclasses.replace(trainer, default_members=tuple(per_segment * spec.segments))


PARAMS_FORMS = ("tree", "flat")


def step_params_form(platform: str) -> str:
    """How the chunk's loops carry the TQC learner's parameters on a backend (`make_train`'s
    `params`): "tree" on the CPU (the form every CPU figure of the project was made with, kept
    so they reproduce bit for bit), "flat" elsewhere (53 fewer kernels per iteration of
    full.yaml's step at P = 32, docs/benchmarks.md; not yet timed on a GPU)."""
    return "tree" if platform == "cpu" else "flat"


def needs_obs_noise(hyper: Hyper) -> bool:
    """Whether any member of `hyper` has a non-zero `obs_noise` (so the step must draw it);
    True when the values are not known here (traced)."""
    values = hyper.obs_noise
    if isinstance(values, jax.core.Tracer):
        return True
    return bool(np.any(np.asarray(jax.device_get(values)) != 0))


def make_train(spec: TrainerSpec, *, devices: list | None = None,
               critics: str | None = None, params: str | None = None) -> Trainer:
    """Build the trainer of a spec: one compiled step for its population of members.

    The step of one member on one device (`training.member.make_member_step`: collect, learn
    and the metrics of `training.metrics`, split as Brax's SAC trainer is) is mapped over the
    members and devices as the `Placement` says: vmap over a device's members (each with its
    own `Hyper`, an argument, and with K > 1 segments its own segment's market arrays),
    shard_map over the devices, one jit. Members and segments that differ only in those
    arguments share the compilation.

    `critics` ("per-critic" / "batched"; default: the devices' own, `networks.critic_form`)
    says how the critic ensemble's layers multiply: the same parameters either way, and the
    same numbers to float rounding (`bench cost` asks for the GPU's form on a CPU host).
    `params` ("tree" / "flat"; default: `step_params_form` of the devices) says how the
    chunk's loops carry the TQC learner's parameters: as their trees, or each network's (and
    its Adam moments) as one vector, so the optimiser, the clipping and the target update are
    one kernel per network, not one per parameter leaf. The same numbers but for the global
    gradient norm's summation order (a float rounding, and only where clipping acts); the
    state in and out of a chunk (checkpoints) keeps its trees. An encoder trained inside the
    agent (pretrained-finetune, its own learning rate) keeps the tree form.
    """
    q, window, source = spec.tqc, spec.env.window, spec.source
    devices = devices if devices is not None else parallel.select_devices(spec.devices, source)
    mesh = parallel.make_mesh(devices)
    placement = Placement.of(spec, len(devices))
    critics = critic_form(devices[0].platform) if critics is None else critics
    if critics not in CRITIC_FORMS:
        raise ValueError(f"critics must be one of {CRITIC_FORMS}, got {critics!r}")
    params = step_params_form(devices[0].platform) if params is None else params
    if params not in PARAMS_FORMS:
        raise ValueError(f"params must be one of {PARAMS_FORMS}, got {params!r}")
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
    # the one place the learner is chosen (agent.kind): both give the same MemberStep
    direct_kind = spec.agent.kind == "direct"
    if direct_kind:
        d = spec.agent.direct
        tqc = None
        learner = make_direct(d, q.net_arch if d.net_arch is None else d.net_arch, obs_example,
                              layer_norm=q.layer_norm, encoder_factory=encoder_factory,
                              encoder_lr=encoder_lr, axis_name=placement.axis_name)
        step = make_direct_member_step(spec, placement, learner, env_params, uses_embeddings)
    else:
        learner = tqc = make_tqc(q, obs_example, 1, encoder_factory=encoder_factory,
                                 encoder_lr=encoder_lr, axis_name=placement.axis_name,
                                 batched_critics=critics == "batched")
        params = "tree" if encoder_lr is not None else params  # labels need the tree
        step = make_member_step(spec, placement, tqc, env_params, uses_embeddings,
                                flat_params=params == "flat")
    trace_counts = {"train_chunk": 0, "init": 0}
    n_dev, by_member = placement.n_devices, placement.by_member
    segmented = placement.segments > 1

    # Three ways to map the member step over a device's members, each keeping its path's
    # numbers as recorded: K > 1 segments gather each member's own arrays (a vmap over the
    # member axis); one member calls the step directly (a size-1 vmap turns every matmul into
    # a batched dot, and it changes floats: measured on CPU); P members of one segment share
    # the arrays (a gather per member would batch `column_scale`'s reductions, whose float
    # order on GPU was not checked).
    def members_chunk(agent, local, iteration, data, hyper, segment, noisy):
        """All members of this device: vmap over the member axis (none when P = 1)."""
        chunk = partial(step.chunk, noisy=noisy)
        if segmented:  # member m reads its segment's arrays
            def one(a, lo, h, s):
                return chunk(a, lo, iteration, take(data, s), h)

            return jax.vmap(one, out_axes=(0, 0, None, 0))(agent, local, hyper, segment)
        if placement.members_local == 1:
            squeeze = partial(jax.tree.map, lambda x: x[0])
            expand = partial(jax.tree.map, lambda x: x[None])
            agent, local, iteration_out, metrics = chunk(
                squeeze(agent), squeeze(local), iteration, data, squeeze(hyper))
            return expand(agent), expand(local), iteration_out, expand(metrics)
        return jax.vmap(chunk, in_axes=(0, 0, None, None, 0), out_axes=(0, 0, None, 0))(
            agent, local, iteration, data, hyper)

    def sharded_chunk(agent, local, iteration, data, hyper, segment, noisy):
        local = jax.tree.map(lambda x: x[0], local)  # this device's [P_local, ...] slice
        agent, local, iteration_out, metrics = members_chunk(agent, local, iteration, data,
                                                             hyper, segment, noisy)
        if not by_member:
            metrics = jax.lax.pmean(metrics, parallel.DEVICE_AXIS)
        return agent, jax.tree.map(lambda x: x[None], local), iteration_out, metrics

    rep_spec, shard_spec = parallel.REPLICATED, parallel.SHARDED
    member_spec = shard_spec if by_member else rep_spec  # agents, hyper, segment, metrics [P]
    chunk_sharded = {noisy: parallel.data_parallel(
        partial(sharded_chunk, noisy=noisy), mesh,
        in_specs=(member_spec, shard_spec, rep_spec, rep_spec, member_spec, member_spec),
        out_specs=(member_spec, shard_spec, rep_spec, member_spec)) for noisy in (False, True)}

    def train_chunk_impl(state: TrainState, data: TrainData, hyper: Hyper, segment, noisy):
        trace_counts["train_chunk"] += 1  # Python side effect: runs only when (re)traced
        agent, local, iteration, metrics = chunk_sharded[noisy](
            state.agent, state.local, state.iteration, data, hyper, segment)
        return TrainState(agent=agent, local=local, iteration=iteration), metrics

    chunk_jit = jax.jit(train_chunk_impl, donate_argnums=(0,), static_argnames=("noisy",))

    def init_impl(key, data: TrainData, hyper: Hyper, seeds, encoder_params, segment):
        trace_counts["init"] += 1
        if not segmented:  # one segment: the [K] axis of a batch's key, data and encoders
            key, data, encoder_params = jax.tree.map(lambda x: x[None],
                                                     (key, data, encoder_params))

        def one_member(seed, h, s):  # the segment's own key and (fine-tune) encoder
            return step.init_member(key[s], seed, h, None if encoder_params is None
                                    else take(encoder_params, s))

        agent, env_keys = jax.vmap(one_member)(seeds, hyper, segment)  # [P]
        if by_member:  # [D, P / D]: device d holds members d * P/D .. (d + 1) * P/D - 1,
            # with the streams a single device gives them (device index 0)
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(env_keys)
            keys = keys.reshape((n_dev, placement.members_local) + keys.shape[1:])
            segs = segment.reshape((n_dev, placement.members_local))
        else:  # [D, P]: every device holds every member's envs and replay shard
            keys = jax.vmap(lambda d: jax.vmap(lambda k: jax.random.fold_in(k, d))(env_keys))(
                jnp.arange(n_dev))
            segs = jnp.broadcast_to(segment, (n_dev, placement.population))
        local = jax.vmap(jax.vmap(lambda k, s: step.init_local(k, take(data, s))))(keys, segs)
        return TrainState(agent=agent, local=local, iteration=jnp.zeros((), jnp.int32))

    rep, shard = parallel.replicated(mesh), parallel.per_device(mesh)
    init_jit = jax.jit(init_impl, out_shardings=TrainState(
        agent=shard if by_member else rep, local=shard, iteration=rep))

    def segment_array(segment) -> jnp.ndarray:
        """The members' segment indices [P] (member m of K segments x S seeds: m // S)."""
        if segment is None:
            segment = np.arange(placement.population) // (placement.population
                                                          // placement.segments)
        segment = jnp.asarray(segment, jnp.int32)
        if segment.shape != (placement.population,):
            raise ValueError(f"segment must be [{placement.population}], got {segment.shape}")
        return segment

    def train_chunk(state: TrainState, data: TrainData, hyper: Hyper, segment=None, *,
                    noisy: bool | None = None) -> tuple[TrainState, dict[str, jnp.ndarray]]:
        """steps_per_chunk iterations of every member (metrics [P]); `segment` [P] (default
        m // S) says which of the K segments' arrays member m reads when K > 1. `noisy`
        (default: whether any member's obs_noise is not 0, `needs_obs_noise`) picks the step
        with observation noise or the one without (no random numbers for it): two
        compilations at most, the same numbers when every obs_noise is 0. False with a
        member's obs_noise not 0 is refused (it would train without the noise asked for)."""
        if noisy is None:
            noisy = needs_obs_noise(hyper)
        elif not noisy and needs_obs_noise(hyper) \
                and not isinstance(hyper.obs_noise, jax.core.Tracer):
            raise ValueError("train_chunk(noisy=False) with a member's train.obs_noise not 0: "
                             "the step without noise would ignore it (leave noisy unset)")
        return chunk_jit(state, data, hyper, segment_array(segment), noisy=bool(noisy))

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
        if direct_kind:
            check_horizon(data, spec.agent.direct.horizon)
        seeds = jnp.asarray(seeds, jnp.int32)
        if seeds.shape != (placement.population,):
            raise ValueError(f"the trainer is built for {placement.population} members, got "
                             f"seeds of shape {seeds.shape}")
        return init_jit(key, data, hyper, seeds, encoder_params, segment_array(segment))

    return Trainer(spec=spec, tqc=tqc, env_params=env_params, mesh=mesh, placement=placement,
                   uses_embeddings=uses_embeddings, init=init, train_chunk=train_chunk,
                   observe=step.observe, rebuild=step.rebuild, trace_counts=trace_counts,
                   learner=learner, critic_form=critics,
                   params_form="tree" if direct_kind else params,
                   steps_per_iteration=spec.agent.direct.horizon if direct_kind else 1,
                   chunk_iterations=chunk_updates(spec) if direct_kind else None)
