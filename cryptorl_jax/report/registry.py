"""The registry of walk-forward runs over an output directory: the N of the OOS Deflated Sharpe.

The stitched OOS series of a run was not selected on its own sample, so deflating it by the
tuning trials' validation Sharpes compares the wrong things (short, noisy windows against a
long series). Its multiple-testing problem is how many walk-forward configurations a
researcher has run over the same OOS window and looked at. Every report (`report.write`)
records its run in `<output dir>/runs.jsonl`, one JSON record per configuration (keyed by the
run's config digest; a later report of the same configuration replaces its record):

    {"config_digest", "run_name", "run_dir", "market", "oos_start", "oos_end", "n_hours",
     "sharpe" (annualised), "sharpe_per_period", "segments", "updated"}

`market` names the data the run traded (`market_key`: the data directory or combined file and
the traded asset): runs on another market over the same hours (a planted market of the power
study beside the real one) are other experiments, not trials of this one. The OOS report
counts the records over exactly its window (same first and last hour) and market (a record
written before `market` existed counts everywhere, the conservative reading):
N = their number and the variance of their per-period Sharpes (ddof = 1) enter the Deflated
Sharpe (Bailey & Lopez de Prado 2014). A run that is still partial covers another window and
is not counted against a finished one (`OOSDeflation`: the N and the expected maximum of N
unskilled Sharpes). Writes take an exclusive lock next to the file (concurrent reports of
several runs) and replace the file atomically.

A run whose stitched Sharpe is undefined (no variance: a flat book that never left the no-trade
band) is still a configuration tried on the window: it is recorded with Sharpe 0 and
`"flat": true`, counts in N and enters the variance as 0 (`registry_sharpe`); a record written
with a null Sharpe (before this rule) reads the same way. A line that is not a readable record
(a truncated last line) is reported with its file and line, skipped, and kept as it is when the
file is rewritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.metrics import expected_max_sharpe, sharpe
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.jsonlines import read_json_lines
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.units import HOURS_PER_YEAR

log = logging.getLogger("cryptorl_jax.report")
REQUIRED = ("config_digest", "oos_start", "oos_end", "sharpe_per_period")

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_registry(path: Path) -> list[dict[str, Any]]:
    """The records of a registry file ([] if it does not exist); a line that is not a
    readable record is reported (file and line) and skipped (`read_registry_lines`)."""
    return read_registry_lines(path)[0]


def read_registry_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, unreadable lines as they are in the file): a line that is not JSON or lacks a
    key the deflation needs is logged as a warning naming the file and line, and skipped."""
    path = Path(path)
    if not path.is_file():
        return [], []

    def check(rec: dict[str, Any]) -> str | None:
        missing = [k for k in REQUIRED if k not in rec]
        return f"the record lacks {missing}" if missing else None

    return read_json_lines(path, check,
                           skipped="skipped (not counted in N; the line is kept in the file)",
                           logger=log)


