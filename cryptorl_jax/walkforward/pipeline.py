"""The walk-forward run: per segment, fit on train rows only, train, backtest out of sample.

`run(cfg, workdir)` is what `cryptorl wfo` (scripts/wfo.py) calls. For every segment k of
`make_segments`:
  1. features: built once for the run (they are causal); with `features.ffd_d: auto` the FFD
     order is chosen on the segment's train rows and the features rebuilt with it;
  2. on the train rows only: the robust scaler, the HMM (its forward-filtered `Prob_*` columns
     are appended), the MAE pre-training, and TQC (`train.n_seeds` agents, one compilation);
  3. the deterministic OOS backtest over the test rows: each seed on its own book, the ensemble
     as the equal-weight fund of those books, at 1x, 2x and zero costs, plus the baselines
     over the same rows; the same backtest over the segment's own train rows (in-sample);
  4. everything is written to `segment_<k>/`, and a `DONE` marker last.
Then the aggregate report (backtest.report) is rebuilt from all finished segments.

Row conventions: a segment's arrays are fixed-length slices of the full feature matrix, so
every segment has the same shapes and shares one compilation. A train slice holds rows
[train_start - L, train_end) with L = max(W - 1, V) + 1 lookback rows (observation window and
realised vol); episodes start at train_start and never realise a return after train_end - 1.
The test slice holds [test_start - L, test_end); the agent acts at the closes of rows
test_start - 1 .. test_end - 2, so the OOS returns are exactly the test rows' returns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
from tqdm.auto import tqdm

from cryptorl_jax import provenance
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest import strategies
from cryptorl_jax.backtest.metrics import regime_metrics
from cryptorl_jax.config import Config, ConfigError, check_rows
from cryptorl_jax.encoder.pretrain import (
    load_encoder,
    make_encoder,
    precompute_embeddings,
    pretrain,
    save_encoder,
)
from cryptorl_jax.env.trading import MarketData, StartRange
from cryptorl_jax.features import (
    RobustScaler,
    adf_table,
    build_features,
    ffd_weights,
    select_ffd_d,
    warmup_rows,
)
from cryptorl_jax.hooks import NO_HOOKS, Hooks
from cryptorl_jax.io import write_atomic, write_json, write_parquet
from cryptorl_jax.layout import RunDir, SegmentDir
from cryptorl_jax.market import load_market
from cryptorl_jax.regimes import RegimeModel, plot_regimes, regime_frame
from cryptorl_jax.training.logging import ScalarLogger
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.spec import TrainerSpec
from cryptorl_jax.training.train import TrainData, Trainer, make_train, train
from cryptorl_jax.walkforward.segments import Segment, make_segments

log = logging.getLogger("cryptorl_jax.walkforward")

STAGE_MAE, STAGE_TRAIN, STAGE_RANDOM_ENCODER = 1, 2, 3


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def lookback_rows(cfg: Config) -> int:
    """L: rows before a slice's first decision row (observation window and realised vol)."""
    return max(cfg.env.window - 1, cfg.env.vol_window) + 1


