"""The one compiled training step and its host loop (DESIGN.md principles 2, 3, 5 and 6).

`make_train(cfg, n_features, embedding_dim)` returns a `Trainer` whose `train_chunk(state, data)`
is ONE jitted function: a `lax.scan` over `train.steps_per_chunk` iterations of
  policy acts for all envs (vmap) -> env step (vmap) -> compact transitions into the replay
  buffer -> G TQC updates on batches rebuilt by gather from the market arrays, with rewards
  composed from the *current* curriculum coefficients,
run data-parallel over the local devices (`training.parallel`) and vmapped over `n_seeds`
independent agents. The market arrays are an argument (`TrainData`), so every walk-forward
segment of the same shape reuses the compilation. `train(...)` is the host loop: it calls
`train_chunk`, checks the reduced metrics for NaN/Inf, logs, checkpoints and resumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

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
from cryptorl_jax.training import parallel
from cryptorl_jax.training.checkpoint import Checkpointer
from cryptorl_jax.training.curriculum import penalty_coefficients
from cryptorl_jax.training.logging import Progress, ScalarLogger

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


ENV_METRICS = ("reward", "pnl", "cost", "financing", "churn_penalty", "smooth_penalty", "turnover",
               "exposure", "episodes", "ruined", "episode_nav", "nav")
AGENT_METRICS = ("critic_loss", "actor_loss", "alpha_loss", "q_mean", "entropy")


@dataclass(frozen=True, eq=False)
class Trainer:
    """Static pieces of a run: the learner, the mesh, and the compiled functions."""

    cfg: Config
    tqc: TQC
    env_params: EnvParams
    mesh: Any
    n_devices: int
    n_envs_local: int
    batch_local: int
    capacity_local: int
    uses_embeddings: bool
    init: Any  # (key, data, encoder_params=None) -> TrainState
    train_chunk: Any  # (state, data) -> (state, metrics)
    observe: Any  # (data, t, agent_vector) -> Observation (unbatched)
    rebuild: Any  # (data, compact transitions [B], coeffs) -> Batch: what the learner trains on
    trace_counts: dict = field(default_factory=dict)

    @property
    def env_steps_per_chunk(self) -> int:
        return self.cfg.train.steps_per_chunk * self.cfg.train.n_envs

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.cfg.train.total_env_steps / self.env_steps_per_chunk)

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


def make_train(cfg: Config, n_features: int, embedding_dim: int | None = None, *,
               devices: list | None = None) -> Trainer:
    """Build the trainer for `n_features` feature columns (and `embedding_dim` for frozen modes)."""
    tc, q, e = cfg.train, cfg.tqc, cfg.encoder
    window = cfg.env.window
    devices = devices if devices is not None else parallel.select_devices(tc, cfg.source)
    mesh = parallel.make_mesh(devices)
    n_dev = len(devices)
    n_local = _check_divisible(tc.n_envs, n_dev, "train.n_envs", cfg.source)
    batch_local = _check_divisible(q.batch_size, n_dev, "tqc.batch_size", cfg.source)
    capacity_local = q.buffer_size // n_dev
    uses_embeddings = e.mode in EMBEDDING_MODES
    if uses_embeddings and embedding_dim is None:
        raise ValueError(f"encoder.mode '{e.mode}' trains on precomputed embeddings: "
                         "make_train needs embedding_dim")
    env_params = EnvParams.from_config(cfg.env)
    first = jnp.zeros((embedding_dim,) if uses_embeddings else (window, n_features), jnp.float32)
    obs_example = Observation(window=first, agent=jnp.zeros(3, jnp.float32))
    encoder_factory = None
    encoder_lr = None
    if e.mode == "pretrained-finetune":
        def encoder_factory(rngs):
            return MAEEncoder(n_features, window, e, rngs=rngs)

        encoder_lr = e.finetune_learning_rate
    # one device: the same shard_map path, without the (identity) gradient collectives
    axis_name = parallel.DEVICE_AXIS if n_dev > 1 else None
    tqc = make_tqc(q, obs_example, 1, encoder_factory=encoder_factory, encoder_lr=encoder_lr,
                   axis_name=axis_name)
    total_steps = float(tc.total_env_steps)
    n_updates = q.gradient_steps
    trace_counts = {"train_chunk": 0, "init": 0}

    def observe(data: TrainData, t: jnp.ndarray, agent_vector: jnp.ndarray) -> Observation:
        if uses_embeddings:
            return Observation(window=data.embeddings[t], agent=agent_vector)
        return trading.observe(env_params, data.market, t, agent_vector)

    batched_observe = jax.vmap(observe, in_axes=(None, 0, 0))

    def rebuild(data: TrainData, cts: trading.CompactTransition, coeffs) -> Batch:
        """Observations and rewards of sampled compact transitions, by gather."""
        rt = jax.vmap(trading.replay, in_axes=(None, None, 0, None))(
            env_params, data.market, cts, coeffs)
        return Batch(obs=batched_observe(data, rt.t, rt.agent_state),
                     action=cts.action[:, None],  # [B, 1]
                     reward=rt.reward,
                     next_obs=batched_observe(data, rt.t_next, rt.agent_state_next),
                     terminated=rt.terminated)

    def local_chunk(agent: TQCState, local: LocalState, iteration, data: TrainData):
        """steps_per_chunk iterations for one seed on one device."""

        def body(carry, _):
            agent, local, iteration, sums = carry
            key, k_random, k_policy, k_env, k_update = jax.random.split(local.key, 5)
            env_steps = iteration * tc.n_envs
            churn, smooth = penalty_coefficients(env_steps.astype(jnp.float32) / total_steps,
                                                 tc.curriculum)
            coeffs = trading.Coeffs(churn=churn, smooth=smooth)
            env = local.env
            agent_vec = trading.book_agent_state(env.book)  # [n, 3]
            obs = batched_observe(data, env.t, agent_vec)
            learning = env_steps >= q.learning_starts
            actions = jax.lax.cond(
                learning,
                lambda: tqc.act(agent, obs, k_policy),
                lambda: jax.random.uniform(k_random, (n_local, 1), jnp.float32, -1.0, 1.0))
            _, env_next, reward, terminated, truncated, info = jax.vmap(
                trading.step, in_axes=(0, 0, 0, None, None, None))(
                jax.random.split(k_env, n_local), env, actions, env_params, data.market, coeffs)
            buffer = replay.add(local.buffer, jax.vmap(trading.compact)(
                env, actions, terminated, truncated))

            def sample_fn(k):
                return rebuild(data, replay.sample(buffer, k, batch_local), coeffs)

            def do_updates(a):
                return tqc.update_many(a, sample_fn, k_update, n_updates)

            metric_shapes = jax.eval_shape(do_updates, agent)[1]

            def no_updates(a):
                return a, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

            agent, upd = jax.lax.cond(learning, do_updates, no_updates, agent)
            done = terminated | truncated
            step_sums = {
                "reward": jnp.mean(reward), "pnl": jnp.mean(info["pnl"]),
                "cost": jnp.mean(info["cost"]), "financing": jnp.mean(info["financing"]),
                "churn_penalty": jnp.mean(info["churn"]),
                "smooth_penalty": jnp.mean(info["smooth"]),
                "turnover": jnp.mean(info["turnover"]),
                "exposure": jnp.mean(jnp.abs(info["exposure"])),
                "episodes": jnp.sum(done).astype(jnp.float32),
                "ruined": jnp.sum(terminated).astype(jnp.float32),
                "episode_nav_sum": jnp.sum(jnp.where(done, info["nav"], 0.0)),
                "learning": learning.astype(jnp.float32),
            }
            for name in AGENT_METRICS:
                step_sums[name] = upd[name] * learning
            sums = jax.tree.map(jnp.add, sums, step_sums)
            local = LocalState(env=env_next, buffer=buffer, key=key)
            return (agent, local, iteration + 1, sums), None

        zero = jnp.zeros((), jnp.float32)
        sums0 = {k: zero for k in ("reward", "pnl", "cost", "financing", "churn_penalty",
                                   "smooth_penalty", "turnover", "exposure", "episodes", "ruined",
                                   "episode_nav_sum", "learning", *AGENT_METRICS)}
        (agent, local, iteration, sums), _ = jax.lax.scan(
            body, (agent, local, iteration, sums0), None, length=tc.steps_per_chunk)
        n = float(tc.steps_per_chunk)
        n_learn = jnp.maximum(sums["learning"], 1.0)
        env = local.env
        running_nav = jnp.mean(env.nav)
        metrics = {k: sums[k] / n for k in ("reward", "pnl", "cost", "financing", "churn_penalty",
                                           "smooth_penalty", "turnover", "exposure")}
        metrics["episodes"] = sums["episodes"]
        metrics["ruined"] = sums["ruined"]
        # mean final NAV of the episodes that ended in this chunk (the running NAV if none did)
        metrics["episode_nav"] = jnp.where(sums["episodes"] > 0,
                                           sums["episode_nav_sum"]
                                           / jnp.maximum(sums["episodes"], 1.0), running_nav)
        metrics["nav"] = running_nav
        for name in AGENT_METRICS:
            metrics[name] = sums[name] / n_learn
        metrics["alpha"] = jnp.exp(agent.log_alpha)
        env_steps = iteration * tc.n_envs
        churn, smooth = penalty_coefficients(env_steps.astype(jnp.float32) / total_steps,
                                             tc.curriculum)
        metrics["churn_coef"] = churn
        metrics["smooth_coef"] = smooth
        metrics["updates"] = sums["learning"] * n_updates
        return agent, local, iteration, metrics

    def seeds_chunk(agent, local, iteration, data):
        """All seeds of this device: vmap over the seed axis (none to map when S = 1)."""
        if tc.n_seeds == 1:  # a size-1 vmap turns every matmul into a batched dot: avoid it
            squeeze = partial(jax.tree.map, lambda x: x[0])
            expand = partial(jax.tree.map, lambda x: x[None])
            agent, local, iteration_out, metrics = local_chunk(squeeze(agent), squeeze(local),
                                                               iteration, data)
            return expand(agent), expand(local), iteration_out, expand(metrics)
        return jax.vmap(local_chunk, in_axes=(0, 0, None, None), out_axes=(0, 0, None, 0))(
            agent, local, iteration, data)

    def sharded_chunk(agent, local, iteration, data):
        local = jax.tree.map(lambda x: x[0], local)  # this device's [S, ...] slice
        agent, local, iteration_out, metrics = seeds_chunk(agent, local, iteration, data)
        metrics = jax.lax.pmean(metrics, parallel.DEVICE_AXIS)
        return agent, jax.tree.map(lambda x: x[None], local), iteration_out, metrics

    chunk_sharded = parallel.data_parallel(
        sharded_chunk, mesh,
        in_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.REPLICATED,
                  parallel.REPLICATED),
        out_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.REPLICATED,
                   parallel.REPLICATED))

    def train_chunk_impl(state: TrainState, data: TrainData):
        trace_counts["train_chunk"] += 1  # Python side effect: runs only when (re)traced
        agent, local, iteration, metrics = chunk_sharded(state.agent, state.local,
                                                         state.iteration, data)
        return TrainState(agent=agent, local=local, iteration=iteration), metrics

    train_chunk = jax.jit(train_chunk_impl, donate_argnums=(0,))

    example_ct = trading.CompactTransition.example()

    def init_impl(key, data: TrainData, encoder_params):
        trace_counts["init"] += 1
        k_agent, k_env = jax.random.split(key)
        agent = jax.vmap(tqc.init)(jax.random.split(k_agent, tc.n_seeds))
        if encoder_params is not None:
            def load(a):
                return a.replace(
                    actor_params=_replace_encoder(a.actor_params, encoder_params),
                    critic_params=_replace_encoder(a.critic_params, encoder_params),
                    target_critic_params=_replace_encoder(a.target_critic_params,
                                                          encoder_params))
            agent = jax.vmap(load)(agent)

        def one_local(k):
            k_reset, k_local = jax.random.split(k)
            _, env = jax.vmap(trading.reset, in_axes=(0, None, None, None))(
                jax.random.split(k_reset, n_local), env_params, data.market, data.start_range)
            return LocalState(env=env, buffer=replay.init(example_ct, capacity_local),
                              key=k_local)

        keys = jax.random.split(k_env, n_dev * tc.n_seeds).reshape(n_dev, tc.n_seeds)
        local = jax.vmap(jax.vmap(one_local))(keys)  # [D, S, ...]
        return TrainState(agent=agent, local=local, iteration=jnp.zeros((), jnp.int32))

    rep, shard = parallel.replicated(mesh), parallel.per_device(mesh)
    init_jit = jax.jit(init_impl, out_shardings=TrainState(agent=rep, local=shard,
                                                           iteration=rep))

    def init(key, data: TrainData, encoder_params: nnx.State | None = None) -> TrainState:
        """Fresh learners, envs and empty buffers; `encoder_params` seed fine-tuned encoders."""
        if (encoder_params is None) == (e.mode == "pretrained-finetune"):
            raise ValueError("encoder_params must be given exactly when encoder.mode is "
                             f"pretrained-finetune (mode: {e.mode})")
        return init_jit(key, data, encoder_params)

    return Trainer(cfg=cfg, tqc=tqc, env_params=env_params, mesh=mesh, n_devices=n_dev,
                   n_envs_local=n_local, batch_local=batch_local, capacity_local=capacity_local,
                   uses_embeddings=uses_embeddings, init=init, train_chunk=train_chunk,
                   observe=observe, rebuild=rebuild, trace_counts=trace_counts)


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
          = None, stop_after_chunk: int | None = None, desc: str = "train",
          check_inputs: bool = True,
          on_chunk: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Run `train_chunk` until `train.total_env_steps`, checkpointing into `workdir`.

    With `resume`, a checkpoint in `workdir/checkpoints` is restored and training continues from
    it; the final parameters equal those of an uninterrupted run. `stop_after_chunk` ends the
    loop early (after that many chunks in all), as a kill would; used by tests.
    `on_chunk(chunk, record)` is called after every chunk (after its checkpoint, if any) with a
    copy of the chunk's history record; an exception it raises (e.g. optuna.TrialPruned) ends
    training and propagates after the logger and checkpointer are closed.
    """
    workdir = Path(workdir)
    tc = cfg.train
    if trainer is None:
        emb_dim = None if data.embeddings is None else int(data.embeddings.shape[1])
        trainer = make_train(cfg, int(data.market.features.shape[1]), emb_dim)
    if check_inputs:
        check_train_data(data, cfg.env.window, cfg.env.vol_window)
    if key is None:
        key = jax.random.key(cfg.seed)
    progress = cfg.output.progress if progress is None else progress
    data = trainer.put_data(data)
    t0 = time.perf_counter()
    state = trainer.init(key, data, encoder_params)
    start_chunk = 0
    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints)
    history: list[dict[str, Any]] = []
    latest = ckpt.latest_step() if resume else None
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
            if stop_after_chunk is not None and chunk >= stop_after_chunk:
                break
            tc0 = time.perf_counter()
            state, metrics = trainer.train_chunk(state, data)
            metrics = jax.device_get(metrics)
            if chunk == start_chunk:
                compile_s = time.perf_counter() - tc0  # includes the first chunk's run
            _finite_or_raise(metrics, chunk, last_good)
            env_steps = (chunk + 1) * trainer.env_steps_per_chunk
            record = {k: float(np.mean(v)) for k, v in metrics.items()}
            record.update({"chunk": chunk, "env_steps": env_steps})
            history.append(record)
            rates = bar.update(env_steps, int(record["updates"]),
                               {"reward": record["reward"], "nav": record["episode_nav"]})
            logger.scalars(env_steps, {**record, **rates}, prefix="train/")
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
    return TrainResult(state=state, history=history,
                       env_steps=done_chunks * trainer.env_steps_per_chunk,
                       wall_s=time.perf_counter() - t0, compile_s=compile_s)