def register_run(path: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add or replace (same config digest) a run's record; returns all records after."""
    path = Path(path)
    record = {**record, "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with _locked(path):
        held, bad = read_registry_lines(path)
        records = [r for r in held if r["config_digest"] != record["config_digest"]]
        records.append(record)
        records.sort(key=lambda r: (r["oos_start"], r["oos_end"], r["config_digest"]))
        write_atomic(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
                     + "".join(line + "\n" for line in bad))  # nothing written is dropped
    return records


@dataclass(frozen=True)
class RunsOverWindow:
    """The registered runs over one OOS window: the N and Sharpe variance of the DSR."""

    n_runs: int
    sr_variance: float  # of the per-period Sharpes, ddof = 1 (NaN when n_runs < 2)
    runs: list[dict[str, Any]]

    def describe(self) -> str:
        return ", ".join(f"{r.get('run_name', '?')} ({r['config_digest']}, Sharpe "
                         f"{_sharpe_text(r)})" for r in self.runs) or "none"


def _sharpe_text(record: dict[str, Any]) -> str:
    if record.get("flat"):
        return "undefined, flat book: counted as 0"
    value = record.get("sharpe")
    if value is None and record.get("sharpe_per_period") is not None:
        value = float(record["sharpe_per_period"]) * math.sqrt(HOURS_PER_YEAR)
    if value is None or not math.isfinite(float(value)):
        return "undefined: counted as 0"
    return f"{float(value):.2f}"


def registry_sharpe(record: dict[str, Any]) -> float:
    """The per-period Sharpe a record enters the deflation with: its own, or 0 where it is
    undefined (null: a flat book, or a record written before flat books were recorded as 0)."""
    value = record.get("sharpe_per_period")
    if value is None:
        return 0.0
    value = float(value)
    return value if math.isfinite(value) else 0.0


def market_key(data_config: Any) -> str:
    """The identity of a run's market: its resolved data directory (or combined file) and
    traded asset."""
    source = data_config.combined_file if data_config.combined_file else data_config.data_dir
    return f"{Path(str(source)).resolve()}:{data_config.traded_asset}"


def runs_over_window(records: list[dict[str, Any]], oos_start: str, oos_end: str,
                     market: str | None = None) -> RunsOverWindow:
    """The records over exactly [oos_start, oos_end] on `market` (None: any market; a record
    without a market counts on every market)."""
    same = [r for r in records if r["oos_start"] == oos_start and r["oos_end"] == oos_end
            and (market is None or r.get("market") in (None, market))]
    values = [registry_sharpe(r) for r in same]
    var = float(np.var(values, ddof=1)) if len(values) > 1 else float("nan")
    return RunsOverWindow(n_runs=len(same), sr_variance=var, runs=same)


@dataclass(frozen=True)
class OOSDeflation:
    """The OOS Deflated Sharpe's inputs: the registered runs over the same OOS window."""

    n_runs: int
    sr_variance: float
    expected_max_sharpe: float  # per period (NaN when N > 1 but no variance)
    counted: str  # which runs were counted


def oos_record(oos: pd.DataFrame, digest: str, run_name: str, workdir: Path,
               segments: list[int], market: str | None = None) -> dict[str, Any]:
    """This run's record for the output directory's registry; a series without a defined
    Sharpe is recorded with Sharpe 0 (`flat` true when it has no variance: a flat book)."""
    r = oos["strategy"].to_numpy(np.float64)
    sr = sharpe(r, 1.0)  # per period
    flat = bool(len(r) > 0 and np.all(r == r[0]))  # no variance: no position ever held
    sr = sr if math.isfinite(sr) else 0.0
    return {"config_digest": digest, "run_name": run_name,
            "run_dir": str(Path(workdir).absolute()), "market": market,
            "oos_start": str(oos.index[0]), "oos_end": str(oos.index[-1]), "n_hours": len(oos),
            "sharpe": sr * math.sqrt(HOURS_PER_YEAR), "sharpe_per_period": sr, "flat": flat,
            "segments": segments}


def deflation_of(records: list[dict[str, Any]], record: dict[str, Any]) -> OOSDeflation:
    """The OOS Deflated Sharpe's inputs for `record` among the registry's `records`: the runs
    over its window on the same market (`runs_over_window`)."""
    window = runs_over_window(records, record["oos_start"], record["oos_end"], record["market"])
    emax = 0.0 if window.n_runs <= 1 else expected_max_sharpe(window.n_runs, window.sr_variance)
    return OOSDeflation(n_runs=window.n_runs, sr_variance=window.sr_variance,
                        expected_max_sharpe=emax, counted=window.describe())


def oos_deflation(workdir: Path, oos: pd.DataFrame, digest: str, run_name: str,
                  segments: list[int], market: str | None = None) -> OOSDeflation:
    """Record this run in the output directory's registry and count the runs over its window
    on the same market (`market_key`)."""
    record = oos_record(oos, digest, run_name, workdir, segments, market)
    return deflation_of(register_run(RunDir(workdir).registry, record), record)