def segment_key(cfg: Config, index: int, stage: int) -> jax.Array:
    """Deterministic keys per segment and stage from the one root seed (docs/reference.md,
    principle 5)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), index), stage)


# --------------------------------------------------------------------------------------------
# Data preparation shared by the run and by evaluate
# --------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The run's market, its causal raw features, and the segment layout."""

    market: pd.DataFrame
    features: pd.DataFrame  # raw (unscaled) causal features on market.index
    offset: int  # first row a segment's lookback may read
    segments: list[Segment]
    traded: str
    close: np.ndarray

    @classmethod
    def build(cls, cfg: Config, market: pd.DataFrame, *, layout: bool = True) -> RunData:
        """Build the causal features of `market` once; with `layout`, lay out the walk-forward
        segments (ConfigError if the data is too short for one); without it, no segments
        (evaluate and a tuning trial choose their own rows)."""
        traded = cfg.data.traded_asset
        features = build_run_features(cfg, market)
        offset = warmup_rows(features) + lookback_rows(cfg)
        segments: list[Segment] = []
        if layout:
            check_rows(cfg, len(market) - offset,
                       f"the data after its {offset}-row feature warm-up")
            segments = make_segments(len(market), cfg.wfo, offset=offset, source=cfg.source)
        close = market[f"{traded}_close"].to_numpy(dtype=np.float64)
        return cls(market=market, features=features, offset=offset, segments=segments,
                   traded=traded, close=close)

    @property
    def tradable(self) -> np.ndarray:
        """[T] bool: the traded asset's bar at t really traded (False on bars the loader filled,
        `<ASSET>_fresh` == 0), so a position can be changed at its close."""
        col = f"{self.traded}_fresh"
        if col not in self.market.columns:
            return np.ones(len(self.market), bool)
        return self.market[col].to_numpy(dtype=np.float64) > 0


def _ffd_for_warmup(cfg: Config) -> float | None:
    """The d whose FFD window is longest (fixes the warm-up for every segment's d)."""
    f = cfg.features
    if not f.ffd:
        return None
    if f.ffd_d != "auto":
        return float(f.ffd_d)
    return max(f.ffd_d_grid, key=lambda d: len(ffd_weights(d, f.ffd_threshold)))


def build_run_features(cfg: Config, market: pd.DataFrame,
                       ffd_d: float | dict[str, float] | None = None) -> pd.DataFrame:
    d = ffd_d if ffd_d is not None else _ffd_for_warmup(cfg)
    # The features' close-to-close vol (read by the HMM) is a daily-unit rolling std over
    # features.range_vol_window hours, like the range estimators: the env's leverage estimate
    # (env.vol_*) is a separate, slower quantity.
    return build_features(market, cfg.features, ffd_d=d,
                          vol_window=cfg.features.range_vol_window, vol_horizon_hours=24)


def prepare_run(cfg: Config, market: pd.DataFrame | None = None) -> RunData:
    """Load the market (unless given), build the causal features once, lay out the segments."""
    return RunData.build(cfg, load_market(cfg.data) if market is None else market)


@dataclass
class SegmentMatrix:
    """A segment's fitted transforms and its model-ready feature matrix (all rows)."""

    features: pd.DataFrame  # raw features (FFD at this segment's d)
    scaler: RobustScaler
    regime_model: RegimeModel | None
    proba: np.ndarray | None  # [T, K] forward-filtered regime probabilities
    matrix: np.ndarray  # [T, F] float32: scaled features ++ Prob_* (NaN in the warm-up)
    columns: list[str]
    ffd_d: dict[str, float]


def fit_segment_transforms(cfg: Config, run: RunData, seg: Segment) -> SegmentMatrix:
    """FFD order (if auto), scaler and HMM, each fitted on the segment's train rows only."""
    features = run.features
    ffd_d = dict(features.attrs.get("ffd_d", {}))
    if cfg.features.ffd and cfg.features.ffd_d == "auto":
        ffd_d = select_ffd_d(run.market, cfg.features, seg.train_rows)
        features = build_run_features(cfg, run.market, ffd_d)
    train_rows = features.iloc[seg.train_rows]
    scaler = RobustScaler.from_config(cfg.features).fit(train_rows)
    regime_model = None
    if cfg.regimes.enabled:
        regime_model = RegimeModel.from_config(cfg.regimes, seed=cfg.seed * 1000 + seg.index)
        regime_model.fit(train_rows)
    return _assemble(features, scaler, regime_model, ffd_d)


