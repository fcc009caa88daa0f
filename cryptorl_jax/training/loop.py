"""The host loop (`train`): calls the trainer's compiled chunk until `train.total_env_steps`,
checks the reduced metrics for NaN/Inf, logs, checkpoints and resumes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from cryptorl_jax.config import Config
from cryptorl_jax.core.hooks import NO_HOOKS, Hooks
from cryptorl_jax.training.checkpoint import Checkpointer
from cryptorl_jax.training.data import TrainData, check_train_data, take
from cryptorl_jax.training.logging import Progress, ScalarLogger
from cryptorl_jax.training.result import TrainResult, entropy_summary
from cryptorl_jax.training.spec import Member, members_from_config, stack
from cryptorl_jax.training.trainer import Trainer, trainer_for

log = logging.getLogger("cryptorl_jax.training")


class TrainingDivergedError(RuntimeError):
    """A chunk produced a NaN/Inf metric; training stopped, the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainControls:
    """How `train` runs, not what it computes: none of these changes a number (a resumed run
    equals an uninterrupted one).

    resume: restore the last checkpoint in workdir/checkpoints and continue from it (False:
    such a checkpoint is an error); a damaged one is moved aside with a warning and the one
    before it restored, or, none left, training starts again (`Checkpointer.
    restore_latest_good`). progress: the progress bar (None: output.progress).
    tensorboard_dir: where the chunk's scalars go (None: nowhere). hooks: tests' interruptions
    (`hooks.stop_after_chunk` ends the loop early, as a kill would). desc: the bar's label.
    check_inputs: check on the host that every row training reads is finite.
    on_chunk(chunk, record): called after every chunk (after its checkpoint, if any) with a
    copy of the chunk's history record; an exception it raises (e.g. optuna.TrialPruned) ends
    training and propagates after the logger and checkpointer are closed.
    """

    resume: bool = True
    progress: bool | None = None
    tensorboard_dir: str | Path | None = None
    hooks: Hooks = NO_HOOKS
    desc: str = "train"
    check_inputs: bool = True
    on_chunk: Callable[[int, dict[str, Any]], None] | None = None


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
          members: list[Member] | None = None,
          controls: TrainControls = TrainControls()) -> TrainResult:
    """Run `train_chunk` until `train.total_env_steps`, checkpointing into `workdir`.

    `key` (default `jax.random.key(cfg.seed)`; one per segment, [K], for a batch of K
    segments), `trainer` (default `trainer_for` the data's shapes), `encoder_params` (the
    fine-tuned encoders' start) and `members` say what is trained; `controls` how the loop
    runs (`TrainControls`). With `controls.resume`, a checkpoint in `workdir/checkpoints` is
    restored and training continues from it; the final parameters equal those of an
    uninterrupted run.
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
    if controls.check_inputs:
        for k in range(k_segments):
            part = data if k_segments == 1 else take(data, k)
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
    progress = cfg.output.progress if controls.progress is None else controls.progress
    stop_after_chunk = controls.hooks.stop_after_chunk
    data = trainer.put_data(data)
    t0 = time.perf_counter()
    state = trainer.init(key, data, encoder_params, hyper=hyper, seeds=seeds)
    start_chunk = 0
    ckpt = Checkpointer(workdir / "checkpoints", keep=tc.keep_checkpoints)
    history: list[dict[str, Any]] = []
    latest = ckpt.latest_step()
    if not controls.resume and latest is not None:
        ckpt.close()
        raise FileExistsError(f"{ckpt.directory} already holds training checkpoints (step "
                              f"{latest}); resume (TrainControls(resume=True)) to continue "
                              "them, or use an empty directory (nothing was overwritten)")
    if latest is not None:  # a damaged checkpoint is set aside for the one before it
        good = ckpt.restore_latest_good(state)
        if good is None:
            latest = None
            log.warning("%s: no good training checkpoint is left; training starts again from "
                        "its first chunk", ckpt.directory)
        else:
            latest, state, meta = good
            start_chunk = int(meta["chunk"])
            history = list(meta.get("history", []))
            log.info("resumed training from %s (chunk %d)", ckpt.directory / str(latest),
                     start_chunk)
    n_chunks = trainer.n_chunks
    logger = ScalarLogger(controls.tensorboard_dir)
    bar = Progress(n_chunks * trainer.env_steps_per_chunk,
                   initial=start_chunk * trainer.env_steps_per_chunk, desc=controls.desc,
                   enabled=progress)
    compile_s = 0.0
    last_good = (f"the last good checkpoint is {ckpt.directory / str(latest)}" if latest
                 is not None else "no checkpoint was written yet")
    try:
        for chunk in range(start_chunk, n_chunks):
            if stop_after_chunk is not None and chunk >= stop_after_chunk:
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
            if controls.on_chunk is not None:
                controls.on_chunk(chunk, dict(record))
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
