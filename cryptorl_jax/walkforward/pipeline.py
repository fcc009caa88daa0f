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

The segment runner `run_segment` only computes (each fitted stage a step: transforms and
encoder in `prepare_segment`, the baselines, TQC, the backtest) and returns a
`SegmentOutcome`; `write_segment` is the one function that writes a segment's fitted state,
and `run_wfo_segment` adds the walk-forward's reports and the DONE record. A tuning trial runs
the same `run_segment` on its inner split and writes nothing. The data preparation lives in
walkforward.data, the encoder stage, trainer cache and agent I/O in walkforward.stages, the
OOS backtest and the series metrics in backtest.oos.

Row conventions: a segment's arrays are fixed-length slices of the full feature matrix, so
every segment has the same shapes and shares one compilation. A train slice holds rows
[train_start - L, train_end) with L = max(W - 1, V) + 1 lookback rows (observation window and
realised vol); episodes start at train_start and never realise a return after train_end - 1.
The test slice holds [test_start - L, test_end); the agent acts at the closes of rows
test_start - 1 .. test_end - 2, so the OOS returns are exactly the test rows' returns.
"""

from __future__ import annotations

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
import pandas as pd

from cryptorl_jax import provenance
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest import strategies
from cryptorl_jax.backtest.metrics import regime_metrics
from cryptorl_jax.config import Config, ConfigError, identity
from cryptorl_jax.features import adf_table
from cryptorl_jax.hooks import NO_HOOKS, Hooks
from cryptorl_jax.io import write_atomic, write_json, write_parquet
from cryptorl_jax.layout import RunDir, SegmentDir
from cryptorl_jax.regimes import plot_regimes
from cryptorl_jax.training.logging import ScalarLogger
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.spec import stack
from cryptorl_jax.training.train import (
    TrainData,
    Trainer,
    segment_results,
    stack_segments,
    train,
)
from cryptorl_jax.walkforward.data import (  # noqa: F401 (re-exported: evaluate, tune, tests)
    STAGE_MAE,
    STAGE_RANDOM_ENCODER,
    STAGE_TRAIN,
    RunData,
    SegmentMatrix,
    build_run_features,
    fit_segment_transforms,
    load_segment_transforms,
    lookback_rows,
    prepare_run,
    segment_key,
    slice_data,
)
from cryptorl_jax.walkforward.executor import Executor, LocalExecutor  # noqa: F401
from cryptorl_jax.walkforward.segments import Segment
from cryptorl_jax.walkforward.stages import (  # noqa: F401 (re-exported: evaluate, tune, tests)
    EncoderStage,
    abstract_agents,
    get_trainer,
    load_agents,
    load_encoder_stage,
    run_encoder_stage,
    run_encoder_stages,
    save_agents,
)

log = logging.getLogger("cryptorl_jax.walkforward")


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
# The segment runner: fit transforms -> encoder -> baselines -> train -> backtest
# (the walk-forward segment below, a tuning trial in walkforward.tune). It computes and
# returns an outcome; `write_segment` is the one function that writes a segment's files.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentControls:
    """How a segment runs, not what it computes: logging, progress, resume, test hooks.

    None of these changes a number (a resumed segment equals an uninterrupted one); they are
    kept apart from the config and the rows so that the runner's signature says what it fits.
    """

    logger: ScalarLogger | None = None  # the encoder's and trainer's scalars (TensorBoard)
    tensorboard_dir: Path | None = None
    progress: bool = False
    resume: bool = False  # restore the trainer's last chunk checkpoint from workdir/train
    hooks: Hooks = NO_HOOKS
    on_chunk: Callable[[int, dict[str, Any]], None] | None = None  # tuning's pruner
    desc: str | None = None  # the progress bar's label


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
    """What `run_segment` fitted and measured; `write_segment` persists it."""

    inputs: SegmentInputs
    trainer: Trainer
    rollout: Callable
    train: Any  # training.train.TrainResult
    oos: pd.DataFrame | None  # the backtest of eval_rows (None when not asked for)
    timings: dict[str, float]
    baselines: list[strategies.Fitted] = field(default_factory=list)

    @property
    def agents(self) -> Any:
        return self.train.state.agent


def prepare_segment(cfg: Config, run: RunData, seg: Segment, workdir: Path,
                    controls: SegmentControls = SegmentControls()) -> SegmentInputs:
    """Fit the FFD order, scaler and HMM on seg's train rows (step 1), then the encoder (step
    2), and slice the training data. `workdir` holds the encoder's checkpoint."""
    timings: dict[str, float] = {}
    hooks = controls.hooks
    hooks.stage(seg.index, "fit")
    t = time.perf_counter()
    sm = fit_segment_transforms(cfg, run, seg)
    timings["fit_s"] = time.perf_counter() - t

    hooks.stage(seg.index, "encoder")
    t = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    logger = ScalarLogger(None) if controls.logger is None else controls.logger
    try:
        enc = run_encoder_stage(cfg, seg, sm, workdir, logger, controls.progress)
    finally:
        if controls.logger is None:
            logger.close()
    timings["encoder_s"] = time.perf_counter() - t
    lookback = lookback_rows(cfg)
    data = slice_data(cfg, sm.matrix, run.close, seg.train_start - lookback, seg.train_end,
                      seg.train_start, enc.embeddings, run.tradable)
    return SegmentInputs(run=run, seg=seg, sm=sm, enc=enc, data=data, timings=timings)