def _assemble(features: pd.DataFrame, scaler: RobustScaler, regime_model: RegimeModel | None,
              ffd_d: dict[str, float]) -> SegmentMatrix:
    scaled = scaler.transform(features)
    proba = None
    if regime_model is not None:
        probs = regime_frame(regime_model, features)
        proba = probs.to_numpy(dtype=np.float64)
        scaled = pd.concat([scaled, probs.astype(np.float32)], axis=1)
    return SegmentMatrix(features=features, scaler=scaler, regime_model=regime_model,
                         proba=proba, matrix=scaled.to_numpy(dtype=np.float32),
                         columns=[str(c) for c in scaled.columns], ffd_d=ffd_d)


def load_segment_transforms(cfg: Config, run: RunData, seg_dir: SegmentDir) -> SegmentMatrix:
    """The saved scaler / HMM / d of a finished segment applied to `run`'s rows."""
    meta = json.loads(seg_dir.transforms.read_text())
    ffd_d = {k: float(v) for k, v in meta["ffd_d"].items()}
    features = build_run_features(cfg, run.market, ffd_d or None)
    scaler = RobustScaler.load(seg_dir.scaler)
    regime_model = (RegimeModel.load(seg_dir.regime_model)
                    if seg_dir.regime_model.exists() else None)
    out = _assemble(features, scaler, regime_model, ffd_d)
    if out.columns != meta["columns"]:
        raise ValueError(f"{seg_dir.path}: the saved segment expects columns {meta['columns']}, "
                         f"the features now give {out.columns}")
    return out


def slice_data(cfg: Config, matrix: np.ndarray, close: np.ndarray, lo: int, hi: int,
               first_start: int, embeddings: np.ndarray | None,
               tradable: np.ndarray | None = None) -> TrainData:
    """TrainData over rows [lo, hi); episodes start at row first_start (absolute)."""
    if lo < 0:
        raise ValueError(f"slice starts at row {lo} < 0")
    market = MarketData.from_arrays(matrix[lo:hi], close[lo:hi], cfg.env,
                                    tradable=None if tradable is None else tradable[lo:hi])
    start_range = StartRange.create(first_start - lo, hi - lo - 2, hi - lo - 1)
    emb = None if embeddings is None else jax.numpy.asarray(embeddings[lo:hi])
    return TrainData(market=market, start_range=start_range, embeddings=emb)


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


def load_encoder_stage(cfg: Config, sm: SegmentMatrix, seg_dir: SegmentDir) -> EncoderStage:
    """The encoder of a finished segment (evaluate): embeddings or fine-tune params."""
    from flax import nnx

    mode = cfg.encoder.mode
    n_features, window = sm.matrix.shape[1], cfg.env.window
    if mode == "none":
        return EncoderStage(None, None)
    if mode == "random":
        encoder = make_encoder("random", n_features, window, cfg.encoder,
                               nnx.Rngs(segment_key(cfg, seg_dir.index, STAGE_RANDOM_ENCODER)))
        return EncoderStage(precompute_embeddings(encoder, sm.matrix, window), None)
    graphdef, state = load_encoder(seg_dir.encoder, n_features, window, cfg.encoder)
    if mode == "pretrained-frozen":
        return EncoderStage(precompute_embeddings((graphdef, state), sm.matrix, window), None)
    _, params, _ = nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)
    return EncoderStage(None, params)


# --------------------------------------------------------------------------------------------
# Compiled functions, shared by every segment and run of one process
# --------------------------------------------------------------------------------------------

_TRAINERS: dict[TrainerSpec, tuple[Trainer, Callable]] = {}


def get_trainer(cfg: Config, n_features: int, embedding_dim: int | None,
                population: int | None = None) -> tuple[Trainer, Callable]:
    """make_train + make_rollout, cached on the `TrainerSpec` (the only input of make_train).

    Segments, repeated runs and tuning trials with the same spec share one compilation: the
    seed, the data, the outputs and every dynamic hyperparameter (`training.spec.HYPER_KEYS`)
    do not enter it.
    """
    spec = TrainerSpec.from_config(cfg, n_features, embedding_dim, population)
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
    return jax.eval_shape(lambda k: jax.vmap(trainer.tqc.init)(jax.random.split(k, n)),
                          jax.random.key(0))


