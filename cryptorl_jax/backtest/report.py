"""The walk-forward report under results/<run_name>/ (the files: cryptorl_jax/layout.py).

Built only from the finished segments (those with a DONE marker), so it can be rebuilt at any
time (`cryptorl wfo --report-only`) and by concurrent processes: every file is written to a
temp file and renamed into place.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import diagnostics, evidence, nulls, registry
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe,
)
from cryptorl_jax.config import Config, EnvConfig
from cryptorl_jax.io import write_atomic, write_parquet
from cryptorl_jax.layout import RunDir

log = logging.getLogger("cryptorl_jax.report")

PERIODS = 8760
N_TIMING_NULLS = 1000
COST_COLUMNS = (("strategy_zero_cost", "0x"), ("strategy", "1x"), ("strategy_2x_cost", "2x"))
BASELINE_LABELS = {"buy_and_hold": "buy & hold (exposure 1)",
                   "vol_targeted_buy_and_hold": "vol-targeted buy & hold (a = 1)",
                   "flat": "flat", "random": "random: i.i.d. U[-1, 1] actions (not a timing null)",
                   "benchmark": "BTC buy & hold, no costs (benchmark)"}
BASELINE_COLUMNS = ("buy_and_hold", "vol_targeted_buy_and_hold", "flat", "random")
HEADLINE = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
            "volatility", "hit_rate")


def finished_segments(workdir: Path) -> list[int]:
    return RunDir(workdir).finished_segments()


def stitch(workdir: Path, segments: list[int]) -> pd.DataFrame:
    """The per-segment OOS frames in order, with a `segment` column."""
    rd = RunDir(workdir)
    frames = []
    for k in segments:
        f = pd.read_parquet(rd.segment(k).oos)
        f["segment"] = k
        frames.append(f)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames)
    if not out.index.is_monotonic_increasing or out.index.has_duplicates:
        raise ValueError(f"{workdir}: the segments' OOS windows overlap or are out of order")
    return out


def read_trial_log(path: str | None, workdir: Path) -> tuple[int, float, str]:
    """(n_trials, variance of per-period trial Sharpes, source) of a tuning trial log.

    The WFO report no longer deflates the OOS Sharpe with these (the trials were scored on
    short validation windows, not on the OOS series; see `backtest.registry`); it cites the
    study's own overfitting figures instead (`tuning_overfitting`).
    """
    if not path:
        return 1, 0.0, "no tuning trial log (wfo.trial_log unset): one configuration tried"
    p = _trial_log_path(path, workdir)
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


def _trial_log_path(path: str, workdir: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = Path(workdir) / p
    if not p.is_file():
        raise FileNotFoundError(f"wfo.trial_log: {p} does not exist")
    return p


def tuning_overfitting(path: str | None, workdir: Path) -> dict[str, Any] | None:
    """The tuning study's overfitting.json (beside its trial log), or None without a study."""
    if not path:
        return None
    f = _trial_log_path(path, workdir).with_name("overfitting.json")
    if not f.is_file():
        return {"note": f"{f} does not exist (a study from before PBO was recorded)"}
    return json.loads(f.read_text())


@dataclass(frozen=True)
class OOSDeflation:
    """The OOS Deflated Sharpe's inputs: the registered runs over the same OOS window."""

    n_runs: int
    sr_variance: float
    expected_max_sharpe: float  # per period (NaN when N > 1 but no variance)
    counted: str  # which runs were counted


def oos_record(oos: pd.DataFrame, digest: str, run_name: str, workdir: Path,
               segments: list[int], market: str | None = None) -> dict[str, Any]:
    """This run's record for the output directory's registry (`backtest.registry`)."""
    sr = sharpe(oos["strategy"].to_numpy(np.float64), 1.0)  # per period
    return {"config_digest": digest, "run_name": run_name,
            "run_dir": str(Path(workdir).absolute()), "market": market,
            "oos_start": str(oos.index[0]), "oos_end": str(oos.index[-1]), "n_hours": len(oos),
            "sharpe": sr * math.sqrt(PERIODS) if math.isfinite(sr) else None,
            "sharpe_per_period": sr if math.isfinite(sr) else None, "segments": segments}


