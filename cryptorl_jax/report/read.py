"""Reading a run's finished segments (`core.rundir.RunDir`): the stitched OOS frame, the tables the
summary shows from the segments' own files, and the diagnostics of their frames."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.diagnostics import diagnostics_table
from cryptorl_jax.core.rundir import RunDir

log = logging.getLogger("cryptorl_jax.report")


def read_frame(path: Path) -> pd.DataFrame:
    """A segment's backtest frame (oos.parquet, insample.parquet), refused with the file, the
    column and the first hour named when a number in it is NaN or infinite: the backtest never
    writes one, so the frame is damaged and no figure of the report could be trusted."""
    frame = pd.read_parquet(path)
    for col in frame.columns:
        if frame[col].dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(frame[col].to_numpy())
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: column '{col}' holds {int(bad.sum())} non-finite value(s) (the first "
                f"{frame[col].iloc[i]} at {frame.index[i]}); the report reads only finite "
                f"numbers: recompute the segment (delete {Path(path).parent} and run again "
                "with --resume)")
    return frame


def stitch(workdir: Path, segments: list[int]) -> pd.DataFrame:
    """The per-segment OOS frames in order, with a `segment` column (`read_frame`: a
    non-finite number is refused, naming the file)."""
    rd = RunDir(workdir)
    frames = []
    for k in segments:
        f = read_frame(rd.segment(k).oos)
        if "tradable" in f and len(f) and not f["tradable"].to_numpy(bool).any():
            log.warning("segment %d: no tradable hour in its test window (%s .. %s): its book "
                        "stayed flat and its Sharpe is undefined", k, f.index[0], f.index[-1])
        f["segment"] = k
        frames.append(f)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames)
    if not out.index.is_monotonic_increasing or out.index.has_duplicates:
        raise ValueError(f"{workdir}: the segments' OOS windows overlap or are out of order")
    return out


def gaps(oos: pd.DataFrame) -> list[str]:
    """Where the stitched OOS index is not one hour apart (missing segments)."""
    steps = np.diff(oos.index.as_unit("ns").asi8)
    bad = np.flatnonzero(steps != 3600 * 10**9)
    return [f"{oos.index[i]} -> {oos.index[i + 1]}" for i in bad]


def segment_diagnostics(rd: RunDir, oos: pd.DataFrame, segments: list[int]) -> pd.DataFrame:
    """diagnostics.csv of a run directory: each segment's OOS frame beside its agents'
    in-sample frame (their own train rows through the same backtest), and the stitched `all`
    row (`backtest.diagnostics.diagnostics_table`)."""
    parts = {k: oos[oos["segment"] == k] for k in segments}
    insample = {k: read_frame(rd.segment(k).insample) for k in segments
                if rd.segment(k).insample.is_file()}
    return diagnostics_table(parts, insample, oos)


def stationarity_summary(tables: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The segments' ADF tables (stationarity.csv) summarised per feature."""
    if not tables:
        return None
    pvals = pd.concat([t["p_value"] for t in tables], axis=1)
    stationary = pd.concat([t["stationary"].astype(bool) for t in tables], axis=1)
    out = pd.DataFrame({"median_p_value": pvals.median(axis=1),
                        "stationary_share": stationary.mean(axis=1)})
    out.index.name = "feature (ADF on train rows)"
    return out.sort_values("median_p_value")


@dataclass
class SegmentTables:
    """What the summary shows from the finished segments' own files (None: no segment has it)."""

    regimes: pd.DataFrame | None  # regime_stats.json: the fitted HMM states
    regime_metrics: pd.DataFrame | None  # regime_metrics.csv: OOS by filtered regime
    encoder: pd.DataFrame | None  # encoder_report.json: the MAE's validation MSE
    stationarity: pd.DataFrame | None  # stationarity.csv, summarised
    timings: pd.DataFrame  # the DONE records' timings


def read_segment_tables(rd: RunDir, segments: list[int]) -> SegmentTables:
    regime_rows, rm, enc_rows, adf, timing_rows = [], [], [], [], []
    for k in segments:
        seg = rd.segment(k)
        if seg.regime_stats.exists():
            stats = json.loads(seg.regime_stats.read_text())
            for st in stats["states"]:
                regime_rows.append({"segment": k, "state": st["state"],
                                    "volatility": st["volatility"],
                                    "duration_h": st["expected_duration_h"],
                                    "stationary_prob": st["stationary_prob"],
                                    **{f"mean {c}": v for c, v in st["mean"].items()}})
        if seg.regime_metrics.exists():
            f = pd.read_csv(seg.regime_metrics)
            f.insert(0, "segment", k)
            rm.append(f)
        if seg.encoder_report.exists():
            r = json.loads(seg.encoder_report.read_text())
            if "val_mse" in r:
                enc_rows.append({"segment": k, "val_mse": r["val_mse"],
                                 "window_mean_mse": r["window_mean_mse"],
                                 "last_value_mse": r["last_value_mse"],
                                 "epochs": r["epochs_run"]})
        if seg.stationarity.exists():
            adf.append(pd.read_csv(seg.stationarity, index_col=0))
        timing_rows.append({"segment": k, **seg.done_meta().get("timings", {})})
    return SegmentTables(
        regimes=pd.DataFrame(regime_rows).set_index("segment") if regime_rows else None,
        regime_metrics=pd.concat(rm).set_index("segment") if rm else None,
        encoder=pd.DataFrame(enc_rows).set_index("segment") if enc_rows else None,
        stationarity=stationarity_summary(adf),
        timings=pd.DataFrame(timing_rows).set_index("segment"))