def load_agents(path: Path, trainer: Trainer) -> Any:
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path.absolute(), abstract_agents(trainer))


# --------------------------------------------------------------------------------------------
# Out-of-sample backtest of one segment
# --------------------------------------------------------------------------------------------


def run_rows(run: RunData, cfg: Config) -> oos_lib.Rows:
    """The run's arrays as the OOS backtest reads them (`backtest.oos`)."""
    return oos_lib.Rows(close=run.close, tradable=run.tradable, index=run.market.index,
                        lookback=lookback_rows(cfg))


def replay_rows(cfg: Config, close: np.ndarray, tradable: np.ndarray, test_start: int,
                test_end: int, actions: np.ndarray,
                cost_multiplier: float = 1.0) -> dict[str, np.ndarray]:
    """`backtest.oos.replay_rows` over the whole run's close and tradable arrays."""
    rows = oos_lib.Rows(close=close, tradable=tradable, index=pd.DatetimeIndex([]),
                        lookback=lookback_rows(cfg))
    return oos_lib.replay_rows(cfg.env, rows, test_start, test_end, actions, cost_multiplier)


def fit_baselines(cfg: Config, run: RunData, sm: SegmentMatrix,
                  seg: Segment) -> list[strategies.Fitted]:
    """The baselines that read the market (`backtest.strategies`), fitted on seg's train rows
    only: the same observation features the agent reads (the segment's scaled matrix)."""
    market = strategies.Market(close=run.close, tradable=run.tradable, features=sm.matrix,
                               lookback=lookback_rows(cfg))
    return strategies.fit_all(cfg.baselines, cfg.env, market, (seg.train_start, seg.train_end),
                              seed=cfg.seed * 1000 + seg.index)


def backtest_rows(cfg: Config, run: RunData, sm: SegmentMatrix, enc: EncoderStage,
                  trainer: Trainer, agents: Any, test_start: int, test_end: int,
                  rollout: Callable | None = None, baseline_seed: int = 0,
                  fitted: Sequence[strategies.Fitted] = ()) -> pd.DataFrame:
    """The backtest of rows [test_start, test_end) (`backtest.oos.backtest_frame`): each seed
    acts on its own book, rolled out here; the replay, the cost stress, the fund of the seeds'
    books, the baselines (the naive ones and `fitted`) and the benchmark there."""
    lookback = lookback_rows(cfg)
    lo = test_start - lookback
    data = trainer.put_data(slice_data(cfg, sm.matrix, run.close, lo, test_end,
                                       test_start - 1, enc.embeddings, run.tradable))
    rollout = rollout or make_rollout(trainer)
    first = lookback - 1  # slice row of test_start - 1: the first decision
    seeds = np.asarray(jax.device_get(rollout(agents, data, first, test_end - test_start, 1.0)))
    return oos_lib.backtest_frame(cfg.env, run_rows(run, cfg), test_start, test_end, seeds,
                                  strategies=fitted, baseline_seed=baseline_seed,
                                  proba=sm.proba)


series_metrics = oos_lib.series_table
strategy_metrics = oos_lib.strategy_metrics


# --------------------------------------------------------------------------------------------
# The segment runner: fit transforms -> encoder -> train -> backtest
# (the walk-forward segment below, a tuning trial in walkforward.tune)
# --------------------------------------------------------------------------------------------


@dataclass
class SegmentInputs:
    """Everything before TQC: the fitted transforms, the encoder and the training slice."""

    run: RunData
    seg: Segment
    sm: SegmentMatrix
    enc: EncoderStage
    data: TrainData
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class SegmentOutcome:
    inputs: SegmentInputs
    trainer: Trainer
    rollout: Callable
    train: Any  # training.train.TrainResult
    oos: pd.DataFrame | None  # the backtest of eval_rows (None when not asked for)
    timings: dict[str, float]
    baselines: list[strategies.Fitted] = field(default_factory=list)