def deflation_of(records: list[dict[str, Any]], record: dict[str, Any]) -> OOSDeflation:
    """The OOS Deflated Sharpe's inputs for `record` among the registry's `records`: the runs
    over its window on the same market (`registry.runs_over_window`)."""
    window = registry.runs_over_window(records, record["oos_start"], record["oos_end"],
                                       record["market"])
    emax = 0.0 if window.n_runs <= 1 else expected_max_sharpe(window.n_runs, window.sr_variance)
    return OOSDeflation(n_runs=window.n_runs, sr_variance=window.sr_variance,
                        expected_max_sharpe=emax, counted=window.describe())


def oos_deflation(workdir: Path, oos: pd.DataFrame, digest: str, run_name: str,
                  segments: list[int], market: str | None = None) -> OOSDeflation:
    """Record this run in the output directory's registry and count the runs over its window
    on the same market (`registry.market_key`)."""
    record = oos_record(oos, digest, run_name, workdir, segments, market)
    return deflation_of(registry.register_run(RunDir(workdir).registry, record), record)


def timing_test(part: pd.DataFrame, env_config: EnvConfig, seed: int,
                n_null: int = N_TIMING_NULLS) -> nulls.TimingNull | None:
    """The action-rotation timing null of the ensemble over these rows (`backtest.nulls`):
    the seeds' `action_<s>` paths rotated within each `segment` and re-simulated with the
    frame's `leverage`, `tradable` and `benchmark` (R_{t+1}) under env_config's costs. None for
    frames written before those columns were."""
    cols = diagnostics.seed_columns(part, "action_")
    if not cols or any(c not in part for c in ("leverage", "tradable", "benchmark")):
        return None
    seg = part["segment"].to_numpy() if "segment" in part else None
    return nulls.action_timing_null(part[cols].to_numpy(np.float64).T,
                                    part["leverage"].to_numpy(np.float64),
                                    part["benchmark"].to_numpy(np.float64),
                                    part["tradable"].to_numpy(bool), seg, env_config,
                                    n_null=n_null, seed=seed)


def _strategy_row(part: pd.DataFrame, env_config: EnvConfig, seed: int) -> dict[str, float]:
    m = compute_metrics(part["strategy"], part["benchmark"], PERIODS,
                        exposure=part["exposure"], turnover=part["turnover"])
    m["psr"] = probabilistic_sharpe(part["strategy"])
    n = max(len(part), 1)
    for col in ("cost", "financing"):  # paid per year, as a fraction of NAV (simple sums)
        m[f"{col}_per_year"] = float(part[col].sum() * PERIODS / n) if col in part else math.nan
    null = timing_test(part, env_config, seed)
    m["timing_p_value"] = math.nan if null is None else null.p_value
    return m


def metrics_table(oos: pd.DataFrame, segments: list[int], deflation: OOSDeflation,
                  env_config: EnvConfig, seed: int = 0) -> pd.DataFrame:
    """One row per segment plus `all` (the stitched series), compute_metrics' columns.

    Every row adds psr, cost_per_year, financing_per_year and timing_p_value; the `all` row adds
    dsr (deflated by the registered runs over the same OOS window) and n_trials (their N).
    """
    rows = []
    for k in segments:
        part = oos[oos["segment"] == k]
        rows.append({"segment": str(k), "start": str(part.index[0]),
                     "end": str(part.index[-1]),
                     **_strategy_row(part, env_config, seed + 1 + k)})
    if segments:
        m = _strategy_row(oos, env_config, seed)
        m["dsr"] = (probabilistic_sharpe(oos["strategy"], deflation.expected_max_sharpe)
                    if math.isfinite(deflation.expected_max_sharpe) else math.nan)
        m["n_trials"] = float(deflation.n_runs)
        rows.append({"segment": "all", "start": str(oos.index[0]), "end": str(oos.index[-1]),
                     **m})
    return pd.DataFrame(rows)


