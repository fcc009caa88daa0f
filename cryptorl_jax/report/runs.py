"""Finished runs as objects: load one, compare several.

    from cryptorl_jax.report import Run, compare_runs
    run = Run.load("results/quick")
    run.metrics            # per segment (0, 1, ...) + "all" (the stitched OOS series)
    run.metrics.loc[0], run.metrics.loc["all"]
    run.verdict            # Verdict(edge=False, text="**No evidence of an edge.** ...")
    run.oos                # the stitched hourly OOS frame (strategy, seeds, baselines, ...)
    run.diagnostics        # in-sample vs OOS Sharpe, turnover split, flags per segment
    run.plot_equity()
    cmp = compare_runs(["results/study-none", "results/study-pretrained"])
    cmp.table              # one row per run: stitched-OOS metrics, PSR, DSR over the runs

Every per-segment table of a run is keyed by the segment's integer (metrics, diagnostics, power,
segments, insample, history), and metrics, diagnostics and power have an `"all"` row, the
stitched OOS series; the CSV files keep their text labels. Reading a run touches only its files
(core.rundir.RunDir): nothing here imports JAX, so loading a finished run compiles nothing. The
comparison requires the runs to cover the same OOS hours; its Deflated Sharpe counts exactly the
runs compared (N = len(paths)), which is the honest N when these runs are the candidates a
researcher picks the best of. The output directory's run registry (report.registry) may know of
more runs over the window: `Run.metrics`' own DSR counts those.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.columns import fitted_baselines
from cryptorl_jax.backtest.diagnostics import flags_in
from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe,
)
from cryptorl_jax.config import Config, load_config
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.names import PERFORMANCE_METRICS, POSITION_METRICS
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.report.markdown import markdown_table
from cryptorl_jax.report.plots import naive_utc, nav_axes, save_nav_plot
from cryptorl_jax.report.read import segment_diagnostics
from cryptorl_jax.report.tearsheet import write_returns_tearsheet, write_tearsheet
from cryptorl_jax.report.verdict import Verdict
from cryptorl_jax.report.verdict import verdict as verdict_of

TABLE_COLUMNS = (*PERFORMANCE_METRICS, *POSITION_METRICS, "cost_per_year", "financing_per_year",
                 "psr", "dsr_compared", "timing_p_value", "seed_sharpe_mean", "seed_sharpe_std",
                 "n_seeds", "n_segments", "oos_hours")


class NotARunError(FileNotFoundError):
    """The folder is not a finished walk-forward run (the message names what is missing)."""


STITCHED = "all"
"""The label of the stitched OOS row in a run's per-segment tables."""


def segment_label(label: Any) -> int | str:
    """A per-segment table's row label as `Run` keys it: the segment's int, or 'all'."""
    text = str(label).strip()
    if text == STITCHED:
        return STITCHED
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"a segment label must be an integer or '{STITCHED}', got "
                         f"{label!r}") from None


def by_segment(frame: pd.DataFrame, source: Path | str) -> pd.DataFrame:
    """`frame` (indexed by the CSV's text labels '0', '1', ..., 'all') re-indexed by
    `segment_label`; a ValueError naming `source` for a label that is neither."""
    try:
        labels = [segment_label(k) for k in frame.index]
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    out = frame.copy()
    out.index = pd.Index(labels, dtype=object, name=frame.index.name or "segment")
    return out


