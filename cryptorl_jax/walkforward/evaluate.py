"""Backtest a saved segment's agent on any window of the data (cryptorl evaluate).

Loads the run's resolved config and the segment's fitted scaler, regime model, FFD order,
encoder and agents, rebuilds the causal features on the current data (by default with
`data.end` lifted, so the newest bars are included), and runs the same OOS backtest as the
walk-forward driver over [start, end]. Windows that overlap the segment's train rows are
in-sample for that agent: the output says how many hours are. It only reads the run: the
outputs go to `out_dir`, by default `<run>-eval/segment<k>_<start>_<end>/` beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
from cryptorl_jax.walkforward.data import RunData, load_segment_transforms
from cryptorl_jax.walkforward.runner import backtest_rows
from cryptorl_jax.walkforward.stages import get_trainer, load_agents, load_encoder_stage

log = logging.getLogger("cryptorl_jax.evaluate")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, float]
    comparison: pd.DataFrame
    oos: pd.DataFrame
    in_sample_hours: int


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
                    tearsheet: bool = True) -> EvalResult:
    """Backtest segment `segment` of a finished run (default: its latest finished segment)
    over [start, end] (UTC; a naive time is read as UTC): what `cryptorl evaluate` does.

    `run` is a `report.Run` or its directory. `start` defaults to the hour after the segment's
    train end, `end` to the newest bar (the run's `data.end` is lifted unless `keep_data_end`).
    The outputs (oos_returns.parquet, metrics.json, comparison.csv, equity_curve.png,
    tearsheet.html) go to `out_dir`, default `<run>/eval_segment<k>_<start>_<end>/`.
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
    train_end_time = pd.Timestamp(meta["train_period"][1])
    default_start = int(index.searchsorted(train_end_time, side="right"))
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
    sm = load_segment_transforms(cfg, data, seg_dir)
    enc = load_encoder_stage(cfg, sm, seg_dir)
    emb_dim = None if enc.embeddings is None else enc.embeddings.shape[1]
    trainer, rollout = get_trainer(cfg, sm.matrix.shape[1], emb_dim)
    agents = load_agents(seg_dir.agents, trainer)
    oos = backtest_rows(cfg, data, sm, enc, trainer, agents, start_row, end_row + 1, rollout,
                        baseline_seed=cfg.seed)
    train_times = pd.date_range(meta["train_period"][0], meta["train_period"][1], freq="h")
    in_sample = int(oos.index.isin(train_times).sum())
    metrics = oos_lib.strategy_metrics(oos)
    comparison = oos_lib.series_table(oos)
    out = Path(out_dir) if out_dir is not None else (
        rd.reading_dir
        / f"segment{segment}_{index[start_row]:%Y%m%d%H}_{index[end_row]:%Y%m%d%H}")
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "oos_returns.parquet", oos)
    write_json(out / "metrics.json", {**metrics, "segment": segment,
                                               "in_sample_hours": in_sample,
                                               "start": str(oos.index[0]),
                                               "end": str(oos.index[-1])})
    write_atomic(out / "comparison.csv", comparison.to_csv())
    title = (f"{cfg.run_name} segment {segment} agent on {oos.index[0]:%Y-%m-%d} .. "
             f"{oos.index[-1]:%Y-%m-%d}")
    frame = oos.assign(segment=segment)
    plot_equity(frame, [segment], out / "equity_curve.png", title)
    if tearsheet:
        write_tearsheet(oos, out / "tearsheet.html", title)
    if in_sample:
        log.warning("%d of %d hours overlap segment %d's train rows: in-sample for this agent",
                    in_sample, len(oos), segment)
    return EvalResult(out_dir=out, metrics=metrics, comparison=comparison, oos=oos,
                      in_sample_hours=in_sample)
