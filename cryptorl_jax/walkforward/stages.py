"""The segment runner's fitted stages after the transforms: the encoder (step 2), the process-wide
trainer cache (one compilation per shape) and the agents' checkpoint I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from cryptorl_jax.config import Config
from cryptorl_jax.core.rundir import SegmentDir
from cryptorl_jax.encoder.checkpoint import load_encoder, save_encoder
from cryptorl_jax.encoder.embed import precompute_embeddings
from cryptorl_jax.encoder.factory import make_encoder
from cryptorl_jax.encoder.pretrain import pretrain, pretrain_many
from cryptorl_jax.training.logging import ScalarLogger
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.spec import TrainerSpec
from cryptorl_jax.training.trainer import Trainer, make_train
from cryptorl_jax.walkforward.data import (
    STAGE_MAE,
    STAGE_RANDOM_ENCODER,
    SegmentMatrix,
    segment_key,
)
from cryptorl_jax.walkforward.segments import Segment

# --------------------------------------------------------------------------------------------
# Encoder stage
# --------------------------------------------------------------------------------------------


@dataclass
class EncoderStage:
    embeddings: np.ndarray | None  # [T, D] for random / pretrained-frozen
    finetune_params: Any  # encoder nnx.State for pretrained-finetune
    report: dict[str, Any] = field(default_factory=dict)


def run_encoder_stage(cfg: Config, seg: Segment, sm: SegmentMatrix, workdir: Path,
                      logger: ScalarLogger, progress: bool) -> EncoderStage:
    from flax import nnx

    mode = cfg.encoder.mode
    n_features, window = sm.matrix.shape[1], cfg.env.window
    if mode == "none":
        return EncoderStage(None, None, {"mode": mode})
    if mode == "random":
        encoder = make_encoder("random", n_features, window, cfg.encoder,
                               nnx.Rngs(segment_key(cfg, seg.index, STAGE_RANDOM_ENCODER)))
        emb = precompute_embeddings(encoder, sm.matrix, window)
        return EncoderStage(emb, None, {"mode": mode})
    result = pretrain(sm.matrix, seg.train_start, seg.train_end, cfg,
                      segment_key(cfg, seg.index, STAGE_MAE), progress=progress,
                      lookback_ok=True,
                      log_fn=lambda step, vals: logger.scalars(step, vals))
    return pretrained_stage(cfg, result, sm, workdir)


def run_encoder_stages(cfg: Config, segs: list[Segment], sms: list[SegmentMatrix],
                       workdirs: list[Path], logger: ScalarLogger,
                       progress: bool) -> list[EncoderStage]:
    """`run_encoder_stage` of a batch of segments: their MAEs pre-train as one vmapped step
    (`pretrain_many`) when the mode pre-trains; otherwise one after the other."""
    if cfg.encoder.mode not in ("pretrained-frozen", "pretrained-finetune") or len(segs) == 1:
        return [run_encoder_stage(cfg, seg, sm, wd, logger, progress)
                for seg, sm, wd in zip(segs, sms, workdirs, strict=True)]
    results = pretrain_many([sm.matrix for sm in sms],
                            [(seg.train_start, seg.train_end) for seg in segs], cfg,
                            [segment_key(cfg, seg.index, STAGE_MAE) for seg in segs],
                            progress=progress, lookback_ok=True,
                            log_fns=[lambda step, vals, k=seg.index: logger.scalars(
                                step, {f"segment_{k}/{n}": v for n, v in vals.items()})
                                for seg in segs])
    return [pretrained_stage(cfg, r, sm, wd)
            for r, sm, wd in zip(results, sms, workdirs, strict=True)]


def pretrained_stage(cfg: Config, result: Any, sm: SegmentMatrix,
                     workdir: Path) -> EncoderStage:
    """A pre-trained encoder's stage: saved into workdir, its report, and the embeddings
    (frozen) or the parameters to fine-tune."""
    from flax import nnx

    mode = cfg.encoder.mode
    window = cfg.env.window
    save_encoder(SegmentDir(workdir).encoder, result)  # workdir: a segment_<k>/ or a scratch dir
    report = {"mode": mode, **result.report.to_dict(), "best_epoch": result.best_epoch,
              "epochs_run": len(result.history),
              "seconds_per_epoch": result.seconds_per_epoch,
              "ranges": {"train_first_end": result.ranges.train_first_end,
                         "val_first_end": result.ranges.val_first_end,
                         "n_train": result.ranges.n_train, "n_val": result.ranges.n_val}}
    if mode == "pretrained-frozen":
        emb = precompute_embeddings((result.encoder_graphdef, result.encoder_state),
                                    sm.matrix, window)
        return EncoderStage(emb, None, report)
    _, params, _ = nnx.split(result.encoder, nnx.Param, ...)
    return EncoderStage(None, params, report)


def load_encoder_model(cfg: Config, n_features: int, seg_dir: SegmentDir) -> Any:
    """A finished segment's encoder as saved (None for mode none): the random encoder rebuilt
    from its key, or the pre-trained (graphdef, state). Load once, apply to many matrices with
    `encoder_stage` (paper trading rebuilds the features every hour)."""
    mode = cfg.encoder.mode
    window = cfg.env.window
    if mode == "none":
        return None
    if mode == "random":
        from flax import nnx

        return make_encoder("random", n_features, window, cfg.encoder,
                            nnx.Rngs(segment_key(cfg, seg_dir.index, STAGE_RANDOM_ENCODER)))
    return load_encoder(seg_dir.encoder, n_features, window, cfg.encoder)


def encoder_stage(cfg: Config, model: Any, matrix: np.ndarray) -> EncoderStage:
    """The `EncoderStage` of a loaded encoder (`load_encoder_model`) on a feature matrix."""
    from flax import nnx

    mode = cfg.encoder.mode
    if mode == "none":
        return EncoderStage(None, None)
    if mode in ("random", "pretrained-frozen"):
        return EncoderStage(precompute_embeddings(model, matrix, cfg.env.window), None)
    _, params, _ = nnx.split(nnx.merge(*model), nnx.Param, ...)
    return EncoderStage(None, params)


def load_encoder_stage(cfg: Config, sm: SegmentMatrix, seg_dir: SegmentDir) -> EncoderStage:
    """The encoder of a finished segment (evaluate): embeddings or fine-tune params."""
    return encoder_stage(cfg, load_encoder_model(cfg, sm.matrix.shape[1], seg_dir), sm.matrix)


# --------------------------------------------------------------------------------------------
# Compiled functions, shared by every segment and run of one process
# --------------------------------------------------------------------------------------------

_TRAINERS: dict[TrainerSpec, tuple[Trainer, Callable]] = {}


def get_trainer(cfg: Config, n_features: int, embedding_dim: int | None,
                population: int | None = None, segments: int = 1) -> tuple[Trainer, Callable]:
    """make_train + make_rollout, cached on the `TrainerSpec` (the only input of make_train).

    Segments, repeated runs and tuning trials with the same spec share one compilation: the
    seed, the data, the outputs and every dynamic hyperparameter (`training.spec.HYPER_KEYS`)
    do not enter it.
    """
    spec = TrainerSpec.from_config(cfg, n_features, embedding_dim, population, segments)
    if spec not in _TRAINERS:
        trainer = make_train(spec)
        _TRAINERS.clear()  # keep one: a new shape or setting will not come back soon
        _TRAINERS[spec] = (trainer, make_rollout(trainer))
    return _TRAINERS[spec]


# --------------------------------------------------------------------------------------------
# Agent save / load
# --------------------------------------------------------------------------------------------


def save_agents(path: Path, agents: Any) -> None:
    path = path.absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, agents, force=True)


def abstract_agents(trainer: Trainer) -> Any:
    n = trainer.population
    return jax.eval_shape(lambda k: jax.vmap(trainer.learner.init)(jax.random.split(k, n)),
                          jax.random.key(0))


def load_agents(path: Path, trainer: Trainer) -> Any:
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path.absolute(), abstract_agents(trainer))