def prepare_segments(cfg: Config, run: RunData, segs: Sequence[Segment],
                     workdirs: Sequence[Path],
                     controls: SegmentControls = SegmentControls()) -> list[SegmentInputs]:
    """`prepare_segment` of a batch: every segment's transforms on its own train rows, then
    their encoders (the MAEs pre-trained as one vmapped step, `stages.run_encoder_stages`),
    then the training slices. K = 1 is `prepare_segment`."""
    if len(segs) == 1:
        return [prepare_segment(cfg, run, segs[0], workdirs[0], controls)]
    hooks = controls.hooks
    sms, timings = [], []
    for seg in segs:
        hooks.stage(seg.index, "fit")
        t = time.perf_counter()
        sms.append(fit_segment_transforms(cfg, run, seg))
        timings.append({"fit_s": time.perf_counter() - t})
    for seg, workdir in zip(segs, workdirs, strict=True):
        hooks.stage(seg.index, "encoder")
        workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    logger = ScalarLogger(None) if controls.logger is None else controls.logger
    try:
        encs = run_encoder_stages(cfg, list(segs), sms, list(workdirs), logger,
                                  controls.progress)
    finally:
        if controls.logger is None:
            logger.close()
    encoder_s = time.perf_counter() - t  # the batch's, shared by its segments
    lookback = lookback_rows(cfg)
    return [SegmentInputs(run=run, seg=seg, sm=sm, enc=enc,
                          data=slice_data(cfg, sm.matrix, run.close, seg.train_start - lookback,
                                          seg.train_end, seg.train_start, enc.embeddings,
                                          run.tradable),
                          timings={**tm, "encoder_s": encoder_s})
            for seg, sm, enc, tm in zip(segs, sms, encs, timings, strict=True)]


def run_segment(cfg: Config, run: RunData, seg: Segment, workdir: Path, *,
                eval_rows: tuple[int, int] | None,
                controls: SegmentControls = SegmentControls(),
                with_baselines: bool = False) -> SegmentOutcome:
    """The segment's steps on its train rows, then the backtest of rows [eval_rows):

    1-2. `prepare_segment`: the transforms and the encoder;
    3. with `with_baselines` (and cfg.baselines.enabled) the baselines that read the market
       (`fit_baselines`);
    4. TQC (`train`), keyed by `segment_key(cfg, seg.index, STAGE_TRAIN)`;
    5. the OOS backtest of eval_rows (`backtest_rows`), agents and baselines on the same hours.

    Writes nothing but its scratch state under `workdir` (the encoder and trainer checkpoints
    that --resume restores); `write_segment` writes a walk-forward segment's files. The trainer
    comes from the process-wide cache (`get_trainer`), so every segment and trial of one shape
    compiles once. `run_segments` is the same for a batch of segments trained together.
    """
    return run_segments(cfg, run, [seg], [workdir], workdir, eval_rows=[eval_rows],
                        controls=controls, with_baselines=with_baselines)[0]