def prepare_segment(cfg: Config, run: RunData, seg: Segment, workdir: Path, *,
                    out: SegmentDir | None = None, logger: ScalarLogger | None = None,
                    progress: bool = False, hooks: Hooks = NO_HOOKS) -> SegmentInputs:
    """Fit the FFD order, scaler and HMM on seg's train rows, then the encoder, and slice the
    training data. With `out`, the fitted transforms and the encoder report are written there
    (a walk-forward segment); `workdir` holds the encoder's checkpoint either way."""
    timings: dict[str, float] = {}
    hooks.stage(seg.index, "fit")
    t = time.perf_counter()
    sm = fit_segment_transforms(cfg, run, seg)
    if out is not None:
        _save_transforms(out, sm, seg)
    timings["fit_s"] = time.perf_counter() - t

    hooks.stage(seg.index, "encoder")
    t = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    own_logger = logger is None
    logger = ScalarLogger(None) if logger is None else logger
    try:
        enc = run_encoder_stage(cfg, seg, sm, workdir, logger, progress)
    finally:
        if own_logger:
            logger.close()
    if out is not None:
        write_json(out.encoder_report, enc.report)
    timings["encoder_s"] = time.perf_counter() - t
    lookback = lookback_rows(cfg)
    data = slice_data(cfg, sm.matrix, run.close, seg.train_start - lookback, seg.train_end,
                      seg.train_start, enc.embeddings, run.tradable)
    return SegmentInputs(run=run, seg=seg, sm=sm, enc=enc, data=data, timings=timings)


def _save_transforms(out: SegmentDir, sm: SegmentMatrix, seg: Segment) -> None:
    sm.scaler.save(out.scaler)
    if sm.regime_model is not None:
        sm.regime_model.save(out.regime_model)
        summary = sm.regime_model.summary()
        write_json(out.regime_stats, summary)
        log.info("segment %d: HMM log-likelihood %.1f", seg.index,
                 summary.get("log_likelihood", float("nan")))
    write_json(out.transforms, {"ffd_d": sm.ffd_d, "columns": sm.columns})


