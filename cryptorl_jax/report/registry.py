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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.metrics import expected_max_sharpe, sharpe
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.units import HOURS_PER_YEAR


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
    """The records of a registry file ([] if it does not exist); names a malformed line."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {i}: not a JSON record ({exc.msg})") from None
        missing = [k for k in ("config_digest", "oos_start", "oos_end", "sharpe_per_period")
                   if k not in rec]
        if missing:
            raise ValueError(f"{path}, line {i}: the record lacks {missing}")
        out.append(rec)
    return out


def register_run(path: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add or replace (same config digest) a run's record; returns all records after."""
    path = Path(path)
    record = {**record, "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    with _locked(path):
        records = [r for r in read_registry(path)
                   if r["config_digest"] != record["config_digest"]]
        records.append(record)
        records.sort(key=lambda r: (r["oos_start"], r["oos_end"], r["config_digest"]))
        write_atomic(path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in records))
    return records


@dataclass(frozen=True)
class RunsOverWindow:
    """The registered runs over one OOS window: the N and Sharpe variance of the DSR."""

    n_runs: int
    sr_variance: float  # of the per-period Sharpes, ddof = 1 (NaN when n_runs < 2)
    runs: list[dict[str, Any]]

    def describe(self) -> str:
        names = ", ".join(f"{r.get('run_name', '?')} ({r['config_digest']}, Sharpe "
                          f"{r.get('sharpe', float('nan')):.2f})" for r in self.runs)
        return names or "none"


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
    values = [float(r["sharpe_per_period"]) for r in same
              if r["sharpe_per_period"] is not None and math.isfinite(r["sharpe_per_period"])]
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
    """This run's record for the output directory's registry."""
    sr = sharpe(oos["strategy"].to_numpy(np.float64), 1.0)  # per period
    return {"config_digest": digest, "run_name": run_name,
            "run_dir": str(Path(workdir).absolute()), "market": market,
            "oos_start": str(oos.index[0]), "oos_end": str(oos.index[-1]), "n_hours": len(oos),
            "sharpe": sr * math.sqrt(HOURS_PER_YEAR) if math.isfinite(sr) else None,
            "sharpe_per_period": sr if math.isfinite(sr) else None, "segments": segments}


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