def comparison_table(oos: pd.DataFrame) -> pd.DataFrame:
    """Aggregate metrics of every series of the stitched frame (`backtest.oos.series_table`:
    the strategy, its cost variants, each seed, the baselines, the benchmark)."""
    return oos_lib.series_table(oos)


@dataclass
class Sceptic:
    """The report's evidence beyond the run's own Sharpe (`backtest.evidence`)."""

    baselines: pd.DataFrame
    tests: list
    power: pd.DataFrame
    count: evidence.TrialCount
    dsr: float
    dsr_effective: float


def sceptic_evidence(cfg: Config, workdir: Path, oos: pd.DataFrame, segments: list[int],
                     comparison: pd.DataFrame, table: pd.DataFrame,
                     deflation: OOSDeflation) -> Sceptic:
    """Baselines, SPA/StepM, power and the sceptic's N (`backtest.evidence`; it reads the
    segments' baselines.json); adds their columns to metrics.csv's rows (`table`, in place).
    `write_sceptic` writes them."""
    bl = evidence.baseline_table(oos, comparison, cfg.env, workdir, segments, cfg.seed)
    tests = evidence.multiple_tests(oos, cfg.baselines.bootstrap_reps, cfg.seed)
    power = evidence.power_table(oos, segments)
    n_tuning = read_trial_log(cfg.wfo.trial_log, workdir)[0] if cfg.wfo.trial_log else 0
    count = evidence.trial_count(oos, workdir, segments, deflation.n_runs,
                                 deflation.sr_variance, n_tuning)
    r = oos["strategy"].to_numpy(np.float64)
    dsr, dsr_eff = count.dsr(r), count.dsr(r, effective=True)
    table["mde_sharpe"] = [power.loc[str(s), "mde_sharpe"] for s in table["segment"]]
    table["underpowered"] = [bool(power.loc[str(s), "underpowered"]) for s in table["segment"]]
    last = table.index[table["segment"] == "all"]
    for key, value in (("n_trials_sceptic", float(count.total)),
                       ("n_trials_effective", count.effective), ("dsr_sceptic", dsr),
                       ("dsr_effective", dsr_eff)):
        table[key] = math.nan
        table.loc[last, key] = value
    return Sceptic(baselines=bl, tests=tests, power=power, count=count, dsr=dsr,
                   dsr_effective=dsr_eff)


def write_sceptic(rd: RunDir, sceptic: Sceptic) -> None:
    """baselines.csv, multiple_testing.csv and power.csv."""
    if not sceptic.baselines.empty:
        write_atomic(rd.baselines, sceptic.baselines.to_csv())
    if sceptic.tests:
        write_atomic(rd.multiple_testing,
                     pd.DataFrame([t.row() for t in sceptic.tests]).to_csv(index=False))
    write_atomic(rd.power, sceptic.power.to_csv())