def run_segment(cfg: Config, run: RunData, seg: Segment, workdir: Path, *,
                eval_rows: tuple[int, int] | None, out: SegmentDir | None = None,
                logger: ScalarLogger | None = None, tensorboard_dir: Path | None = None,
                progress: bool = False, resume: bool = False, hooks: Hooks = NO_HOOKS,
                on_chunk: Callable[[int, dict[str, Any]], None] | None = None,
                desc: str | None = None, with_baselines: bool = False) -> SegmentOutcome:
    """prepare_segment, train TQC on seg's train rows, backtest rows [eval_rows) out of sample.

    With `with_baselines` (and cfg.baselines.enabled), the baselines that read the market are
    fitted on seg's train rows too (`fit_baselines`) and backtested beside the agents.

    The walk-forward driver passes the segment's test rows and `out` (everything is written
    there); a tuning trial passes its validation rows and a scratch `workdir`. The training key
    is `segment_key(cfg, seg.index, STAGE_TRAIN)` either way. The trainer comes from the
    process-wide cache (`get_trainer`), so every segment and trial of one shape compiles once.
    """
    inputs = prepare_segment(cfg, run, seg, workdir, out=out, logger=logger,
                             progress=progress, hooks=hooks)
    timings = dict(inputs.timings)
    fitted: list[strategies.Fitted] = []
    if with_baselines:
        hooks.stage(seg.index, "baselines")
        t = time.perf_counter()
        fitted = fit_baselines(cfg, run, inputs.sm, seg)
        if out is not None:
            write_json(out.baselines, strategies.params_record(fitted))
        timings["baselines_s"] = time.perf_counter() - t
    hooks.stage(seg.index, "train")
    t = time.perf_counter()
    emb = inputs.enc.embeddings
    trainer, rollout = get_trainer(cfg, inputs.sm.matrix.shape[1],
                                   None if emb is None else emb.shape[1])
    result = train(cfg, inputs.data, workdir / "train",
                   key=segment_key(cfg, seg.index, STAGE_TRAIN), trainer=trainer,
                   encoder_params=inputs.enc.finetune_params, resume=resume, progress=progress,
                   tensorboard_dir=tensorboard_dir, desc=desc or f"segment {seg.index} TQC",
                   hooks=hooks.for_segment(seg.index), on_chunk=on_chunk)
    if hooks.killed(seg.index):
        raise KeyboardInterrupt(f"killed in segment {seg.index} after chunk "
                                f"{hooks.kill_at[1]}")
    agents = result.state.agent
    if out is not None:
        save_agents(out.agents, jax.device_get(agents))
        write_json(out.train_history, result.history)
    timings["train_s"] = time.perf_counter() - t
    timings["train_compile_s"] = result.compile_s
    oos = None
    if eval_rows is not None:
        hooks.stage(seg.index, "backtest")
        t = time.perf_counter()
        oos = backtest_rows(cfg, run, inputs.sm, inputs.enc, trainer, agents, *eval_rows,
                            rollout, baseline_seed=cfg.seed * 1000 + seg.index, fitted=fitted)
        timings["backtest_s"] = time.perf_counter() - t
    return SegmentOutcome(inputs=inputs, trainer=trainer, rollout=rollout, train=result,
                          oos=oos, timings=timings, baselines=fitted)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    workdir: Path
    segments_run: list[int]
    segments_skipped: list[int]
    seconds: float
    report: dict[str, Any]


def run_config(cfg: Config) -> Config:
    """The config that identifies a run: which segments THIS process runs, and whether it
    shows progress bars, are left out, so processes given disjoint --segments share a run; so is
    the `study` section (adding a run to a study does not change the runs it already holds)."""
    from cryptorl_jax.config import StudyConfig

    return dataclasses.replace(cfg, wfo=dataclasses.replace(cfg.wfo, segments=None),
                               output=dataclasses.replace(cfg.output, progress=True),
                               study=StudyConfig())


def _check_run_config(cfg: Config, rd: RunDir) -> None:
    """Write config.yaml, or refuse a run directory whose finished segments came from a
    different config. A directory with no finished segment (a run that stopped on bad input,
    or was killed in its first segment) holds nothing worth keeping: its partial segments are
    removed and the new config replaces the old one."""
    identity = run_config(cfg)
    digest = identity.digest()
    held = rd.config_digest.read_text().strip() if rd.config_digest.exists() else None
    if held is not None and held != digest:
        if rd.finished_segments():
            raise ConfigError(
                "run_name", f"{rd.path} holds a run with a different config (digest {held} != "
                f"{digest}); use another run_name or --out, or delete the directory",
                cfg.source)
        log.warning("%s: no finished segment from its earlier config %s; starting over with "
                    "config %s", rd.path, held, digest)
        for stale in rd.segment_dirs():
            shutil.rmtree(stale.path)
    write_atomic(rd.config, identity.to_yaml())
    write_atomic(rd.config_digest, digest + "\n")


