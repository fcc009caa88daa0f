"""The segment runner: compute K walk-forward segments and return their outcomes.

`run_segments(cfg, run, segs, workdirs, ...)` is the one computation of a segment, for the
walk-forward run (walkforward.driver) and for a tuning trial (tuning.split) alike. For each
segment it
  1. fits the FFD order, the robust scaler and the HMM on the segment's train rows only
     (`data.fit_segment_transforms`);
  2. fits the encoder (`stages.run_encoder_stages`: the K segments' MAEs pre-train as one
     vmapped step);
  3. fits the baselines that read the market (`segment_baselines`): the report's when asked,
     and those the agent reads as inputs (`agent.baseline_inputs`, `baseline_signals`);
  4. trains TQC: the K segments' agents are the members of ONE compiled step (`train`);
  5. backtests the agents out of sample over the given rows (`backtest_rows`), and optionally
     over their own train rows (in-sample).
It returns one `SegmentOutcome` per segment and writes nothing but its scratch checkpoints
(the encoder's and the trainer's, which --resume restores). Writing a walk-forward segment's
files from its outcome is walkforward.writer's job. `run_segment` is the K = 1 call.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest import strategies
from cryptorl_jax.config import Config
from cryptorl_jax.core.hooks import NO_HOOKS, Hooks
from cryptorl_jax.core.rundir import SegmentDir
from cryptorl_jax.training.data import TrainData, stack_segments
from cryptorl_jax.training.logging import ScalarLogger
from cryptorl_jax.training.loop import TrainControls, train
from cryptorl_jax.training.result import segment_results
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.spec import stack
from cryptorl_jax.training.trainer import Trainer
from cryptorl_jax.walkforward.data import (
    STAGE_TRAIN,
    RunData,
    SegmentMatrix,
    demean_train_returns,
    fit_segment_transforms,
    segment_key,
    slice_data,
)
from cryptorl_jax.walkforward.layout import lookback_rows
from cryptorl_jax.walkforward.segments import Segment
from cryptorl_jax.walkforward.stages import EncoderStage, get_trainer, run_encoder_stages

# --------------------------------------------------------------------------------------------
# Out-of-sample backtest of some rows
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


def baseline_market(cfg: Config, run: RunData, sm: SegmentMatrix,
                    seg: Segment) -> strategies.Market:
    """What the baselines of seg read: the same observation features as the agent (the
    segment's scaled matrix), and for the forecasters' inner split the matrix with its
    transforms refitted on the inner train rows only (`strategies.Market.refit`)."""
    def refit(lo: int, hi: int) -> np.ndarray:
        inner = dataclasses.replace(seg, train_start=lo, train_end=hi)
        return fit_segment_transforms(cfg, run, inner).matrix

    return strategies.Market(close=run.close, tradable=run.tradable, features=sm.matrix,
                             lookback=lookback_rows(cfg), refit=refit)


def fit_baselines(cfg: Config, run: RunData, sm: SegmentMatrix, seg: Segment,
                  only: tuple[str, ...] | None = None) -> list[strategies.Fitted]:
    """The baselines that read the market (`backtest.strategies`), fitted on seg's train rows
    only (`baseline_market`); `only`: just these names."""
    return strategies.fit_all(cfg.baselines, cfg.env, baseline_market(cfg, run, sm, seg),
                              (seg.train_start, seg.train_end), seed=cfg.seed * 1000 + seg.index,
                              only=only, oof="ridge_oof" in cfg.agent.baseline_inputs)


def _fitted_name(name: str) -> str:
    """The fitted baseline behind an agent input (`ridge_oof` is the ridge's out-of-fold
    action, `strategies.Fitted.oof`)."""
    return "ridge" if name == "ridge_oof" else name


def segment_baselines(cfg: Config, run: RunData, sm: SegmentMatrix, seg: Segment,
                      with_baselines: bool) -> list[strategies.Fitted]:
    """The baselines a segment fits: every enabled one when `with_baselines` (the report's),
    plus any of `agent.baseline_inputs` not among them (the agent reads them), each once."""
    fitted = fit_baselines(cfg, run, sm, seg) if with_baselines else []
    missing = tuple(dict.fromkeys(_fitted_name(n) for n in cfg.agent.baseline_inputs
                                  if _fitted_name(n) not in {f.name for f in fitted}))
    if missing:
        fitted += fit_baselines(cfg, run, sm, seg, only=missing)
    return fitted


def baseline_signals(cfg: Config, fitted: Sequence[strategies.Fitted],
                     n_rows: int) -> np.ndarray | None:
    """[T, S] float32: the action of each of `agent.baseline_inputs` decided at the close of
    every row (causal; 0 before a rule's lookback exists), None when the agent reads none. A
    forecaster that could not be fitted (too few rows) reads as a column of zeros."""
    names = cfg.agent.baseline_inputs
    if not names:
        return None
    by_name = {f.name: f for f in fitted}
    rows = np.arange(n_rows)

    def column(name: str) -> np.ndarray:
        f = by_name.get(_fitted_name(name))
        if f is None:
            return np.zeros(n_rows)
        act = f.act if name != "ridge_oof" else f.oof
        if act is None:
            raise ValueError("ridge_oof: the ridge was fitted without its out-of-fold action")
        return np.asarray(act(rows), np.float64)

    return np.stack([column(n) for n in names], axis=1).astype(np.float32)


def load_baseline_signals(cfg: Config, run: RunData, sm: SegmentMatrix,
                          seg_dir: SegmentDir) -> np.ndarray | None:
    """`baseline_signals` of a finished segment, rebuilt from its baselines.json without
    refitting (`strategies.from_params`): evaluate and paper trading. A baseline the segment
    could not fit (not in the file) reads as zeros, as it did in the run."""
    names = cfg.agent.baseline_inputs
    if not names:
        return None
    path = seg_dir.baselines
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: the agents read agent.baseline_inputs {list(names)}, and "
                         f"their fitted parameters cannot be read ({e})") from None
    market = strategies.Market(close=run.close, tradable=run.tradable, features=sm.matrix,
                               lookback=lookback_rows(cfg))
    try:
        fitted = [strategies.from_params(n, record[n], market)
                  for n in dict.fromkeys(map(_fitted_name, names)) if n in record]
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return baseline_signals(cfg, fitted, len(run.close))


def segment_baseline_seed(cfg: Config, segment: int) -> int:
    """The seed of segment `segment`'s random baseline (the run's; `cryptorl evaluate` of its
    agent uses the same, so the baselines of the same hours agree)."""
    return cfg.seed * 1000 + segment


def backtest_rows(cfg: Config, run: RunData, sm: SegmentMatrix, enc: EncoderStage,
                  trainer: Trainer, agents: Any, test_start: int, test_end: int,
                  rollout: Callable | None = None, baseline_seed: int = 0,
                  fitted: Sequence[strategies.Fitted] = (),
                  signals: np.ndarray | None = None) -> pd.DataFrame:
    """The backtest of rows [test_start, test_end) (`backtest.oos.backtest_frame`): each seed
    acts on its own book, rolled out here; the replay, the cost stress, the fund of the seeds'
    books, the baselines (the naive ones and `fitted`) and the benchmark there. `signals`:
    the agent's baseline inputs (`SegmentInputs.signals`)."""
    lookback = lookback_rows(cfg)
    lo = test_start - lookback
    data = trainer.put_data(slice_data(cfg, sm.matrix, run.close, lo, test_end,
                                       test_start - 1, enc.embeddings, run.tradable, signals))
    rollout = rollout or make_rollout(trainer)
    first = lookback - 1  # slice row of test_start - 1: the first decision
    seeds = np.asarray(jax.device_get(rollout(agents, data, first, test_end - test_start, 1.0)))
    return oos_lib.backtest_frame(cfg.env, run_rows(run, cfg), test_start, test_end, seeds,
                                  strategies=fitted, baseline_seed=baseline_seed,
                                  proba=sm.proba)


# --------------------------------------------------------------------------------------------
# The segment runner: fit transforms -> encoder -> baselines -> train -> backtest
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
    baselines: list[strategies.Fitted] = field(default_factory=list)  # fitted on train rows
    signals: np.ndarray | None = None  # [T, S] the agent's baseline inputs (baseline_signals)

    @property
    def dims(self) -> tuple[int, int | None]:
        """(n_features, embedding_dim) of the agent's observation: the training slice's own
        widths (`observation_arrays` built it)."""
        emb = self.data.embeddings
        return (int(self.data.market.features.shape[1]),
                None if emb is None else int(emb.shape[1]))


@dataclass
class SegmentOutcome:
    """What `run_segments` fitted and measured for one segment (walkforward.writer writes a
    walk-forward segment's files from it)."""

    inputs: SegmentInputs
    train: Any  # training.result.TrainResult
    oos: pd.DataFrame | None  # the backtest of eval_rows (None when not asked for)
    insample: pd.DataFrame | None  # the backtest of the train rows (None when not asked for)
    timings: dict[str, float]
    baselines: list[strategies.Fitted] = field(default_factory=list)

    @property
    def agents(self) -> Any:
        return self.train.state.agent


def prepare_segments(cfg: Config, run: RunData, segs: Sequence[Segment],
                     workdirs: Sequence[Path],
                     controls: SegmentControls = SegmentControls(),
                     with_baselines: bool = False) -> list[SegmentInputs]:
    """Steps 1-3 of K segments: every segment's transforms on its own train rows, then their
    encoders (`stages.run_encoder_stages`: one after the other, or the MAEs pre-trained as one
    vmapped step), then the baselines (`segment_baselines`: the report's with
    `with_baselines`, and the agent's inputs), then the training slices. `workdirs[k]` holds
    segment k's encoder checkpoint."""
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
    encoder_s = time.perf_counter() - t  # a batch's, shared by its segments
    lookback = lookback_rows(cfg)
    out = []
    for seg, sm, enc, tm in zip(segs, sms, encs, timings, strict=True):
        tm = {**tm, "encoder_s": encoder_s}
        fitted: list[strategies.Fitted] = []
        if with_baselines or cfg.agent.baseline_inputs:
            hooks.stage(seg.index, "baselines")
            t = time.perf_counter()
            fitted = segment_baselines(cfg, run, sm, seg, with_baselines)
            tm["baselines_s"] = time.perf_counter() - t
        signals = baseline_signals(cfg, fitted, len(run.close))
        data = slice_data(cfg, sm.matrix, run.close, seg.train_start - lookback, seg.train_end,
                          seg.train_start, enc.embeddings, run.tradable, signals)
        if cfg.train.demean_returns:
            data = demean_train_returns(data)
        out.append(SegmentInputs(run=run, seg=seg, sm=sm, enc=enc, data=data, timings=tm,
                                 baselines=fitted, signals=signals))
    return out


def run_segments(cfg: Config, run: RunData, segs: Sequence[Segment], workdirs: Sequence[Path],
                 train_dir: Path, *, eval_rows: Sequence[tuple[int, int] | None],
                 controls: SegmentControls = SegmentControls(), with_baselines: bool = False,
                 with_insample: bool = False) -> list[SegmentOutcome]:
    """Compute K segments (the module's steps); returns their outcomes, in order.

    1-3. `prepare_segments`: the transforms, the encoders (checkpoints in `workdirs`), and
       the baselines that read the market (`segment_baselines`: the report's with
       `with_baselines` and cfg.baselines.enabled, and the agent's `agent.baseline_inputs`);
    4. TQC: the K segments' agents train as the members of ONE compiled step (K segments x
       train.n_seeds seeds; each member reads its own segment's market arrays), keyed by
       `segment_key(cfg, seg.index, STAGE_TRAIN)`, its checkpoints in `train_dir / "train"`;
       a segment inside a batch trains as it would alone up to float rounding
       (tests/training/test_segments_as_members.py);
    5. the backtest of each segment's eval_rows (`backtest_rows`: agents and baselines on the
       same hours), and with `with_insample` of its train rows.

    Writes nothing but that scratch state. The trainer comes from the process-wide cache
    (`stages.get_trainer`), so every segment and trial of one shape compiles once.
    """
    hooks = controls.hooks
    k = len(segs)
    inputs = prepare_segments(cfg, run, segs, workdirs, controls, with_baselines)
    fitted = [inp.baselines for inp in inputs]
    timings = [dict(inp.timings) for inp in inputs]
    for seg in segs:
        hooks.stage(seg.index, "train")
    t = time.perf_counter()
    trainer, rollout = get_trainer(cfg, *inputs[0].dims, segments=k)
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
    result = train(cfg, data, train_dir / "train", key=key, trainer=trainer,
                   encoder_params=encoder_params,
                   controls=TrainControls(
                       resume=controls.resume, progress=controls.progress,
                       tensorboard_dir=controls.tensorboard_dir,
                       desc=controls.desc or f"{label} TQC",
                       hooks=hooks.for_segment(killed[0]) if killed else hooks,
                       on_chunk=controls.on_chunk))
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
        oos = insample = None
        baseline_seed = segment_baseline_seed(cfg, seg.index)
        if rows is not None:
            hooks.stage(seg.index, "backtest")
            t = time.perf_counter()
            oos = backtest_rows(cfg, run, inp.sm, inp.enc, trainer, part.state.agent, *rows,
                                rollout, baseline_seed=baseline_seed, fitted=baselines,
                                signals=inp.signals)
            t_seg["backtest_s"] = time.perf_counter() - t
        if with_insample:  # the agents over their own train rows, through the same backtest
            t = time.perf_counter()
            insample = backtest_rows(cfg, run, inp.sm, inp.enc, trainer, part.state.agent,
                                     seg.train_start, seg.train_end, rollout,
                                     baseline_seed=baseline_seed, fitted=baselines,
                                     signals=inp.signals)
            t_seg["backtest_s"] = t_seg.get("backtest_s", 0.0) + time.perf_counter() - t
        outcomes.append(SegmentOutcome(inputs=inp, train=part, oos=oos, insample=insample,
                                       timings=t_seg, baselines=baselines))
    return outcomes


def run_segment(cfg: Config, run: RunData, seg: Segment, workdir: Path, *,
                eval_rows: tuple[int, int] | None,
                controls: SegmentControls = SegmentControls(), with_baselines: bool = False,
                with_insample: bool = False) -> SegmentOutcome:
    """`run_segments` of one segment (K = 1), its scratch state and checkpoints in workdir."""
    return run_segments(cfg, run, [seg], [workdir], workdir, eval_rows=[eval_rows],
                        controls=controls, with_baselines=with_baselines,
                        with_insample=with_insample)[0]