def nav_axes(figsize: tuple[float, float] = (12, 6)) -> Any:
    """A new Agg figure's axes for NAV curves (log scale), outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_yscale("log")
    ax.set_ylabel("NAV (log scale, 1 at the first OOS hour)")
    ax.grid(alpha=0.3)
    return ax


def save_nav_plot(ax: Any, path: Path, title: str) -> None:
    """Title, legend and an atomic PNG write of a nav_axes plot."""
    import io

    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.figure.tight_layout()
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index.tz_convert("UTC").tz_localize(None)


def plot_equity(oos: pd.DataFrame, segments: list[int], path: Path, title: str) -> None:
    ax = nav_axes()
    idx = naive_utc(oos.index)
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
        first = oos.index[oos["segment"] == k][:1]
        ax.axvline(naive_utc(first)[0], color="k", ls=":", lw=0.6)
    save_nav_plot(ax, path, title)


def write_returns_tearsheet(returns: pd.Series | pd.DataFrame, benchmark: pd.Series, path: Path,
                            title: str) -> str | None:
    """quantstats HTML tearsheet of hourly returns (a DataFrame: one strategy per column)
    against a benchmark, 8,760 periods a year, written atomically; None if written, else the
    error (the report stays usable without it)."""
    import warnings

    try:
        import quantstats as qs

        returns = returns.copy()
        returns.index = naive_utc(returns.index)
        bench = pd.Series(benchmark.to_numpy(), index=returns.index, name="BTC buy & hold")
        tmp = path.with_name(f".{path.name}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qs.reports.html(returns, bench, periods_per_year=PERIODS, output=str(tmp),
                            title=title, download_filename=path.name)
        tmp.replace(path)
        return None
    except Exception as exc:
        log.warning("tearsheet %s not written: %s: %s", path, type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"


def write_tearsheet(oos: pd.DataFrame, path: Path, title: str) -> str | None:
    """The strategy vs BTC buy-and-hold tearsheet of an OOS frame; None if written."""
    return write_returns_tearsheet(oos["strategy"].rename("strategy"), oos["benchmark"], path,
                                   title)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A Markdown pipe table of a frame (its index as the first column; NaN as 'nan')."""
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


@dataclass
class ReportData:
    """Everything the summary shows, read and computed: `render_summary` reads no file."""

    cfg: Config
    segments: list[int]
    oos: pd.DataFrame  # the stitched OOS frame
    table: pd.DataFrame  # metrics.csv
    comparison: pd.DataFrame  # comparison.csv
    gaps: list[str]
    deflation: OOSDeflation
    tuning: dict[str, Any] | None  # the tuning study's overfitting.json
    diag: pd.DataFrame  # diagnostics.csv
    verdict: str
    sceptic: Sceptic
    tables: SegmentTables
    equity_plot: str | None  # the equity curve's file name, None when not plotted
    tearsheet_error: str | None = None