def run_segments(cfg: Config, run: RunData, segs: Sequence[Segment], workdirs: Sequence[Path],
                 batch_dir: Path, *, eval_rows: Sequence[tuple[int, int] | None],
                 controls: SegmentControls = SegmentControls(),
                 with_baselines: bool = False) -> list[SegmentOutcome]:
    """`run_segment` for K segments whose TQC agents train as the members of ONE compiled step
    (K segments x train.n_seeds seeds; each member reads its own segment's market arrays,
    `training.train.Layout`). Steps 1-3 and 5 run per segment as in `run_segment`; step 4 is
    one `train` call whose checkpoints live in `batch_dir / "train"` (a segment's own workdir
    when K = 1, so K = 1 is exactly `run_segment`). A segment inside a batch trains as it
    would alone up to float rounding (tests/training/test_segments_as_members.py)."""
    hooks = controls.hooks
    k = len(segs)
    inputs, fitted, timings = [], [], []
    for seg, inp in zip(segs, prepare_segments(cfg, run, segs, workdirs, controls),
                        strict=True):
        t_seg = dict(inp.timings)
        baselines: list[strategies.Fitted] = []
        if with_baselines:
            hooks.stage(seg.index, "baselines")
            t = time.perf_counter()
            baselines = fit_baselines(cfg, run, inp.sm, seg)
            t_seg["baselines_s"] = time.perf_counter() - t
        inputs.append(inp)
        fitted.append(baselines)
        timings.append(t_seg)
    for seg in segs:
        hooks.stage(seg.index, "train")
    t = time.perf_counter()
    emb = inputs[0].enc.embeddings
    trainer, rollout = get_trainer(cfg, inputs[0].sm.matrix.shape[1],
                                   None if emb is None else emb.shape[1], segments=k)
    if k == 1:
        data, key = inputs[0].data, segment_key(cfg, segs[0].index, STAGE_TRAIN)
        encoder_params = inputs[0].enc.finetune_params
    else:
        data = stack_segments([inp.data for inp in inputs])
        key = stack([segment_key(cfg, seg.index, STAGE_TRAIN) for seg in segs])
        encoder_params = (None if inputs[0].enc.finetune_params is None
                          else stack([inp.enc.finetune_params for inp in inputs]))
    killed = [seg.index for seg in segs if hooks.killed(seg.index)]
    label = (f"segment {segs[0].index}" if k == 1
             else f"segments {segs[0].index}-{segs[-1].index}")
    result = train(cfg, data, batch_dir / "train", key=key, trainer=trainer,
                   encoder_params=encoder_params, resume=controls.resume,
                   progress=controls.progress, tensorboard_dir=controls.tensorboard_dir,
                   desc=controls.desc or f"{label} TQC",
                   hooks=hooks.for_segment(killed[0]) if killed else hooks,
                   on_chunk=controls.on_chunk)
    if killed:
        raise KeyboardInterrupt(f"killed in segment {killed[0]} after chunk "
                                f"{hooks.kill_at[1]}")
    train_s = time.perf_counter() - t
    outcomes = []
    for seg, inp, part, baselines, t_seg, rows in zip(
            segs, inputs, segment_results(result, k), fitted, timings, eval_rows, strict=True):
        t_seg["train_s"] = train_s  # a batch's wall time is shared by its segments
        t_seg["train_compile_s"] = part.compile_s
        if k > 1:
            t_seg["train_batch"] = k
        oos = None
        if rows is not None:
            hooks.stage(seg.index, "backtest")
            t = time.perf_counter()
            oos = backtest_rows(cfg, run, inp.sm, inp.enc, trainer, part.state.agent, *rows,
                                rollout, baseline_seed=cfg.seed * 1000 + seg.index,
                                fitted=baselines)
            t_seg["backtest_s"] = time.perf_counter() - t
        outcomes.append(SegmentOutcome(inputs=inp, trainer=trainer, rollout=rollout, train=part,
                                       oos=oos, timings=t_seg, baselines=baselines))
    return outcomes


def write_segment(out: SegmentDir, outcome: SegmentOutcome) -> None:
    """A segment's fitted state, as `load_segment_transforms`, `load_encoder_stage`,
    `load_agents` and the report read it back: the transforms (scaler, HMM, FFD order and
    columns), the encoder report (the encoder checkpoint is already there: it is the runner's
    workdir), the baselines' fitted parameters, the agents and their training history."""
    sm, seg = outcome.inputs.sm, outcome.inputs.seg
    sm.scaler.save(out.scaler)
    if sm.regime_model is not None:
        sm.regime_model.save(out.regime_model)
        summary = sm.regime_model.summary()
        write_json(out.regime_stats, summary)
        log.info("segment %d: HMM log-likelihood %.1f", seg.index,
                 summary.get("log_likelihood", float("nan")))
    write_json(out.transforms, {"ffd_d": sm.ffd_d, "columns": sm.columns})
    write_json(out.encoder_report, outcome.inputs.enc.report)
    write_json(out.baselines, strategies.params_record(outcome.baselines))
    save_agents(out.agents, jax.device_get(outcome.agents))
    write_json(out.train_history, outcome.train.history)


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
    """The config that identifies a run (`config.identity`): which segments THIS process runs,
    whether it shows progress bars and the `study` section are left out."""
    return identity(cfg)


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
        for stale in [*(d.path for d in rd.segment_dirs()), *rd.batch_dirs()]:
            shutil.rmtree(stale)
    write_atomic(rd.config, identity.to_yaml())
    write_atomic(rd.config_digest, digest + "\n")


