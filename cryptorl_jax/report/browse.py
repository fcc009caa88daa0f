"""Browsing finished runs, read only: the runs of an output directory (`list_runs`: its
registry, runs.jsonl, and its run directories) and one run's verdict and headline figures.

The verdict is recomputed by `report.verdict` from what the report wrote (metrics.csv's `all`
row, diagnostics.csv's flags, N = the row's n_trials): the same paragraph summary.md opens
with. Nothing here writes a file, takes a lock or imports JAX.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cryptorl_jax.core.names import HEADLINE_METRICS
from cryptorl_jax.core.rundir import REGISTRY, RunDir
from cryptorl_jax.report.registry import read_registry, runs_over_window
from cryptorl_jax.report.runs import Run
from cryptorl_jax.report.verdict import verdict

COLUMNS = ("run", "OOS window", "Sharpe", "DSR", "flags", "verdict", "config", "date")


def written_verdict(run: Run) -> tuple[bool, str]:
    """(edge?, the verdict paragraph) of a finished run, from its written metrics.csv `all`
    row and diagnostics.csv flags (`report.verdict.verdict` with N = the row's n_trials)."""
    agg = run.headline
    n = agg.get("n_trials")
    n_runs = int(n) if isinstance(n, (int, float)) and math.isfinite(n) and n >= 1 else 1
    return verdict(agg, run.flags, n_runs)


def verdict_sentence(paragraph: str) -> str:
    """The paragraph's first sentence without its Markdown: 'No evidence of an edge.'."""
    bold = re.match(r"\s*\*\*(.+?)\*\*", paragraph)
    if bold:
        return bold.group(1).strip()
    first = re.match(r"\s*(.+?[.!?])(\s|$)", paragraph)
    return first.group(1) if first else paragraph.strip()


def plain(paragraph: str) -> str:
    """A report paragraph as terminal text (no ** or backticks)."""
    return paragraph.replace("**", "").replace("`", "")


def headline(run: Run) -> pd.Series:
    """The HEADLINE_METRICS of the stitched OOS series (metrics.csv's `all` row)."""
    agg = run.headline
    return pd.Series({k: _float(agg.get(k)) for k in HEADLINE_METRICS if k in agg},
                     name=run.path.name)


def sharpe_text(value: Any) -> str:
    """An annual Sharpe as text; 'flat' when undefined (no variance: no position was held)."""
    v = _float(value)
    return "flat" if not math.isfinite(v) else f"{v:.2f}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _date(text: Any) -> str | None:
    """An ISO time as 'YYYY-MM-DD HH:MM' (UTC); None when missing."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M")


def _is_run_dir(path: Path) -> bool:
    rd = RunDir(path)
    return path.is_dir() and (rd.config.is_file() or rd.config_digest.is_file()
                              or bool(rd.segment_dirs()))


def _dir_row(path: Path) -> dict[str, Any]:
    """One run directory's row from its own files (status says what is missing)."""
    rd = RunDir(path)
    digest = rd.config_digest.read_text().strip() if rd.config_digest.is_file() else None
    info: dict[str, Any] = {}
    if rd.run_info.is_file():
        try:
            info = json.loads(rd.run_info.read_text())
        except (OSError, ValueError):
            info = {}
    row: dict[str, Any] = {"name": path.name, "path": str(path), "config_digest": digest,
                           "date": _date(info.get("finished") or info.get("started")),
                           "registered": False}
    missing = rd.missing_for_load()
    if missing:
        done = len(rd.finished_segments())
        row["status"] = (f"unfinished: {done} segment(s) done, no report" if done
                         else "unfinished: no segment done")
        return row
    run = Run(path)
    try:
        agg = run.headline
        yes, paragraph = written_verdict(run)
        flags = run.flags
    except (OSError, ValueError, KeyError) as exc:
        row["status"] = f"unreadable report ({type(exc).__name__}: {exc})"
        return row
    if row["date"] is None:
        mtime = dt.datetime.fromtimestamp(rd.metrics.stat().st_mtime, dt.UTC)
        row["date"] = mtime.strftime("%Y-%m-%d %H:%M")
    row.update({"oos_start": str(agg.get("start")), "oos_end": str(agg.get("end")),
                "oos_hours": _int(agg.get("n_periods")), "sharpe": _float(agg.get("sharpe")),
                "dsr": _float(agg.get("dsr")), "n_runs_over_window": _int(agg.get("n_trials")),
                "flags": flags, "edge": yes, "verdict": verdict_sentence(paragraph),
                "status": "reported", "report": str(rd.report) if rd.report.is_file() else None})
    return row


def _int(value: Any) -> int | None:
    v = _float(value)
    return int(v) if math.isfinite(v) else None


def _record_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A registered run whose directory is not in the output directory: the record alone."""
    sr = None if rec.get("flat") else _float(rec.get("sharpe"))
    return {"name": rec.get("run_name") or "?", "path": rec.get("run_dir"),
            "config_digest": rec.get("config_digest"), "date": _date(rec.get("updated")),
            "registered": True, "oos_start": rec.get("oos_start"), "oos_end": rec.get("oos_end"),
            "oos_hours": rec.get("n_hours"), "sharpe": math.nan if sr is None else sr,
            "status": "registered; its directory is not here"}


def _same_dir(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


def list_runs(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every run of an output directory: the runs registered in its runs.jsonl and every run
    directory in it (a folder with config.yaml, config.digest or segment_<k>/), one row each,
    oldest first. A row: name, path, oos_start, oos_end, oos_hours, sharpe, dsr, flags, edge,
    verdict (the verdict's first sentence), n_runs_over_window (the report's N) and
    n_runs_now (the registry's N today), config_digest, date (the registry's or the run's last
    invocation's, UTC), registered, status ('reported', 'unfinished: ...',
    'registered; its directory is not here'); what a row lacks is missing or None."""
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such directory (an output directory, e.g. results)")
    records = read_registry(out / REGISTRY)
    dirs = sorted(p for p in out.iterdir() if _is_run_dir(p))
    rows, used = [], set()
    for path in dirs:
        row = _dir_row(path)
        match = next((i for i, r in enumerate(records)
                      if i not in used and _same_dir(r.get("run_dir"), path)), None)
        if match is None:  # a moved output directory: the same name and config
            match = next((i for i, r in enumerate(records) if i not in used
                          and r.get("run_name") == path.name
                          and r.get("config_digest") == row["config_digest"]), None)
        if match is not None:
            used.add(match)
            rec = records[match]
            row["registered"] = True
            row["date"] = _date(rec.get("updated")) or row["date"]
            # the report's N (n_runs_over_window) was counted when it was written: later runs
            # over the same window raise it (cryptorl wfo --report-only recounts)
            row["n_runs_now"] = runs_over_window(records, rec["oos_start"], rec["oos_end"],
                                                 rec.get("market")).n_runs
        rows.append(row)
    rows += [_record_row(r) for i, r in enumerate(records) if i not in used]
    return sorted(rows, key=lambda r: (r.get("date") or "", r["name"]))


def _window(row: dict[str, Any]) -> str:
    start, end = row.get("oos_start"), row.get("oos_end")
    if not start or not end:
        return "-"
    try:
        a, b = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError:
        return f"{start} .. {end}"
    spec = "%Y-%m-%d" if a.hour == 0 and b.hour == 23 else "%Y-%m-%d %H:%M"
    return f"{a.strftime(spec)} .. {b.strftime(spec)}"


def table_cells(row: dict[str, Any]) -> list[str]:
    """A row's cells under COLUMNS (the verdict column holds the status of a row without one)."""
    reported = row.get("status") == "reported"
    dsr = _float(row.get("dsr"))
    return [row["name"], _window(row),
            sharpe_text(row.get("sharpe")) if "sharpe" in row else "-",
            f"{dsr:.3f}" if math.isfinite(dsr) else "-",
            ", ".join(row.get("flags") or []) or ("none" if reported else "-"),
            row["verdict"] if reported else row["status"],
            (row.get("config_digest") or "-")[:12], row.get("date") or "-"]


def runs_text(rows: list[dict[str, Any]]) -> str:
    """The rows as a terminal table under COLUMNS."""
    cells = [list(COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in cells)


def runs_json(rows: list[dict[str, Any]]) -> str:
    """The rows as JSON (NaN as null)."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps([{k: clean(v) for k, v in r.items()} for r in rows], indent=2)


def show_text(run: Run, width: int = 100) -> str:
    """One finished run for the terminal: where and what it covers, the verdict paragraph,
    the headline table (HEADLINE_METRICS of metrics.csv's `all` row), PSR / DSR / timing p,
    the flags and where report.html is."""
    import textwrap

    agg = run.headline
    _, paragraph = written_verdict(run)
    digest = (run.dir.config_digest.read_text().strip() if run.dir.config_digest.is_file()
              else None)
    head = headline(run)
    names = list(head.index)
    w = max(map(len, names))
    n = _int(agg.get("n_trials"))
    stats = (f"PSR {_stat(agg.get('psr'))}, DSR {_stat(agg.get('dsr'))} (N = {n or 1} run(s) "
             f"registered over this window), timing p {_stat(agg.get('timing_p_value'))}")
    lines = [f"{run.path.name}  ({run.path})",
             f"OOS {agg.get('start')} .. {agg.get('end')}: {_int(agg.get('n_periods'))} hours "
             f"in {len(run.segment_numbers)} segment(s)"
             + (f"; config {digest}" if digest else ""),
             "", textwrap.fill("Verdict: " + plain(paragraph), width), "",
             "Headline (stitched OOS, annualised at 8,760 hours):"]
    lines += [f"  {name.ljust(w)}  {_value(k, v)}" for name, (k, v) in zip(names, head.items())]
    lines += ["", stats, "flags: " + (", ".join(run.flags) or "none"),
              "report: " + (str(run.dir.report) if run.dir.report.is_file()
                            else f"not written ({run.dir.report} is missing)")]
    return "\n".join(lines)


def _stat(value: Any) -> str:
    v = _float(value)
    return f"{v:.3f}" if math.isfinite(v) else "undefined"


def _value(key: str, value: float) -> str:
    if not math.isfinite(value):
        return "undefined (flat: no position held)" if key == "sharpe" else "undefined"
    return f"{value:.4g}"