def write_report(cfg: Config, workdir: str | Path) -> dict[str, Any]:
    """Rebuild every aggregate output from the finished segments; returns a small summary.

    Steps: read the finished segments (`stitch`, `read_segment_tables`, their diagnostics),
    register the run and count the runs over its OOS window (`oos_deflation`), compute the
    tables and the evidence (`metrics_table`, `comparison_table`, `sceptic_evidence`), write
    them, then render summary.md (`render_summary`, no file access) and report.html.
    """
    workdir = Path(workdir)
    rd = RunDir(workdir)
    segments = rd.finished_segments()
    if not segments:
        log.warning("report: no finished segment in %s", workdir)
        return {"segments": []}
    # read
    oos = stitch(workdir, segments)
    tables = read_segment_tables(rd, segments)
    diag = diagnostics.segment_diagnostics(rd, oos, segments)
    tuning = tuning_overfitting(cfg.wfo.trial_log, workdir)
    # register
    digest = (rd.config_digest.read_text().strip() if rd.config_digest.is_file()
              else cfg.digest())
    deflation = oos_deflation(workdir, oos, digest, cfg.run_name, segments,
                              registry.market_key(cfg.data))
    # compute
    table = metrics_table(oos, segments, deflation, cfg.env, seed=cfg.seed)
    comparison = comparison_table(oos)
    sceptic = sceptic_evidence(cfg, workdir, oos, segments, comparison, table, deflation)
    agg = table[table["segment"] == "all"].iloc[0].to_dict()
    run_flags = diagnostics.flags_in(diag)
    edge, verdict = diagnostics.verdict(agg, run_flags, deflation.n_runs)
    # write
    write_parquet(rd.oos, oos)
    write_atomic(rd.comparison, comparison.to_csv())
    write_sceptic(rd, sceptic)
    write_atomic(rd.metrics, table.to_csv(index=False))
    write_atomic(rd.diagnostics, diag.to_csv())
    title = f"{cfg.run_name}: walk-forward OOS, {len(segments)} segments"
    tearsheet_error = None
    if cfg.output.plots:
        plot_equity(oos, segments, rd.equity_png, title)
    if cfg.output.tearsheet:
        tearsheet_error = write_tearsheet(oos, rd.tearsheet, title)
    gaps = _gaps(oos)
    data = ReportData(cfg=cfg, segments=segments, oos=oos, table=table, comparison=comparison,
                      gaps=gaps, deflation=deflation, tuning=tuning, diag=diag,
                      verdict=verdict, sceptic=sceptic, tables=tables,
                      equity_plot=rd.equity_png.name if rd.equity_png.is_file() else None,
                      tearsheet_error=tearsheet_error)
    summary = render_summary(data)
    write_atomic(rd.summary, summary)
    from cryptorl_jax.backtest.html import write_report_html

    write_report_html(rd, summary, title)
    if cfg.output.tensorboard:
        _log_hparams(cfg, rd, agg)
    return {"segments": segments, "sharpe": agg["sharpe"], "total_return": agg["total_return"],
            "psr": agg.get("psr"), "dsr": agg.get("dsr"), "n_trials": agg.get("n_trials"),
            "timing_p_value": agg.get("timing_p_value"), "gaps": gaps, "edge": edge,
            "dsr_sceptic": agg.get("dsr_sceptic"), "n_trials_sceptic": agg.get("n_trials_sceptic"),
            "n_trials_effective": agg.get("n_trials_effective"),
            "mde_sharpe": agg.get("mde_sharpe"),
            "stepm_superior": {t.benchmark: list(t.superior) for t in sceptic.tests},
            "verdict": verdict, "flags": run_flags,
            "insample_sharpe": float(diag.loc["all", "insample_sharpe"])}


HPARAM_KEYS = ("seed", "encoder.mode", "env.window", "env.fee_bps", "env.slippage_bps",
               "env.target_volatility", "env.max_leverage", "env.reward_scale",
               "env.borrow_rate_annual", "tqc.learning_rate", "tqc.gamma", "tqc.tau",
               "tqc.batch_size", "tqc.net_arch", "train.total_env_steps", "train.n_envs",
               "train.n_seeds", "wfo.train_months", "wfo.test_months", "features.ffd_d",
               "regimes.n_states")
HPARAM_METRICS = ("sharpe", "total_return", "max_drawdown", "psr", "dsr", "timing_p_value",
                  "turnover", "cost_per_year", "financing_per_year")


def hparams(cfg: Config) -> dict[str, Any]:
    """The run's main settings as flat scalars (TensorBoard's hparams take str/int/float/bool)."""
    raw = cfg.to_dict()
    out: dict[str, Any] = {}
    for key in HPARAM_KEYS:
        node: Any = raw
        for part in key.split("."):
            node = node[part]
        out[key] = node if isinstance(node, (int, float, str, bool)) else str(node)
    out["run_name"] = cfg.run_name
    return out


def _log_hparams(cfg: Config, rd: RunDir, agg: dict[str, Any]) -> None:
    """The run's hparams with its stitched-OOS metrics, so `tensorboard --logdir <output dir>`
    compares runs in its HPARAMS tab (one event file, rewritten with each report)."""
    import shutil

    from tensorboardX import SummaryWriter

    metrics = {}
    for k in HPARAM_METRICS:
        try:
            v = float(agg.get(k, math.nan))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            metrics[f"oos/{k}"] = v
    target = rd.tensorboard / "hparams"
    shutil.rmtree(target, ignore_errors=True)  # one record per run, the latest report's
    try:
        with SummaryWriter(str(target)) as w:
            w.add_hparams(hparams(cfg), metrics, name=".")
    except Exception as exc:  # the report does not depend on TensorBoard
        log.warning("tensorboard hparams not written: %s: %s", type(exc).__name__, exc)


