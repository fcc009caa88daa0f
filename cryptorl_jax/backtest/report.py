"""The walk-forward report under results/<run_name>/ (DESIGN.md, "Outputs of a WFO run").

Built only from the finished segments (those with a DONE marker), so it can be rebuilt at any
time (`scripts/wfo.py --report-only`) and by concurrent processes: every file is written to a
temp file and renamed into place.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    deflated_sharpe,
    probabilistic_sharpe,
)
from cryptorl_jax.config import Config
from cryptorl_jax.io import write_atomic, write_parquet

log = logging.getLogger("cryptorl_jax.report")

PERIODS = 8760
BASELINE_COLUMNS = ("buy_and_hold", "vol_targeted_buy_and_hold", "flat", "random")
HEADLINE = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
            "volatility", "hit_rate")


def finished_segments(workdir: Path) -> list[int]:
    out = []
    for p in Path(workdir).glob("segment_*"):
        if p.is_dir() and (p / "DONE").is_file():
            try:
                out.append(int(p.name.split("_", 1)[1]))
            except ValueError:
                continue
    return sorted(out)


def stitch(workdir: Path, segments: list[int]) -> pd.DataFrame:
    """The per-segment OOS frames in order, with a `segment` column."""
    frames = []
    for k in segments:
        f = pd.read_parquet(Path(workdir) / f"segment_{k}" / "oos.parquet")
        f["segment"] = k
        frames.append(f)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames)
    if not out.index.is_monotonic_increasing or out.index.has_duplicates:
        raise ValueError(f"{workdir}: the segments' OOS windows overlap or are out of order")
    return out


def read_trial_log(path: str | None, workdir: Path) -> tuple[int, float, str]:
    """(n_trials, variance of per-period trial Sharpes, source) for the Deflated Sharpe."""
    if not path:
        return 1, 0.0, "no tuning trial log (wfo.trial_log unset): one configuration tried"
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = Path(workdir) / p
    if not p.is_file():
        raise FileNotFoundError(f"wfo.trial_log: {p} does not exist")
    values = []
    n = 0
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("state", "COMPLETE") not in ("COMPLETE", "PRUNED"):
            continue
        n += 1
        # walkforward.tune writes "sharpe" (annualised) whatever tune.metric the value is
        v = rec["sharpe"] if "sharpe" in rec else rec.get("value")
        if v is not None and rec.get("state", "COMPLETE") == "COMPLETE" and math.isfinite(v):
            values.append(float(v) / math.sqrt(PERIODS))  # annualised -> per period
    var = float(np.var(values, ddof=1)) if len(values) > 1 else 0.0
    return max(n, 1), var, str(p)


def metrics_table(oos: pd.DataFrame, segments: list[int], n_trials: int, sr_var: float
                  ) -> pd.DataFrame:
    """One row per segment plus `all` (the stitched series), compute_metrics' columns."""
    rows = []
    for k in segments:
        part = oos[oos["segment"] == k]
        m = compute_metrics(part["strategy"], part["benchmark"], PERIODS,
                            exposure=part["exposure"], turnover=part["turnover"])
        m["psr"] = probabilistic_sharpe(part["strategy"])
        rows.append({"segment": str(k), "start": str(part.index[0]),
                     "end": str(part.index[-1]), **m})
    if segments:
        m = compute_metrics(oos["strategy"], oos["benchmark"], PERIODS,
                            exposure=oos["exposure"], turnover=oos["turnover"])
        m["psr"] = probabilistic_sharpe(oos["strategy"])
        m["dsr"] = deflated_sharpe(oos["strategy"], n_trials, sr_var)
        m["n_trials"] = float(n_trials)
        rows.append({"segment": "all", "start": str(oos.index[0]), "end": str(oos.index[-1]),
                     **m})
    return pd.DataFrame(rows)


def comparison_table(oos: pd.DataFrame) -> pd.DataFrame:
    """Aggregate metrics of the strategy, its cost variants, each seed and the baselines."""
    names = ["strategy", "strategy_2x_cost", "strategy_zero_cost",
             *[c for c in oos.columns if c.startswith("seed_")], *BASELINE_COLUMNS,
             "benchmark"]
    rows = {n: compute_metrics(oos[n], oos["benchmark"], PERIODS) for n in names
            if n in oos.columns}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "series"
    return frame


