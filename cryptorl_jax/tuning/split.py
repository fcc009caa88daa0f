"""A tuning trial's rows: the nested split inside a walk-forward segment's train rows (see
`tuning.driver`'s docstring), the market cut at the train end, the trial's inputs, and the
validation backtest that scores it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.oos import strategy_metrics
from cryptorl_jax.config import (
    Config,
    ConfigError,
)
from cryptorl_jax.core.names import PERFORMANCE_METRICS, POSITION_METRICS
from cryptorl_jax.core.units import HOURS_PER_YEAR, MIN_ANNUALISED_DAYS, min_annualised_periods
from cryptorl_jax.walkforward.data import RunData, prepare_run
from cryptorl_jax.walkforward.layout import lookback_rows
from cryptorl_jax.walkforward.runner import (
    SegmentControls,
    SegmentInputs,
    backtest_rows,
    prepare_segments,
    run_segment,
)
from cryptorl_jax.walkforward.segments import Segment

SCORE_KEYS = (*PERFORMANCE_METRICS, *POSITION_METRICS)


@dataclass(frozen=True)
class NestedSplit:
    """Rows of a trial inside one segment's train rows (half-open, absolute indices)."""

    segment: int
    fit_start: int  # first row the transforms are fitted on and episodes start at
    inner_train_end: int
    val_start: int
    val_end: int  # = the outer segment's train_end: nothing at or after it is read

    @property
    def gap(self) -> int:
        return self.val_start - self.inner_train_end

    def inner_segment(self) -> Segment:
        """A Segment whose train rows are the inner train and whose test rows are validation."""
        return Segment(self.segment, self.fit_start, self.inner_train_end, self.val_start,
                       self.val_end)


def nested_split(cfg: Config, seg: Segment, offset: int = 0) -> NestedSplit:
    """Inner train / gap / validation inside seg's train rows (see the module docstring).

    offset: the first row whose features and lookback exist (RunData.offset); the inner train
    starts at max(seg.train_start, offset).
    """
    n_rows = seg.train_end - seg.train_start
    n_val = int(round(cfg.tune.val_fraction * n_rows))
    gap = max(lookback_rows(cfg), cfg.wfo.embargo_hours)
    fit_start = max(seg.train_start, offset)
    val_start = seg.train_end - n_val
    inner_end = val_start - gap
    min_inner = cfg.env.window + cfg.env.vol_window + 2
    if n_val < 2:
        raise ConfigError("tune.val_fraction", f"segment {seg.index}: {cfg.tune.val_fraction:g}"
                          f" of {n_rows} train rows leaves {n_val} validation rows (need >= 2)",
                          cfg.source)
    if cfg.tune.metric == "calmar" and n_val < min_annualised_periods(HOURS_PER_YEAR):
        raise ConfigError(
            "tune.metric", f"segment {seg.index}: 'calmar' annualises the validation rows' "
            f"growth, but their {n_val} hours are fewer than {MIN_ANNUALISED_DAYS} days, where "
            "CAGR and Calmar are not annualised (NaN, backtest.metrics): use sharpe, sortino or "
            "total_return, or more validation rows (tune.val_fraction, wfo.train_months)",
            cfg.source)
    if inner_end - fit_start < min_inner:
        raise ConfigError(
            "tune.val_fraction",
            f"segment {seg.index}: train rows [{seg.train_start}, {seg.train_end}) minus "
            f"{n_val} validation rows and a {gap}-row gap leave {inner_end - fit_start} inner "
            f"train rows from row {fit_start} (need >= env.window + env.vol_window + 2 = "
            f"{min_inner})", cfg.source)
    return NestedSplit(seg.index, fit_start, inner_end, val_start, seg.train_end)


def cut_run(cfg: Config, market: pd.DataFrame, end: int) -> RunData:
    """RunData of a copy of market rows [0, end): later rows do not exist for what follows."""
    cut = market.iloc[:end].copy()
    cut.attrs = dict(market.attrs)
    return RunData.build(cfg, cut, with_segments=False)


@dataclass
class TrialInputs:
    """What a trial trains and is scored on in one segment: everything before TQC."""

    split: NestedSplit
    inputs: SegmentInputs  # prepare_segments of the inner segment (its run: the cut market)


def trial_run(cfg: Config, market: pd.DataFrame, seg: Segment) -> tuple[RunData, NestedSplit]:
    """The market cut at seg's train end (nothing at or after it exists) and the nested split."""
    run = cut_run(cfg, market, seg.train_end)
    split = nested_split(cfg, seg, run.offset)
    run.segments = [split.inner_segment()]
    return run, split