def _gaps(oos: pd.DataFrame) -> list[str]:
    """Where the stitched OOS index is not one hour apart (missing segments)."""
    steps = np.diff(oos.index.as_unit("ns").asi8)
    bad = np.flatnonzero(steps != 3600 * 10**9)
    return [f"{oos.index[i]} -> {oos.index[i + 1]}" for i in bad]


def fmt(x: Any, spec: str = ".3f") -> str:
    """A number as text, 'undefined' when it is not finite (or not a number's text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "undefined" if not math.isfinite(v) else format(v, spec)


def _statistics_lines(agg: pd.Series, deflation: OOSDeflation,
                      tuning: dict[str, Any] | None) -> list[str]:
    n = deflation.n_runs
    lines = ["## Is the Sharpe real? (stitched OOS)", "",
             f"- Probabilistic Sharpe, P[true Sharpe > 0]: **{fmt(agg['psr'])}** (skew and "
             "kurtosis of the hourly returns taken into account)"]
    if n <= 1:
        lines.append(f"- Deflated Sharpe: **{fmt(agg['dsr'])}** with N = 1: this is the only "
                     "walk-forward configuration registered over this OOS window "
                     f"(`{registry.REGISTRY}` in the output directory), so nothing is deflated "
                     "and the DSR equals the PSR. Every other configuration you run over the "
                     "same window raises N.")
    else:
        lines.append(f"- Deflated Sharpe: **{fmt(agg['dsr'])}** with N = {n} walk-forward "
                     f"configurations registered over this OOS window (variance of their "
                     f"per-period Sharpes {fmt(deflation.sr_variance, '.3g')}; expected "
                     f"maximum of N unskilled Sharpes "
                     f"{fmt(deflation.expected_max_sharpe * math.sqrt(PERIODS), '.2f')} "
                     f"annualised). Runs counted: {deflation.counted}")
    p = agg.get("timing_p_value", math.nan)
    lines.append(f"- Timing null: p = **{fmt(p)}** that the seeds' own action paths, rotated "
                 "within each segment (one lag per segment and draw, the same for every seed; "
                 f"{N_TIMING_NULLS} draws of at least {nulls.MIN_SHIFT_HOURS} h) and "
                 "re-simulated with the market's own leverage, costs and financing, earn a "
                 "Sharpe at least as high. Small p: the timing of the actions, not their "
                 "average level, earned the Sharpe; a constant action (vol-targeted buy & "
                 "hold) has no timing to test (p = 1)."
                 if math.isfinite(p) else "- Timing null: undefined (no per-seed actions and "
                 "leverage in these segments' frames, or a constant series)")
    if tuning is not None:
        if "n_trials" not in tuning:
            lines.append(f"- Tuning study: {tuning.get('note', 'no overfitting statistics')}")
        else:
            lines.append(f"- Tuning study ({tuning['n_trials']} trials tried, "
                         f"{tuning['n_completed']} completed): the best trial's Deflated Sharpe "
                         f"on its own validation rows {fmt(tuning.get('best_trial_dsr'))} "
                         f"(N = {tuning['n_trials']}); Probability of Backtest Overfitting "
                         f"(CSCV) {fmt(tuning.get('pbo'))}")
            lines += [f"  - {n}" for n in tuning.get("notes", [])]
    return lines + [""]


def _cost_lines(comparison: pd.DataFrame, agg: pd.Series, cfg: Config) -> list[str]:
    rows = {}
    for col, label in COST_COLUMNS:
        if col in comparison.index:
            c = comparison.loc[col]
            rows[f"{label} trading costs"] = {k: c.get(k, math.nan) for k in
                                              ("total_return", "cagr", "sharpe", "max_drawdown",
                                               "turnover")}
    if not rows:
        return []
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "same trades at"
    paid = [f"{col} {100 * agg[f'{col}_per_year']:.2f} %" for col in ("cost", "financing")
            if math.isfinite(agg.get(f"{col}_per_year", math.nan))]
    return ["## Costs (the strategy's own trades replayed at 0x / 1x / 2x fee + slippage)", "",
            f"Trading costs are {cfg.env.fee_bps:g} + {cfg.env.slippage_bps:g} bps per unit of "
            "NAV traded, charged on the trade from the drifted position to the target; "
            f"financing is {100 * cfg.env.borrow_rate_annual:g} % a year on the borrowed "
            "notional (leverage above 1 and shorts), not scaled by the stress. "
            + (f"Paid per year at 1x, as a share of NAV: {', '.join(paid)}." if paid else ""),
            "", markdown_table(frame), ""]


def _seed_lines(comparison: pd.DataFrame) -> list[str]:
    """The seeds' dispersion: each seed's stitched OOS figures, their spread, the ensemble."""
    seeds = [n for n in comparison.index if str(n).startswith("seed_")]
    if len(seeds) < 2 or "strategy" not in comparison.index:
        return []
    seed_sharpe = comparison.loc[seeds, "sharpe"].astype(float)
    ens = float(comparison.loc["strategy", "sharpe"])
    beaten = int((seed_sharpe < ens).sum())
    table = comparison.loc[seeds + ["strategy"], ["total_return", "sharpe", "max_drawdown"]]
    table = table.rename(index={"strategy": "ensemble (equal-weight fund of the seeds' books)"})
    return ["## Seeds (each seed's agent alone, and the ensemble)", "",
            f"Per-seed OOS Sharpe: mean {seed_sharpe.mean():.2f}, std "
            f"{seed_sharpe.std(ddof=1):.2f}, range {seed_sharpe.min():.2f} .. "
            f"{seed_sharpe.max():.2f} over {len(seeds)} seeds; the "
            f"ensemble's {ens:.2f} is above {beaten} of them. A spread as wide as the Sharpe "
            "itself says the seed, not the method, decides the figure.", "",
            markdown_table(table), ""]


def _diagnostic_lines(diag: pd.DataFrame) -> list[str]:
    """The diagnostics table and what its flags mean."""
    shown = diag.rename(columns={
        "oos_sharpe": "OOS Sharpe", "insample_sharpe": "in-sample Sharpe",
        "insample_seed_sharpe": "in-sample Sharpe (seeds' mean)", "sharpe_gap": "gap",
        "turnover": "turnover (x NAV/yr)", "exposure": "mean abs. exposure",
        "turnover_per_exposure": "turnover per unit exposure",
        "mechanical_share": "mechanical share of turnover",
        "action_dispersion": "action dispersion (across seeds)",
        "action_std": "action std (over time)", "corr_buy_and_hold": "corr. with buy & hold",
        "long_share": "share of hours long"})
    d = diagnostics
    return ["## Diagnostics: is the figure the agent's, and does it generalise?", "",
            "In-sample: the same agents, through the same backtest, over their own segment's "
            "train rows (the `all` row averages the segments'). Mechanical turnover is the part "
            "that the vol targeting's leverage changes and the price drift made, not a change "
            "of the action. Flags: **memorised** (in-sample Sharpe > "
            f"{d.MEMORISED_MIN_INSAMPLE:g} and above OOS by > {d.MEMORISED_GAP:g}), "
            f"**collapsed to buy & hold** (correlation with buy & hold > {d.COLLAPSED_CORR:g} "
            f"and long in > {100 * d.COLLAPSED_LONG_SHARE:g} % of hours), **flat** (mean "
            f"|exposure| < {d.FLAT_EXPOSURE:g}), **churning** (turnover > "
            f"{d.CHURN_TURNOVER:g}x NAV a year).", "",
            markdown_table(shown, ".3g"), ""]


def render_summary(d: ReportData) -> str:
    """summary.md from the report's data (no file is read)."""
    cfg, oos, table, comparison, sceptic = d.cfg, d.oos, d.table, d.comparison, d.sceptic
    agg = table[table["segment"] == "all"].iloc[0]
    contiguity = "contiguous" if not d.gaps else "NOT contiguous: " + "; ".join(d.gaps)
    headline = comparison[[c for c in HEADLINE if c in comparison.columns]].rename(
        index=lambda n: BASELINE_LABELS.get(n, n))
    equity = ([f"![equity curve (stitched OOS)]({d.equity_plot})", ""]
              if d.equity_plot else [])
    lines = [f"# Walk-forward report: {cfg.run_name}", "", "## Verdict", "", d.verdict, "",
             *equity,
             f"- segments finished: {d.segments}; OOS hours: {len(oos)} "
             f"({oos.index[0]} .. {oos.index[-1]})",
             f"- the OOS series is {contiguity}",
             f"- strategy = the ensemble of {cfg.train.n_seeds} seed(s): the equal-weight fund "
             "of the seeds' own books (each seed acts on its own book; 1/S of the capital "
             "each, not rebalanced), "
             f"encoder mode `{cfg.encoder.mode}`, costs {cfg.env.fee_bps} + "
             f"{cfg.env.slippage_bps} bps per unit of turnover, financing "
             f"{100 * cfg.env.borrow_rate_annual:g} % a year on borrowed notional",
             "", *_statistics_lines(agg, d.deflation, d.tuning),
             *evidence.trial_lines(sceptic.count, sceptic.dsr, sceptic.dsr_effective),
             *evidence.rl_vs_baselines_lines(sceptic.baselines, sceptic.tests, markdown_table),
             *evidence.power_lines(sceptic.power, sceptic.count, len(oos) / PERIODS,
                                   markdown_table),
             *_diagnostic_lines(d.diag),
             "## Headline (stitched OOS, annualised at 8,760 hours)", "",
             markdown_table(headline), "", *_cost_lines(comparison, agg, cfg),
             *_seed_lines(comparison),
             "## Per segment (strategy)", "",
             markdown_table(table.set_index("segment")[["start", "end", "total_return", "sharpe",
                                                    "max_drawdown", "excess_return", "beta",
                                                    "alpha", "turnover", "exposure",
                                                    "cost_per_year", "financing_per_year",
                                                    "psr", "timing_p_value"]]),
             ""]
    t = d.tables
    if t.regimes is not None:
        lines += ["## Fitted regimes (HMM on train rows; state 0 = calmest)", "",
                  markdown_table(t.regimes), ""]
    if t.regime_metrics is not None:
        lines += ["## OOS performance by filtered regime", "",
                  markdown_table(t.regime_metrics[["regime", "share_of_hours", "total_return",
                                                   "sharpe", "max_drawdown"]]), ""]
    if t.encoder is not None:
        lines += ["## MAE encoder: validation masked-token MSE vs baselines", "",
                  markdown_table(t.encoder), ""]
    if t.stationarity is not None:
        lines += ["## Stationarity of the features (ADF, train rows of each segment)", "",
                  markdown_table(t.stationarity), ""]
    lines += ["## Timings (seconds)", "", markdown_table(t.timings, ".3g"), ""]
    files = ["config.yaml", "run_info.json", "metrics.csv", "comparison.csv",
             "diagnostics.csv", "power.csv", "oos_returns.parquet", "report.html"]
    if not sceptic.baselines.empty:
        files.append("baselines.csv")
    if sceptic.tests:
        files.append("multiple_testing.csv")
    if cfg.output.plots:
        files.append("equity_curve.png")
    if cfg.output.tearsheet:
        files.append("tearsheet.html" if d.tearsheet_error is None else
                     f"tearsheet.html NOT written ({d.tearsheet_error})")
    lines += ["## Files", "", *[f"- {f}" for f in files], ""]
    return "\n".join(lines)