class Run:
    """A finished walk-forward run directory, read lazily (each property reads its file once)."""

    def __init__(self, path: str | Path):
        self.dir = RunDir(path)
        self.path = self.dir.path

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """The run in `path`; NotARunError naming what is missing if it is not a finished run."""
        run_dir = RunDir(path)
        missing = run_dir.missing_for_load()
        if missing:
            raise NotARunError(f"{run_dir.path} is not a finished walk-forward run: missing "
                               + ", ".join(missing))
        return cls(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, segments={self.segment_numbers})"

    @functools.cached_property
    def config(self) -> Config:
        return load_config(self.dir.config)

    @property
    def name(self) -> str:
        return self.config.run_name

    @functools.cached_property
    def segment_numbers(self) -> list[int]:
        return self.dir.finished_segments()

    @functools.cached_property
    def oos(self) -> pd.DataFrame:
        """The stitched hourly OOS frame: strategy (ensemble, 1x costs), its 2x / 0x cost
        replays, seed_<i>, the baselines, benchmark, exposure, turnover, charges, segment."""
        return pd.read_parquet(self.dir.oos)

    @functools.cached_property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv indexed by segment: 0, 1, ... and 'all' (the stitched OOS series);
        `run.metrics.loc[0]`, `run.metrics.loc['all']`. Units: `core.dictionary`."""
        frame = pd.read_csv(self.dir.metrics, dtype={"segment": str}).set_index("segment")
        return by_segment(frame, self.dir.metrics)

    @property
    def headline(self) -> dict[str, Any]:
        """The `all` row of `metrics`: the stitched OOS series' figures."""
        return self.metrics.loc[STITCHED].to_dict()

    @functools.cached_property
    def verdict(self) -> Verdict:
        """The verdict summary.md opens with (`report.verdict.verdict`), from metrics.csv's
        `all` row (N = its n_trials) and diagnostics.csv's flags: `.edge` and `.text`."""
        head = self.headline
        n = head.get("n_trials")
        try:
            n_runs = int(n) if n is not None and math.isfinite(float(n)) else 1
        except (TypeError, ValueError):
            n_runs = 1
        yes, text = verdict_of(head, self.flags, n_runs)
        return Verdict(edge=yes, text=text)

    @functools.cached_property
    def comparison(self) -> pd.DataFrame:
        """comparison.csv: the strategy, its cost variants, each seed and the baselines."""
        return pd.read_csv(self.dir.comparison, index_col=0)

    @property
    def baselines(self) -> pd.DataFrame:
        """baselines.csv: the ensemble and each baseline that reads the market, with PSR,
        timing null, cost stress and each segment's chosen setting (empty for runs without)."""
        p = self.dir.baselines
        return pd.read_csv(p, index_col=0) if p.is_file() else pd.DataFrame()

    @property
    def multiple_testing(self) -> pd.DataFrame:
        """multiple_testing.csv: SPA and StepM against buy & hold and against flat."""
        p = self.dir.multiple_testing
        return pd.read_csv(p, index_col=0) if p.is_file() else pd.DataFrame()

    @property
    def power(self) -> pd.DataFrame:
        """power.csv: the minimum detectable Sharpe per segment (0, 1, ...) and stitched
        ('all')."""
        p = self.dir.power
        if not p.is_file():
            return pd.DataFrame()
        return by_segment(pd.read_csv(p, dtype={"segment": str}).set_index("segment"), p)

    @functools.cached_property
    def diagnostics(self) -> pd.DataFrame:
        """diagnostics.csv indexed by segment (0, 1, ..., 'all'): OOS and in-sample Sharpe (the
        agents over their own train rows) and their gap, turnover per year and per unit of
        exposure, the mechanical share of turnover, action dispersion, correlation with buy &
        hold, long share and the flags (backtest.diagnostics). Rebuilt from the segments'
        frames for a run whose report predates it."""
        if self.dir.diagnostics.is_file():
            frame = pd.read_csv(self.dir.diagnostics, dtype={"segment": str},
                                keep_default_na=False, na_values=[""])
            frame["flags"] = frame["flags"].fillna("").astype(str)
            return by_segment(frame.set_index("segment"), self.dir.diagnostics)
        return by_segment(segment_diagnostics(self.dir, self.oos, self.segment_numbers),
                          self.dir.path)

    @property
    def flags(self) -> list[str]:
        """The run's flags on its stitched OOS series (e.g. ['memorised'])."""
        return flags_in(self.diagnostics)

    @functools.cached_property
    def insample(self) -> dict[int, pd.DataFrame]:
        """Each segment's backtest over its own train rows (insample.parquet), by segment."""
        return {k: pd.read_parquet(self.dir.segment(k).insample) for k in self.segment_numbers
                if self.dir.segment(k).insample.is_file()}

    @functools.cached_property
    def segments(self) -> pd.DataFrame:
        """One row per finished segment: train / test periods and rows, OOS Sharpe, env steps,
        the final entropy coefficient and policy entropy, timings and memory (the DONE
        records)."""
        rows = []
        for k in self.segment_numbers:
            meta = self.dir.segment(k).done_meta()
            row = {key: meta.get(key) for key in ("segment", "sharpe", "insample_sharpe",
                                                  "env_steps")}
            for key in ("train_period", "test_period", "train_rows", "test_rows"):
                if key in meta:
                    row[f"{key}_start"], row[f"{key}_end"] = meta[key]
            entropy = meta.get("entropy") or {}
            for key in ("final_alpha", "final_entropy", "entropy_reached_target"):
                if key in entropy:
                    row[key] = entropy[key]
            row.update(meta.get("timings", {}))
            rows.append(row)
        return pd.DataFrame(rows).set_index("segment")

    @functools.cached_property
    def history(self) -> dict[int, list[dict[str, Any]]]:
        """Training curves per segment: train_history.json's chunk records."""
        out = {}
        for k in self.segment_numbers:
            p = self.dir.segment(k).train_history
            out[k] = json.loads(p.read_text()) if p.is_file() else []
        return out

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        """run_info.json (provenance); {} for a run written before it was recorded."""
        return json.loads(self.dir.run_info.read_text()) if self.dir.run_info.is_file() else {}

    @property
    def window(self) -> tuple[pd.Timestamp, pd.Timestamp, int]:
        """(first OOS hour, last OOS hour, number of hours)."""
        return self.oos.index[0], self.oos.index[-1], len(self.oos)

    def plot_equity(self, ax=None, *, label: str | None = None, benchmark: bool = True):
        """Cumulative NAV of the strategy (and BTC buy & hold) on `ax` (a new figure if None)."""
        ax = nav_axes((11, 5)) if ax is None else ax
        idx = naive_utc(self.oos.index)
        ax.plot(idx, np.cumprod(1 + self.oos["strategy"].to_numpy()), lw=1.5,
                label=label or self.name)
        if benchmark:
            ax.plot(idx, np.cumprod(1 + self.oos["benchmark"].to_numpy()), color="black",
                    lw=1.0, label="BTC buy & hold")
        ax.legend(loc="upper left", fontsize=8)
        return ax

    def tearsheet(self, path: str | Path) -> Path:
        """A quantstats tearsheet of the stitched OOS strategy against BTC buy & hold."""
        path = Path(path)
        err = write_tearsheet(self.oos, path, f"{self.name}: walk-forward OOS")
        if err is not None:
            raise RuntimeError(f"tearsheet {path} not written: {err}")
        return path