def plot_equity(oos: pd.DataFrame, segments: list[int], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    idx = oos.index.tz_convert("UTC").tz_localize(None)
    for c in [c for c in oos.columns if c.startswith("seed_")]:
        ax.plot(idx, np.cumprod(1 + oos[c].to_numpy()), color="tab:blue", alpha=0.25, lw=0.7)
    styles = {"strategy": ("tab:blue", 2.0, "strategy (ensemble)"),
              "benchmark": ("black", 1.2, "BTC buy & hold"),
              "vol_targeted_buy_and_hold": ("tab:orange", 1.0, "vol-targeted buy & hold"),
              "random": ("tab:gray", 0.8, "random policy"),
              "strategy_2x_cost": ("tab:red", 0.8, "strategy at 2x costs")}
    for c, (color, lw, label) in styles.items():
        if c in oos.columns:
            ax.plot(idx, np.cumprod(1 + oos[c].to_numpy()), color=color, lw=lw, label=label)
    for k in segments:
        first = oos.index[oos["segment"] == k][0]
        ax.axvline(first.tz_convert("UTC").tz_localize(None), color="k", ls=":", lw=0.6)
    ax.set_yscale("log")
    ax.set_ylabel("NAV (log scale, 1 at the first OOS hour)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def write_tearsheet(oos: pd.DataFrame, path: Path, title: str) -> str | None:
    """quantstats HTML tearsheet (strategy vs BTC buy-and-hold, 8,760 periods); None if ok."""
    import warnings

    try:
        import quantstats as qs

        strat = oos["strategy"].copy()
        bench = oos["benchmark"].copy()
        strat.index = strat.index.tz_convert("UTC").tz_localize(None)
        bench.index = strat.index
        strat.name, bench.name = "strategy", "BTC buy & hold"
        tmp = path.with_name(f".{path.name}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qs.reports.html(strat, bench, periods_per_year=PERIODS, output=str(tmp),
                            title=title, download_filename=path.name)
        tmp.replace(path)
        return None
    except Exception as exc:  # the report stays usable without the tearsheet
        log.warning("tearsheet not written: %s: %s", type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"


def _fmt_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([frame.index.name or "", *cols]) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("nan" if not np.isfinite(v) else format(float(v), floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def _stationarity_summary(workdir: Path, segments: list[int]) -> pd.DataFrame | None:
    tables = []
    for k in segments:
        p = Path(workdir) / f"segment_{k}" / "stationarity.csv"
        if p.exists():
            tables.append(pd.read_csv(p, index_col=0))
    if not tables:
        return None
    pvals = pd.concat([t["p_value"] for t in tables], axis=1)
    stationary = pd.concat([t["stationary"].astype(bool) for t in tables], axis=1)
    out = pd.DataFrame({"median_p_value": pvals.median(axis=1),
                        "stationary_share": stationary.mean(axis=1)})
    out.index.name = "feature (ADF on train rows)"
    return out.sort_values("median_p_value")


def write_report(cfg: Config, workdir: str | Path) -> dict[str, Any]:
    """Rebuild every aggregate output from the finished segments; returns a small summary."""
    workdir = Path(workdir)
    segments = finished_segments(workdir)
    if not segments:
        log.warning("report: no finished segment in %s", workdir)
        return {"segments": []}
    oos = stitch(workdir, segments)
    n_trials, sr_var, trial_source = read_trial_log(cfg.wfo.trial_log, workdir)
    write_parquet(workdir / "oos_returns.parquet", oos)
    table = metrics_table(oos, segments, n_trials, sr_var)
    write_atomic(workdir / "metrics.csv", table.to_csv(index=False))
    comparison = comparison_table(oos)
    write_atomic(workdir / "comparison.csv", comparison.to_csv())
    gaps = _gaps(oos)
    title = f"{cfg.run_name}: walk-forward OOS, {len(segments)} segments"
    tearsheet_error = None
    if cfg.output.plots:
        plot_equity(oos, segments, workdir / "equity_curve.png", title)
    if cfg.output.tearsheet:
        tearsheet_error = write_tearsheet(oos, workdir / "tearsheet.html", title)
    write_atomic(workdir / "summary.md", _summary_md(cfg, workdir, segments, oos, table, comparison,
                                                gaps, n_trials, trial_source,
                                                tearsheet_error))
    agg = table[table["segment"] == "all"].iloc[0].to_dict()
    return {"segments": segments, "sharpe": agg["sharpe"], "total_return": agg["total_return"],
            "dsr": agg.get("dsr"), "gaps": gaps}


def _gaps(oos: pd.DataFrame) -> list[str]:
    """Where the stitched OOS index is not one hour apart (missing segments)."""
    steps = np.diff(oos.index.as_unit("ns").asi8)
    bad = np.flatnonzero(steps != 3600 * 10**9)
    return [f"{oos.index[i]} -> {oos.index[i + 1]}" for i in bad]


def _summary_md(cfg: Config, workdir: Path, segments: list[int], oos: pd.DataFrame,
                table: pd.DataFrame, comparison: pd.DataFrame, gaps: list[str], n_trials: int,
                trial_source: str, tearsheet_error: str | None) -> str:
    agg = table[table["segment"] == "all"].iloc[0]
    contiguity = "contiguous" if not gaps else "NOT contiguous: " + "; ".join(gaps)
    lines = [f"# Walk-forward report: {cfg.run_name}", "",
             f"- segments finished: {segments}; OOS hours: {len(oos)} "
             f"({oos.index[0]} .. {oos.index[-1]})",
             f"- the OOS series is {contiguity}",
             f"- strategy = ensemble-mean action of {cfg.train.n_seeds} seed(s), "
             f"encoder mode `{cfg.encoder.mode}`, costs {cfg.env.fee_bps} + "
             f"{cfg.env.slippage_bps} bps per unit of turnover",
             f"- Probabilistic Sharpe (P[SR > 0]): {agg['psr']:.3f}; Deflated Sharpe with "
             f"N = {n_trials} trial(s): {agg['dsr']:.3f} ({trial_source})",
             "", "## Headline (stitched OOS, annualised at 8,760 hours)", "",
             _fmt_table(comparison[[c for c in HEADLINE if c in comparison.columns]]), "",
             "## Per segment (strategy)", "",
             _fmt_table(table.set_index("segment")[["start", "end", "total_return", "sharpe",
                                                    "max_drawdown", "excess_return", "beta",
                                                    "alpha", "turnover", "exposure", "psr"]]),
             ""]
    regime_rows = []
    for k in segments:
        p = workdir / f"segment_{k}" / "regime_stats.json"
        if p.exists():
            stats = json.loads(p.read_text())
            for s in stats["states"]:
                regime_rows.append({"segment": k, "state": s["state"],
                                    "volatility": s["volatility"],
                                    "duration_h": s["expected_duration_h"],
                                    "stationary_prob": s["stationary_prob"],
                                    **{f"mean {c}": v for c, v in s["mean"].items()}})
    if regime_rows:
        lines += ["## Fitted regimes (HMM on train rows; state 0 = calmest)", "",
                  _fmt_table(pd.DataFrame(regime_rows).set_index("segment")), ""]
    rm = []
    for k in segments:
        p = workdir / f"segment_{k}" / "regime_metrics.csv"
        if p.exists():
            f = pd.read_csv(p)
            f.insert(0, "segment", k)
            rm.append(f)
    if rm:
        frame = pd.concat(rm).set_index("segment")
        lines += ["## OOS performance by filtered regime", "",
                  _fmt_table(frame[["regime", "share_of_hours", "total_return", "sharpe",
                                    "max_drawdown"]]), ""]
    enc_rows = []
    for k in segments:
        p = workdir / f"segment_{k}" / "encoder_report.json"
        if p.exists():
            r = json.loads(p.read_text())
            if "val_mse" in r:
                enc_rows.append({"segment": k, "val_mse": r["val_mse"],
                                 "window_mean_mse": r["window_mean_mse"],
                                 "last_value_mse": r["last_value_mse"],
                                 "epochs": r["epochs_run"]})
    if enc_rows:
        lines += ["## MAE encoder: validation masked-token MSE vs baselines", "",
                  _fmt_table(pd.DataFrame(enc_rows).set_index("segment")), ""]
    st = _stationarity_summary(workdir, segments)
    if st is not None:
        lines += ["## Stationarity of the features (ADF, train rows of each segment)", "",
                  _fmt_table(st), ""]
    timing_rows = []
    for k in segments:
        done = json.loads((workdir / f"segment_{k}" / "DONE").read_text())
        timing_rows.append({"segment": k, **done.get("timings", {})})
    lines += ["## Timings (seconds)", "", _fmt_table(pd.DataFrame(timing_rows)
                                                     .set_index("segment"), ".3g"), ""]
    files = ["config.yaml", "metrics.csv", "comparison.csv", "oos_returns.parquet"]
    if cfg.output.plots:
        files.append("equity_curve.png")
    if cfg.output.tearsheet:
        files.append("tearsheet.html" if tearsheet_error is None else
                     f"tearsheet.html NOT written ({tearsheet_error})")
    lines += ["## Files", "", *[f"- {f}" for f in files], ""]
    return "\n".join(lines)