def run(cfg: Config, workdir: str | Path, *, resume: bool = False, report_only: bool = False,
        progress: bool | None = None, market: pd.DataFrame | None = None,
        hooks: Hooks = NO_HOOKS, executor: Any = None) -> RunResult:
    """Run (or resume) the walk-forward study in `workdir` and write the report.

    `executor` runs the pending segments: None is `LocalExecutor` (one after the other in this
    process); a `cluster.RayExecutor` runs them as Ray tasks. `hooks` (tests) interrupt the run
    as a kill would: see cryptorl_jax.hooks.
    """
    from cryptorl_jax.backtest.report import write_report

    t0 = time.perf_counter()
    workdir = Path(workdir)
    progress = cfg.output.progress if progress is None else progress
    run_data = None
    if not report_only:  # bad data or a bad --segments fails here, before the run dir exists
        run_data = prepare_run(cfg, market)
    workdir.mkdir(parents=True, exist_ok=True)
    rd = RunDir(workdir)
    _check_run_config(cfg, rd)
    info = _start_run_info(rd, report_only, getattr(executor, "name", "local"))
    ran: list[int] = []
    skipped: list[int] = []
    if run_data is not None:
        log.info("walk-forward: %d segments over %d rows (offset %d), run dir %s",
                 len(run_data.segments), len(run_data.market), run_data.offset, workdir)
        pending = []
        for seg in run_data.segments:
            out = rd.segment(seg.index)
            if resume and out.is_done():
                skipped.append(seg.index)
                log.info("segment %d: finished before, skipped (--resume)", seg.index)
                continue
            if not resume and out.path.exists():
                shutil.rmtree(out.path)
            pending.append(seg)
        ex = executor if executor is not None else LocalExecutor()
        ran = ex.run_segments(cfg, run_data, pending, rd, progress=progress, resume=resume,
                              hooks=hooks)
    report = write_report(cfg, workdir)
    _finish_run_info(rd, info, ran, skipped, time.perf_counter() - t0)
    return RunResult(workdir=workdir, segments_run=ran, segments_skipped=skipped,
                     seconds=time.perf_counter() - t0, report=report)


class LocalExecutor:
    """The segments one after the other, in this process."""

    name = "local"

    def run_segments(self, cfg: Config, run: RunData, segments: list[Segment], rd: RunDir, *,
                     progress: bool, resume: bool, hooks: Hooks) -> list[int]:
        ran = []
        bar = tqdm(segments, desc="segments", disable=not progress, leave=True)
        for seg in bar:
            bar.set_postfix(segment=seg.index)
            run_wfo_segment(cfg, run, seg, rd, progress=progress, resume=resume, hooks=hooks)
            ran.append(seg.index)
        bar.close()
        return ran


def _start_run_info(rd: RunDir, report_only: bool, executor_name: str) -> dict[str, Any]:
    """Record this invocation in run_info.json (earlier invocations are kept in `history`)."""
    history: list[dict[str, Any]] = []
    if rd.run_info.is_file():
        try:
            old = json.loads(rd.run_info.read_text())
            history = [*old.pop("history", []), old]
        except (json.JSONDecodeError, AttributeError):
            log.warning("%s: unreadable, replaced", rd.run_info)
    info = {**provenance.run_info(), "report_only": report_only, "executor": executor_name,
            "history": history}
    write_json(rd.run_info, info)
    return info


def _finish_run_info(rd: RunDir, info: dict[str, Any], ran: list[int], skipped: list[int],
                     seconds: float) -> None:
    segs = {}
    for k in ran:
        if rd.segment(k).is_done():
            t = rd.segment(k).done_meta().get("timings", {})
            segs[str(k)] = {key: t.get(key) for key in ("segment_s", "rss_mb", "peak_rss_mb")}
    write_json(rd.run_info, {**info, "finished": provenance.now(), "seconds": seconds,
                             "loadavg_end": provenance.loadavg(), "segments_run": ran,
                             "segments_skipped": skipped, "segment_memory": segs,
                             "peak_rss_mb": provenance.peak_rss_mb()})