# --------------------------------------------------------------------------------------------
# Comparing runs
# --------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per run (index: label)
    # the baselines over the common window, from the first run's frame (the fitted ones read
    # the segments' features: identical for runs that differ only in the agent)
    baselines: pd.DataFrame
    returns: pd.DataFrame  # hourly strategy returns, one column per run
    runs: dict[str, Run]
    n_runs: int
    sr_variance: float  # of the runs' per-period Sharpes
    expected_max_sharpe: float  # annualised: E[max of N unskilled Sharpes]


def _labels(runs: list[Run], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        out = list(labels)
    else:
        out = [r.name for r in runs]
        if len(set(out)) < len(out):  # two runs with one run_name: use the folder
            out = [str(r.path) for r in runs]
    if len(set(out)) < len(out):
        raise ValueError(f"the runs' labels are not distinct: {out}")
    return out


def check_same_window(runs: list[Run], labels: list[str]) -> None:
    """ValueError naming the runs whose OOS hours differ from the first run's."""
    first = runs[0].oos.index
    bad = []
    for run, label in zip(runs[1:], labels[1:]):
        idx = run.oos.index
        if len(idx) != len(first) or not idx.equals(first):
            bad.append(f"{label} ({run.path}): {idx[0]} .. {idx[-1]}, {len(idx)} h")
    if bad:
        raise ValueError(
            f"the runs do not cover the same OOS hours, so their Sharpes cannot be compared or "
            f"deflated together: {labels[0]} ({runs[0].path}) covers {first[0]} .. {first[-1]}, "
            f"{len(first)} h; " + "; ".join(bad))


def compare_runs(paths: list[str | Path], labels: list[str] | None = None) -> Comparison:
    """The stitched-OOS figures of finished runs side by side, with each run's PSR and the
    Deflated Sharpe over the N runs compared (same OOS window required)."""
    if not paths:
        raise ValueError("compare_runs: no run given")
    runs = [Run.load(p) for p in paths]
    names = _labels(runs, labels)
    check_same_window(runs, names)
    returns = pd.DataFrame({n: r.oos["strategy"].to_numpy(np.float64)
                            for n, r in zip(names, runs)}, index=runs[0].oos.index)
    per_period = np.array([sharpe(returns[n].to_numpy(), 1.0) for n in names])
    per_period[~np.isfinite(per_period)] = 0.0  # a flat book counts as 0 (report.registry)
    n = len(names)
    var = float(np.var(per_period, ddof=1)) if n > 1 else 0.0
    emax = 0.0 if n <= 1 else expected_max_sharpe(n, var)
    rows = {}
    for name, run in zip(names, runs):
        head = run.headline
        row = {k: float(head[k]) if k in head else math.nan for k in TABLE_COLUMNS}
        r = returns[name].to_numpy()
        row["psr"] = probabilistic_sharpe(r)
        row["dsr_compared"] = (probabilistic_sharpe(r, emax) if math.isfinite(emax)
                               else math.nan)
        seeds = [c for c in run.comparison.index if str(c).startswith("seed_")]
        seed_sr = run.comparison.loc[seeds, "sharpe"].astype(float) if seeds else pd.Series([])
        row["n_seeds"] = float(len(seeds))
        row["seed_sharpe_mean"] = float(seed_sr.mean()) if len(seeds) else math.nan
        row["seed_sharpe_std"] = float(seed_sr.std(ddof=1)) if len(seeds) > 1 else math.nan
        row["n_segments"] = float(len(run.segment_numbers))
        row["oos_hours"] = float(len(r))
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")[list(TABLE_COLUMNS)]
    table.index.name = "run"
    oos = runs[0].oos
    base_cols = [c for c in (*fitted_baselines(oos), "buy_and_hold",
                             "vol_targeted_buy_and_hold", "flat", "random", "benchmark")
                 if c in oos.columns]
    baselines = pd.DataFrame.from_dict(
        {c: compute_metrics(oos[c], oos["benchmark"], HOURS_PER_YEAR,
                            **({"exposure": oos[f"{c}_exposure"], "turnover": oos[f"{c}_turnover"]}
                               if f"{c}_turnover" in oos.columns else {}))
         for c in base_cols}, orient="index")
    baselines.index.name = "baseline"
    return Comparison(table=table, baselines=baselines, returns=returns,
                      runs=dict(zip(names, runs)), n_runs=n, sr_variance=var,
                      expected_max_sharpe=emax * math.sqrt(HOURS_PER_YEAR))


def plot_compared(cmp: Comparison, path: Path, title: str) -> None:
    """The runs' equity curves overlaid, with BTC buy & hold, log scale."""
    ax = nav_axes()
    idx = naive_utc(cmp.returns.index)
    for name in cmp.returns.columns:
        ax.plot(idx, np.cumprod(1 + cmp.returns[name].to_numpy()), lw=1.4, label=name)
    bench = next(iter(cmp.runs.values())).oos["benchmark"].to_numpy()
    ax.plot(idx, np.cumprod(1 + bench), color="black", lw=1.0, label="BTC buy & hold")
    save_nav_plot(ax, path, title)


def write_multi_tearsheet(cmp: Comparison, path: Path, title: str) -> str | None:
    """One quantstats tearsheet with every run as a strategy column; None if written."""
    return write_returns_tearsheet(cmp.returns, next(iter(cmp.runs.values())).oos["benchmark"],
                                   path, title)


def write_comparison(paths: list[str | Path], out_dir: str | Path,
                     labels: list[str] | None = None, title: str | None = None,
                     tearsheet: bool = True) -> Comparison:
    """compare_runs, written to out_dir: comparison.csv / .md, equity.png, tearsheet.html."""
    cmp = compare_runs(paths, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "comparison: " + ", ".join(cmp.table.index)
    write_atomic(out / "comparison.csv", cmp.table.to_csv())
    write_atomic(out / "baselines.csv", cmp.baselines.to_csv())
    plot_compared(cmp, out / "equity.png", title)
    err = write_multi_tearsheet(cmp, out / "tearsheet.html", title) if tearsheet else None
    write_atomic(out / "comparison.md", comparison_markdown(cmp, title, err))
    return cmp


def comparison_markdown(cmp: Comparison, title: str, tearsheet_error: str | None = None) -> str:
    first = next(iter(cmp.runs.values()))
    start, end, hours = first.window
    lines = [f"# {title}", "",
             f"{cmp.n_runs} runs over the same {hours} OOS hours ({start} .. {end}).", "",
             markdown_table(cmp.table[["total_return", "sharpe", "max_drawdown", "turnover",
                                       "psr", "dsr_compared", "timing_p_value",
                                       "seed_sharpe_mean", "seed_sharpe_std"]], ".3g"), "",
             f"`dsr_compared` deflates each run's Sharpe by the expected maximum of "
             f"{cmp.n_runs} unskilled Sharpes ({cmp.expected_max_sharpe:.2f} annualised, from "
             f"the variance of these runs' Sharpes), i.e. it charges for having picked the best "
             "of the runs compared.", "",
             "## Baselines over the same hours", "",
             markdown_table(cmp.baselines[["total_return", "sharpe", "max_drawdown"]], ".3g"),
             "",
             "## Runs", ""]
    for name, run in cmp.runs.items():
        sha = (run.info.get("git") or {}).get("sha")
        lines.append(f"- {name}: `{run.path}` (config {run.dir.config_digest.read_text().strip()}"
                     f"{', commit ' + sha[:10] if sha else ''})"
                     if run.dir.config_digest.is_file() else f"- {name}: `{run.path}`")
    files = ["comparison.csv", "baselines.csv", "equity.png",
             "tearsheet.html" if tearsheet_error is None else
             f"tearsheet.html NOT written ({tearsheet_error})"]
    lines += ["", "Files: " + ", ".join(files), ""]
    return "\n".join(lines)
