"""A walk-forward segment's files, written from its outcome (walkforward.runner computes, this
module writes).

`write_segment_files(cfg, run, seg, rd, outcome, ...)` writes everything of segment k into
rd.segment(k) (its fitted state `write_fitted_state`, the OOS and in-sample backtests, the
metrics, the stationarity table, the regime plot) and the `DONE` record last, holding the size
and sha256 of every file it vouches for: --resume trusts a segment whose files match it and
moves a damaged one aside (`set_aside`) to compute it again. `pack_segment` /
`install_segment` move a finished segment's files from one run directory to another as one
archive (a segment computed where the run directory is not: a Ray task).
"""

from __future__ import annotations

import io
import logging
import os
import platform
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import jax

from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest import strategies
from cryptorl_jax.backtest.metrics import regime_metrics
from cryptorl_jax.config import Config
from cryptorl_jax.core import provenance
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.core.io import write_atomic, write_json, write_parquet
from cryptorl_jax.core.rundir import DONE, RunDir, SegmentDir
from cryptorl_jax.features import adf_table
from cryptorl_jax.regimes import plot_regimes
from cryptorl_jax.walkforward.data import RunData
from cryptorl_jax.walkforward.runner import SegmentOutcome
from cryptorl_jax.walkforward.segments import Segment
from cryptorl_jax.walkforward.stages import save_agents

log = logging.getLogger("cryptorl_jax.walkforward")


class SegmentArchiveError(RuntimeError):
    """A segment's archive that cannot be installed (it holds no DONE record)."""


def write_fitted_state(out: SegmentDir, outcome: SegmentOutcome) -> None:
    """A segment's fitted state, as `data.load_segment_transforms`, `stages.load_encoder_stage`,
    `stages.load_agents` and the report read it back: the transforms (scaler, HMM, FFD order
    and columns), the encoder report (the encoder checkpoint is already there: it is the
    runner's workdir), the baselines' fitted parameters, the agents and their training
    history."""
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


def write_segment_files(cfg: Config, run: RunData, seg: Segment, rd: RunDir,
                        outcome: SegmentOutcome, hooks: Hooks, t_seg: float) -> dict[str, Any]:
    """A computed walk-forward segment's files (its outcome from `runner.run_segments` with
    the OOS test rows and the in-sample backtest): the fitted state, the backtests, the
    metrics, the reports and the DONE record (written last; returned). t_seg: when the
    segment started (perf_counter), for its wall time."""
    out = rd.segment(seg.index)
    timings = outcome.timings
    t = time.perf_counter()
    oos, insample = outcome.oos, outcome.insample
    write_fitted_state(out, outcome)
    write_parquet(out.oos, oos)
    write_parquet(out.insample, insample)
    write_atomic(out.series_metrics, oos_lib.series_table(oos).to_csv())
    metrics = oos_lib.strategy_metrics(oos)
    in_metrics = oos_lib.strategy_metrics(insample)
    metrics.update({f"insample_{k}": in_metrics[k] for k in
                    ("sharpe", "total_return", "turnover", "exposure")})
    write_json(out.metrics, metrics)
    if "regime" in oos:
        write_atomic(out.regime_metrics,
                     regime_metrics(oos["strategy"].to_numpy(), oos["regime"].to_numpy(),
                                    oos["benchmark"].to_numpy()).to_csv())
    timings["backtest_s"] = timings.get("backtest_s", 0.0) + time.perf_counter() - t

    hooks.stage(seg.index, "report")
    sm = outcome.inputs.sm
    rows = slice(seg.train_start, seg.train_end)
    # a fixed lag (one day) instead of an AIC search (docs/benchmarks.md)
    write_atomic(out.stationarity, adf_table(sm.features, rows, autolag=None, maxlag=24).to_csv())
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
            # (training.result.entropy_summary), per member under "members" for P > 1
            "entropy": outcome.train.entropy,
            "host": platform.node(), "devices": provenance.devices()}
    done = out.sealed_done(done)  # the size and sha256 of every file written above
    write_json(out.done, done)  # written last: --resume trusts it (after `out.damage()`)
    log.info("segment %d done in %.0f s: OOS sharpe %.2f, total return %.2f%%", seg.index,
             timings["segment_s"], metrics["sharpe"], 100 * metrics["total_return"])
    return done


# --------------------------------------------------------------------------------------------
# A finished segment's files as one archive (from a run directory elsewhere)
# --------------------------------------------------------------------------------------------


def pack_segment(rd: RunDir, index: int) -> bytes:
    """tar.gz of what a segment wrote: segment_<k>/ (without train/ checkpoints),
    tensorboard/segment_<k>/ and segment_<k>_regimes.png."""
    seg = rd.segment(index)
    train = f"{seg.path.name}/{seg.checkpoints.name}"  # not train_history.json
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(seg.path, arcname=seg.path.name,
                filter=lambda ti: None if ti.name == train or ti.name.startswith(f"{train}/")
                else ti)
        tb = rd.tensorboard_segment(index)
        if tb.is_dir():
            tar.add(tb, arcname=f"tensorboard/{seg.path.name}")
        png = rd.regimes_png(index)
        if png.is_file():
            tar.add(png, arcname=png.name)
    return buf.getvalue()


def install_segment(rd: RunDir, index: int, archive: bytes) -> None:
    """Unpack a segment's archive into the run directory: everything through a staging folder
    renamed into place, the DONE marker last (a crash midway leaves an unfinished segment that
    --resume runs again, never a half-written finished one)."""
    name = rd.segment(index).path.name
    staging = rd.path / f".incoming_{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        done_file = staging / name / DONE
        if not done_file.is_file():
            raise SegmentArchiveError(f"segment {index}: the worker's archive has no "
                                      f"{name}/{DONE}")
        done = done_file.read_bytes()
        done_file.unlink()
        target = rd.segment(index).path
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / name, target)
        tb_src = staging / "tensorboard" / name
        if tb_src.is_dir():
            tb_dst = rd.tensorboard_segment(index)
            tb_dst.parent.mkdir(parents=True, exist_ok=True)
            if tb_dst.exists():
                shutil.rmtree(tb_dst)
            os.replace(tb_src, tb_dst)
        png = staging / rd.regimes_png(index).name
        if png.is_file():
            os.replace(png, rd.regimes_png(index))
        write_atomic(target / DONE, done)  # last: the segment is finished
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def set_aside(rd: RunDir, index: int) -> Path:
    """Move a damaged finished segment's folder aside to segment_<k>.damaged-<time>/ (nothing
    is deleted), except its training checkpoints (train/: scratch state, checked when
    restored), which go back to a new segment_<k>/ so that computing the segment again
    resumes its training from them. Returns where the folder went."""
    seg = rd.segment(index)
    aside = seg.damaged_path(time.strftime("%Y%m%dT%H%M%S"))
    n = 1
    while aside.exists():
        aside = seg.damaged_path(f"{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        n += 1
    os.replace(seg.path, aside)
    if (aside / "train").is_dir():
        seg.path.mkdir()
        os.replace(aside / "train", seg.checkpoints)
    return aside
