"""Backtest a saved segment's agent on any window of the data (cryptorl evaluate).

Loads the run's resolved config and the segment's fitted scaler, regime model, FFD order,
encoder and agents, rebuilds the causal features on the current data (by default with
`data.end` lifted, so the newest bars are included), and runs the same OOS backtest as the
walk-forward driver over [start, end]. A window that starts inside the segment's test hours
starts from the run's own book at its first hour (the roll-out from the segment's first test
hour cut to the window: its hours equal the run's OOS rows), elsewhere from a flat book
(`walkforward.window`); the result says which and why, gives the run's own figures for the
hours it holds, and says why nothing traded when a flat book never left the no-trade band.
Windows that overlap the segment's train rows are in-sample for that agent: the output says how
many hours are. It only reads the run: the outputs go to `out_dir`, by default
`<run>-eval/segment<k>_<start>_<end>/` beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.config import load_config, with_overrides
from cryptorl_jax.core.io import write_atomic, write_json, write_parquet
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market import load_market
from cryptorl_jax.report import Run
from cryptorl_jax.report.plots import plot_equity
from cryptorl_jax.report.tearsheet import write_tearsheet
from cryptorl_jax.walkforward.data import (
    RunData,
    load_segment_transforms,
    observation_dims,
    signals_only,
)
from cryptorl_jax.walkforward.runner import (
    backtest_rows,
    load_baseline_signals,
    segment_baseline_seed,
)
from cryptorl_jax.walkforward.stages import get_trainer, load_agents, load_encoder_stage
from cryptorl_jax.walkforward.window import (
    WindowStart,
    describe_start,
    nothing_traded_reason,
    resolve_start,
    run_figures,
    traded,
    window_figures,
)

log = logging.getLogger("cryptorl_jax.evaluate")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, float]
    comparison: pd.DataFrame
    oos: pd.DataFrame
    in_sample_hours: int
    start: WindowStart | None = None  # how the book started (the run's book or flat) and why
    figures: dict[str, float] = field(default_factory=dict)  # hours, sharpe, total return, ...
    run_figures: dict[str, float] | None = None  # the run's own for the hours it holds
    notes: list[str] = field(default_factory=list)  # nothing traded, the tearsheet skipped


def segment_meta(rd: RunDir, segment: int | None) -> tuple[int, dict[str, Any]]:
    done = rd.finished_segments()
    if not done:
        raise FileNotFoundError(f"{rd.path}: no finished segment (no segment_*/DONE)")
    if segment is None:
        segment = done[-1]
    elif segment not in done:
        raise FileNotFoundError(f"{rd.path}: segment {segment} is not finished; finished: "
                                f"{done}")
    rd.segment(segment).check()  # its files as its DONE record vouches (SegmentDamagedError)
    return segment, rd.segment(segment).done_meta()


def to_utc(when: Any) -> pd.Timestamp:
    """A time as a UTC timestamp (a naive one is read as UTC)."""
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def evaluate_window(run: Run | str | Path, segment: int | None = None, start: Any = None,
                    end: Any = None, *, out_dir: str | Path | None = None,
                    keep_data_end: bool = False, market: pd.DataFrame | None = None,
                    tearsheet: bool = True, from_run_state: bool | None = None) -> EvalResult:
    """Backtest segment `segment` of a finished run (default: its latest finished segment)
    over [start, end] (UTC; a naive time is read as UTC): what `cryptorl evaluate` does.

    `run` is a `report.Run` or its directory. `start` defaults to the hour after the segment's
    train end, `end` to the newest bar (the run's `data.end` is lifted unless `keep_data_end`).
    `from_run_state` (`walkforward.window.resolve_start`): None starts from the run's own book
    at `start` when `start` lies in the segment's test hours (the answer then equals the run's
    OOS rows for those hours), else from a flat book; True asks for the run's book (refused
    before the test window; after it, the book continued from the first test hour); False
    starts flat. `EvalResult.start` says which and why, `EvalResult.figures` and
    `EvalResult.run_figures` are this window's and the run's own figures for the same hours,
    `EvalResult.notes` why nothing traded and why no tearsheet was written.
    The outputs (oos_returns.parquet, metrics.json, comparison.csv, equity_curve.png,
    tearsheet.html) go to `out_dir`, default `<run>-eval/segment<k>_<start>_<end>/`.
    `market` is a frame to use instead of reading the config's data files. Hours that overlap
    the segment's train rows are in-sample for its agents: `EvalResult.in_sample_hours`.
    Imports JAX (the agents act)."""
    run_dir = Path(run.path) if isinstance(run, Run) else Path(run)
    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise FileNotFoundError(f"{run_dir}: not a walk-forward run directory (no config.yaml)")
    cfg = load_config(rd.config)
    if not keep_data_end:
        cfg = with_overrides(cfg, ["data.end=null"])
    segment, meta = segment_meta(rd, segment)
    seg_dir = rd.segment(segment)
    if market is None:
        market = load_market(cfg.data)
    data = RunData.build(cfg, market, with_segments=False)
    offset = data.offset
    index = market.index
    train_period = (to_utc(meta["train_period"][0]), to_utc(meta["train_period"][1]))
    test_period = (to_utc(meta["test_period"][0]), to_utc(meta["test_period"][1]))
    default_start = int(index.searchsorted(train_period[1], side="right"))
    # the first row at or after `start`, the last row at or before `end`
    start_row = default_start if start is None else int(index.searchsorted(to_utc(start)))
    end_row = len(index) - 1 if end is None else int(
        index.searchsorted(to_utc(end), side="right")) - 1
    if start_row >= len(index):
        raise ValueError(f"--start {start} is after the last bar {index[-1]}")
    if start_row < offset:
        raise ValueError(f"--start must be at or after {index[offset]} (the features need "
                         f"{offset} rows of warm-up and lookback)")
    if end_row <= start_row:
        raise ValueError(f"the window {index[start_row]} .. {index[end_row]} holds no return")
    begin = resolve_start(segment, train_period, test_period, index[start_row], from_run_state)
    # the roll-out: from the window's first row (flat), or from the segment's first test row
    # through at least its last (the run's own call, so its hours are the run's), then cut
    lo, hi = start_row, end_row + 1
    if begin.from_run_state:
        lo = int(index.searchsorted(test_period[0]))
        if lo >= len(index) or index[lo] != test_period[0]:
            raise ValueError(f"segment {segment}'s first test hour {test_period[0]} is not in "
                             f"the data ({index[0]} .. {index[-1]}): start flat (--flat)")
        hi = min(max(hi, int(index.searchsorted(test_period[1])) + 1), len(index))
    sm = load_segment_transforms(cfg, data, seg_dir)
    enc = load_encoder_stage(cfg, sm, seg_dir)
    signals = load_baseline_signals(cfg, data, sm, seg_dir)
    trainer, rollout = get_trainer(cfg, *observation_dims(sm.matrix, enc.embeddings, signals,
                                                             only_signals=signals_only(cfg)))
    agents = load_agents(seg_dir.agents, trainer)
    full = backtest_rows(cfg, data, sm, enc, trainer, agents, lo, hi, rollout,
                         baseline_seed=segment_baseline_seed(cfg, segment), signals=signals)
    oos = full.iloc[start_row - lo:end_row + 1 - lo].copy()
    train_times = pd.date_range(train_period[0], train_period[1], freq="h")
    in_sample = int(oos.index.isin(train_times).sum())
    metrics = oos_lib.strategy_metrics(oos)
    comparison = oos_lib.series_table(oos)
    figures, own = window_figures(oos), run_figures(rd, segment, oos.index)
    notes: list[str] = []
    idle = not traded(oos)
    if idle:
        notes.append(nothing_traded_reason(oos, cfg.env.no_trade_band))
    out = Path(out_dir) if out_dir is not None else (
        rd.reading_dir
        / f"segment{segment}_{index[start_row]:%Y%m%d%H}_{index[end_row]:%Y%m%d%H}")
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "oos_returns.parquet", oos)
    write_atomic(out / "comparison.csv", comparison.to_csv())
    title = (f"{cfg.run_name} segment {segment} agent on {oos.index[0]:%Y-%m-%d} .. "
             f"{oos.index[-1]:%Y-%m-%d}")
    frame = oos.assign(segment=segment)
    plot_equity(frame, [segment], out / "equity_curve.png", title)
    if tearsheet and idle:
        notes.append("tearsheet skipped: every return is 0, nothing to chart")
    elif tearsheet:
        failed = write_tearsheet(oos, out / "tearsheet.html", title)
        if failed:
            notes.append(f"tearsheet not written: {failed}")
    write_json(out / "metrics.json", {**metrics, "segment": segment,
                                       "in_sample_hours": in_sample,
                                       "start": str(oos.index[0]), "end": str(oos.index[-1]),
                                       **describe_start(begin), "run_figures": own,
                                       "notes": notes})
    if in_sample:
        log.warning("%d of %d hours overlap segment %d's train rows: in-sample for this agent",
                    in_sample, len(oos), segment)
    return EvalResult(out_dir=out, metrics=metrics, comparison=comparison, oos=oos,
                      in_sample_hours=in_sample, start=begin, figures=figures, run_figures=own,
                      notes=notes)