def run_wfo_segment(cfg: Config, run: RunData, seg: Segment, rd: RunDir, *,
                    progress: bool = False, resume: bool = False,
                    hooks: Hooks = NO_HOOKS) -> dict[str, Any]:
    """One walk-forward segment, start to finish, into rd.segment(seg.index); returns the DONE
    record (written last: --resume trusts it)."""
    t_seg = time.perf_counter()
    out = rd.segment(seg.index)
    out.path.mkdir(parents=True, exist_ok=True)
    tb_dir = rd.tensorboard_segment(seg.index) if cfg.output.tensorboard else None
    logger = ScalarLogger(tb_dir)
    try:
        outcome = run_segment(cfg, run, seg, out.path, eval_rows=(seg.test_start, seg.test_end),
                              out=out, logger=logger, tensorboard_dir=tb_dir, progress=progress,
                              resume=resume, hooks=hooks, with_baselines=True)
        timings = outcome.timings
        t = time.perf_counter()
        oos = outcome.oos
        write_parquet(out.oos, oos)
        # the agents over their own train rows, through the same backtest (in-sample)
        insample = backtest_rows(cfg, run, outcome.inputs.sm, outcome.inputs.enc,
                                 outcome.trainer, outcome.train.state.agent, seg.train_start,
                                 seg.train_end, outcome.rollout,
                                 baseline_seed=cfg.seed * 1000 + seg.index,
                                 fitted=outcome.baselines)
        write_parquet(out.insample, insample)
        series_metrics(oos).to_csv(out.series_metrics)
        metrics = strategy_metrics(oos)
        in_metrics = strategy_metrics(insample)
        metrics.update({f"insample_{k}": in_metrics[k] for k in
                        ("sharpe", "total_return", "turnover", "exposure")})
        write_json(out.metrics, metrics)
        if "regime" in oos:
            regime_metrics(oos["strategy"].to_numpy(), oos["regime"].to_numpy(),
                           oos["benchmark"].to_numpy()).to_csv(out.regime_metrics)
        timings["backtest_s"] = timings.get("backtest_s", 0.0) + time.perf_counter() - t

        hooks.stage(seg.index, "report")
        sm = outcome.inputs.sm
        rows = slice(seg.train_start, seg.train_end)
        # a fixed lag (one day) instead of an AIC search (docs/benchmarks.md)
        adf_table(sm.features, rows, autolag=None, maxlag=24).to_csv(out.stationarity)
        if cfg.output.plots and sm.proba is not None:
            span = slice(seg.train_start, seg.test_end)
            plot_regimes(run.market[f"{run.traded}_close"].iloc[span], sm.proba[span],
                         rd.regimes_png(seg.index),
                         title=f"segment {seg.index}: filtered regimes (train | test at "
                               f"{run.market.index[seg.test_start]:%Y-%m-%d})",
                         test_start=seg.test_start - seg.train_start)
        timings["segment_s"] = time.perf_counter() - t_seg
        timings["rss_mb"] = provenance.rss_mb()  # at the end of the segment
        timings["peak_rss_mb"] = provenance.peak_rss_mb()  # of the process so far
        done = {"segment": seg.index, "train_rows": [seg.train_start, seg.train_end],
                "test_rows": [seg.test_start, seg.test_end],
                "train_period": [str(run.market.index[seg.train_start]),
                                 str(run.market.index[seg.train_end - 1])],
                "test_period": [str(run.market.index[seg.test_start]),
                                str(run.market.index[seg.test_end - 1])],
                "timings": timings, "sharpe": metrics["sharpe"],
                "insample_sharpe": metrics["insample_sharpe"],
                "env_steps": outcome.train.env_steps,
                # final entropy coefficient, policy entropy, target and whether it was reached
                # (training.train.entropy_summary), per member under "members" for P > 1
                "entropy": outcome.train.entropy,
                "host": platform.node(), "devices": provenance.devices()}
        write_json(out.done, done)  # written last: --resume trusts it
        log.info("segment %d done in %.0f s: OOS sharpe %.2f, total return %.2f%%", seg.index,
                 timings["segment_s"], metrics["sharpe"], 100 * metrics["total_return"])
    finally:
        logger.close()
    return done