def _check_cut(sm: Any, run: RunData, seg: Segment) -> None:
    if not sm.matrix.shape[0] == len(run.market) == seg.train_end:  # nothing after train_end
        raise RuntimeError(f"segment {seg.index}: the trial's feature matrix has "
                           f"{sm.matrix.shape[0]} rows, expected exactly the {seg.train_end} "
                           "rows before the train end")


def segment_inputs(cfg: Config, market: pd.DataFrame, seg: Segment, workdir: Path,
                   progress: bool = False) -> TrialInputs:
    """Cut the market at seg's train end, split it, and run the segment runner's preparation
    (transforms and encoder fitted on the inner train rows, the training slice)."""
    run, split = trial_run(cfg, market, seg)
    inputs, = prepare_segments(cfg, run, [split.inner_segment()], [workdir],
                               SegmentControls(progress=progress))
    _check_cut(inputs.sm, run, seg)
    return TrialInputs(split=split, inputs=inputs)


def scores_of(frame: pd.DataFrame, split: NestedSplit, chunks: int) -> dict[str, Any]:
    """A trial's validation scores: compute_metrics' keys, the split's rows and, under
    "returns", the strategy's hourly validation returns (the PBO and DSR inputs)."""
    metrics = strategy_metrics(frame)
    out: dict[str, Any] = {k: float(metrics[k]) for k in SCORE_KEYS if k in metrics}
    out.update({"fit_start": split.fit_start, "inner_train_end": split.inner_train_end,
                "val_start": split.val_start, "val_end": split.val_end, "gap": split.gap,
                "chunks": chunks})
    returns = frame["strategy"].to_numpy()
    out["flat"] = bool(np.nanstd(returns) == 0.0)
    out["returns"] = [float(x) for x in returns]
    return out


def score_agents(cfg: Config, trial: TrialInputs, seg: Segment, trainer: Any, rollout: Any,
                 agents: Any, chunks: int) -> dict[str, Any]:
    """The validation backtest of some agents trained on the trial's inputs (population mode:
    one trial's members)."""
    split, inputs = trial.split, trial.inputs
    frame = backtest_rows(cfg, inputs.run, inputs.sm, inputs.enc, trainer, agents,
                          split.val_start, split.val_end, rollout,
                          baseline_seed=cfg.seed * 1000 + seg.index, signals=inputs.signals)
    return scores_of(frame, split, chunks)


def validate_segment(cfg: Config, market: pd.DataFrame, seg: Segment, workdir: Path, *,
                     on_chunk: Callable[[int, dict[str, Any]], None] | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """The segment runner on the inner train rows of seg, backtested on the validation rows.

    Returns compute_metrics' keys of the validation backtest plus the split's rows, and under
    "returns" the strategy's hourly validation returns (the PBO and DSR inputs).
    """
    run, split = trial_run(cfg, market, seg)
    outcome = run_segment(cfg, run, split.inner_segment(), workdir,
                          eval_rows=(split.val_start, split.val_end),
                          controls=SegmentControls(progress=progress, on_chunk=on_chunk,
                                                   desc=f"trial segment {seg.index}"))
    _check_cut(outcome.inputs.sm, run, seg)
    return scores_of(outcome.oos, split, len(outcome.train.history))


def all_wfo_segments(cfg: Config, market: pd.DataFrame) -> list[Segment]:
    """Every walk-forward segment of the data (wfo.segments / max_segments not applied)."""
    every = dataclasses.replace(cfg, wfo=dataclasses.replace(cfg.wfo, segments=None,
                                                             max_segments=None))
    return prepare_run(every, market).segments


def outer_segments(cfg: Config, market: pd.DataFrame,
                   wfo_segments: list[Segment] | None = None) -> list[Segment]:
    """The walk-forward segments named by tune.segments, out of `wfo_segments` (default:
    `all_wfo_segments`, the segments cryptorl wfo makes)."""
    segments = wfo_segments if wfo_segments is not None else all_wfo_segments(cfg, market)
    bad = [k for k in cfg.tune.segments if k >= len(segments)]
    if bad or not cfg.tune.segments:
        raise ConfigError("tune.segments", f"segment(s) {bad or '[]'} do not exist: the data "
                          f"holds segments 0..{len(segments) - 1}", cfg.source)
    return [segments[k] for k in sorted(set(cfg.tune.segments))]


def seen_by_tuning(wfo_segments: list[Segment], tuned: list[Segment]) -> list[int]:
    """The WFO segments (of `wfo_segments`) whose test rows start before the last row a tuning
    trial read.

    Their OOS results are not out of sample for a config chosen by this study: the tuning
    validated on some of their test rows (a later segment's train rows hold earlier test rows).
    """
    last = max(s.train_end for s in tuned)
    return [s.index for s in wfo_segments if s.test_start < last]