def run(cfg: Config, workdir: str | Path, *, resume: bool = False, report_only: bool = False,
        progress: bool | None = None, market: pd.DataFrame | None = None,
        hooks: Hooks = NO_HOOKS, executor: Executor | None = None) -> RunResult:
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
        if not resume:  # the batches' training checkpoints belong to the run started over
            for stale in rd.batch_dirs():
                shutil.rmtree(stale)
        ex = executor if executor is not None else LocalExecutor()
        ran = ex.run_segments(cfg, run_data, pending, rd, progress=progress, resume=resume,
                              hooks=hooks)
    report = write_report(cfg, workdir)
    _finish_run_info(rd, info, ran, skipped, time.perf_counter() - t0)
    return RunResult(workdir=workdir, segments_run=ran, segments_skipped=skipped,
                     seconds=time.perf_counter() - t0, report=report)


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
    return run_wfo_batch(cfg, run, [seg], rd, progress=progress, resume=resume, hooks=hooks)[0]


def run_wfo_batch(cfg: Config, run: RunData, segs: Sequence[Segment], rd: RunDir, *,
                  progress: bool = False, resume: bool = False,
                  hooks: Hooks = NO_HOOKS) -> list[dict[str, Any]]:
    """K walk-forward segments whose agents train in one compiled step (`run_segments`), each
    written into its own segment directory with its own DONE record, in order. A segment of
    the batch already DONE (a resumed batch) is trained again with the others but not
    rewritten. The batch's training checkpoints live in rd.batch(first, last) (K > 1)."""
    t_seg = time.perf_counter()
    k = len(segs)
    for seg in segs:
        rd.segment(seg.index).path.mkdir(parents=True, exist_ok=True)
    batch_dir = rd.segment(segs[0].index).path if k == 1 else rd.batch(segs[0].index,
                                                                          segs[-1].index)
    tb_dir = None
    if cfg.output.tensorboard:
        tb_dir = (rd.tensorboard_segment(segs[0].index) if k == 1
                  else rd.tensorboard / batch_dir.name)
    logger = ScalarLogger(tb_dir)
    dones = []
    try:
        controls = SegmentControls(logger=logger, tensorboard_dir=tb_dir, progress=progress,
                                   resume=resume, hooks=hooks)
        outcomes = run_segments(cfg, run, segs, [rd.segment(s.index).path for s in segs],
                                batch_dir, eval_rows=[(s.test_start, s.test_end) for s in segs],
                                controls=controls, with_baselines=True)
        for seg, outcome in zip(segs, outcomes, strict=True):
            if k > 1 and rd.segment(seg.index).is_done():
                log.info("segment %d: finished before; its batch was trained again for the "
                         "others, its files are kept", seg.index)
                continue
            dones.append(finish_wfo_segment(cfg, run, seg, rd, outcome, hooks, t_seg))
    finally:
        logger.close()
    return dones


def finish_wfo_segment(cfg: Config, run: RunData, seg: Segment, rd: RunDir,
                       outcome: SegmentOutcome, hooks: Hooks, t_seg: float) -> dict[str, Any]:
    """A trained segment's walk-forward outputs: the in-sample backtest, its files, its
    reports and the DONE record (written last)."""
    out = rd.segment(seg.index)
    timings = outcome.timings
    t = time.perf_counter()
    oos = outcome.oos
    # the agents over their own train rows, through the same backtest (in-sample)
    insample = backtest_rows(cfg, run, outcome.inputs.sm, outcome.inputs.enc,
                             outcome.trainer, outcome.agents, seg.train_start,
                             seg.train_end, outcome.rollout,
                             baseline_seed=cfg.seed * 1000 + seg.index,
                             fitted=outcome.baselines)
    write_segment(out, outcome)
    write_parquet(out.oos, oos)
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
    return done
