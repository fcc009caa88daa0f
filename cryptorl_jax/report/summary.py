"""summary.md: the run's report as Markdown, rendered from the report's data alone
(`ReportData`: `render_summary` reads no file), with the sceptic's sections (`report.evidence`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cryptorl_jax.backtest import diagnostics, inference
from cryptorl_jax.config import Config
from cryptorl_jax.core.dictionary import UNITS_HEADING, unit_of, units_markdown
from cryptorl_jax.core.names import HEADLINE_METRICS
from cryptorl_jax.core.rundir import REGISTRY
from cryptorl_jax.core.units import HOURS_PER_YEAR, MIN_ANNUALISED_DAYS, min_annualised_periods
from cryptorl_jax.report.evidence import UNDERPOWERED_SHARPE, Sceptic, TrialCount
from cryptorl_jax.report.markdown import fmt, markdown_table
from cryptorl_jax.report.read import SegmentTables
from cryptorl_jax.report.registry import OOSDeflation
from cryptorl_jax.report.tables import N_TIMING_NULLS
from cryptorl_jax.report.verdict import timing_undefined_reason

COST_COLUMNS = (("strategy_zero_cost", "0x"), ("strategy", "1x"), ("strategy_2x_cost", "2x"))
BASELINE_LABELS = {"buy_and_hold": "buy & hold (exposure 1)",
                   "vol_targeted_buy_and_hold": "vol-targeted buy & hold (a = 1)",
                   "flat": "flat", "random": "random: i.i.d. U[-1, 1] actions (not a timing null)",
                   "benchmark": "BTC buy & hold, no costs (benchmark)"}
PER_SEGMENT = ("start", "end", "total_return", "sharpe", "max_drawdown", "excess_return", "beta",
               "alpha", "turnover", "exposure", "cost_per_year", "financing_per_year", "psr",
               "timing_p_value")
UNITS_LINK = (f"[{UNITS_HEADING}](#{UNITS_HEADING.lower()})")


def units(columns) -> dict[str, str]:
    """The unit row of a table of these metric columns (`core.dictionary`)."""
    return {c: unit_of(c) for c in columns}


def timings_table(timings: pd.DataFrame) -> str:
    """The DONE records' timings: seconds with one decimal, memory in whole MiB."""
    formats = {c: ".0f" if c.endswith("_mb") else ".1f" for c in timings.columns}
    unit_row = {c: "MiB" if c.endswith("_mb") else "s" if c.endswith("_s") else ""
                for c in timings.columns}
    return markdown_table(timings, units=unit_row, formats=formats)


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



def _statistics_lines(agg: pd.Series, deflation: OOSDeflation,
                      tuning: dict[str, Any] | None) -> list[str]:
    n = deflation.n_runs
    lines = ["## Is the Sharpe real? (stitched OOS)", "",
             f"- Probabilistic Sharpe, P[true Sharpe > 0]: **{fmt(agg['psr'])}** (skew and "
             "kurtosis of the hourly returns taken into account)"]
    if n <= 1:
        lines.append(f"- Deflated Sharpe: **{fmt(agg['dsr'])}** with N = 1: this is the only "
                     "walk-forward configuration registered over this OOS window "
                     f"(`{REGISTRY}` in the output directory), so nothing is deflated "
                     "and the DSR equals the PSR. Every other configuration you run over the "
                     "same window raises N.")
    else:
        lines.append(f"- Deflated Sharpe: **{fmt(agg['dsr'])}** with N = {n} walk-forward "
                     f"configurations registered over this OOS window (variance of their "
                     f"per-period Sharpes {fmt(deflation.sr_variance, '.3g')}; expected "
                     f"maximum of N unskilled Sharpes "
                     f"{fmt(deflation.expected_max_sharpe * math.sqrt(HOURS_PER_YEAR), '.2f')} "
                     f"annualised). Runs counted: {deflation.counted}")
    p = agg.get("timing_p_value", math.nan)
    mem = agg.get("timing_memory_hours", math.nan)
    lines.append(f"- Timing null: p = **{fmt(p)}** that the seeds' own action paths, rotated "
                 "over the stitched OOS by one lag per draw (the same for every seed; "
                 f"{N_TIMING_NULLS} draws) longer than the agents' declared memory "
                 f"M = {fmt(mem, '.0f')} h (the longest lookback of their inputs, so that no "
                 "rotated action reads the return it is scored on) and re-simulated per "
                 "segment with the market's own leverage, costs and financing, earn a "
                 "Sharpe at least as high. Small p: the timing of the actions, not their "
                 "average level, earned the Sharpe; a constant action (vol-targeted buy & "
                 "hold) has no timing to test (p = 1)."
                 if math.isfinite(p) else
                 f"- Timing null: undefined ({timing_undefined_reason(agg)})")
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
            "", markdown_table(frame, units=units(frame.columns)), ""]


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
            f"Per-seed OOS Sharpe: mean {fmt(seed_sharpe.mean(), '.2f')}, std "
            f"{fmt(seed_sharpe.std(ddof=1), '.2f')}, range {fmt(seed_sharpe.min(), '.2f')} .. "
            f"{fmt(seed_sharpe.max(), '.2f')} over {len(seeds)} seeds; the "
            f"ensemble's {fmt(ens, '.2f')} is above {beaten} of them. A spread as wide as the "
            "Sharpe itself says the seed, not the method, decides the figure.", "",
            markdown_table(table), ""]


def _diagnostic_lines(diag: pd.DataFrame) -> list[str]:
    """The diagnostics table and what its flags mean."""
    shown = diag.rename(columns={
        "oos_sharpe": "OOS Sharpe", "insample_sharpe": "in-sample Sharpe",
        "insample_seed_sharpe": "in-sample Sharpe (seeds' mean)",
        "insample_baseline_sharpe": "best baseline in-sample", "sharpe_gap": "gap",
        "sharpe_gap_se": "gap s.e.", "sharpe_gap_z": "gap / s.e.",
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
            "of the action. Flags: **memorised** (the gap in-sample minus OOS Sharpe over its "
            "standard error, from the hours of both windows, above "
            f"{d.memorised_z():.2f}: significant at {d.MEMORISED_LEVEL:g} one-sided; and the "
            "in-sample Sharpe above the best simple baseline's on the same train rows, or "
            f"above {d.MEMORISED_MIN_INSAMPLE:g} where none ran), "
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
    headline = comparison[[c for c in HEADLINE_METRICS if c in comparison.columns]].rename(
        index=lambda n: BASELINE_LABELS.get(n, n))
    equity = ([f"![equity curve (stitched OOS)]({d.equity_plot})", ""]
              if d.equity_plot else [])
    short = len(oos) < min_annualised_periods(HOURS_PER_YEAR)
    lines = [f"# Walk-forward report: {cfg.run_name}", "", "## Verdict", "", d.verdict, "",
             *equity,
             f"- every column's unit and definition: {UNITS_LINK} at the end",
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
             *trial_lines(sceptic.count, sceptic.dsr, sceptic.dsr_effective),
             *rl_vs_baselines_lines(sceptic.baselines, sceptic.tests),
             *power_lines(sceptic.power, sceptic.count, len(oos) / HOURS_PER_YEAR),
             *_diagnostic_lines(d.diag),
             "## Headline (stitched OOS, annualised at 8,760 hours)", "",
             markdown_table(headline, units=units(headline.columns)), "",
             *([f"CAGR and Calmar are NaN: the stitched OOS has {len(oos):,} hours, fewer than "
                f"{MIN_ANNUALISED_DAYS} days, and a shorter window's growth is not annualised; "
                "its total return is the figure.", ""] if short else []),
             *_cost_lines(comparison, agg, cfg),
             *_seed_lines(comparison),
             "## Per segment (strategy)", "",
             "Fractions are shares of 1 (0.05 = 5 %); `total_return` and `excess_return` are "
             "over the segment's hours, not annualised.", "",
             markdown_table(table.set_index("segment")[list(PER_SEGMENT)],
                            units=units(PER_SEGMENT)),
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
    lines += ["## Timings and memory", "", timings_table(t.timings), ""]
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
    lines += ["## Files", "", *[f"- {f}" for f in files], "",
              f"## {UNITS_HEADING}", "",
              "The columns of metrics.csv (comparison.csv holds the same metrics per series); "
              "formulas: docs/reference.md, \"Metrics\"; declared in "
              "`cryptorl_jax/core/dictionary.py`.", "", units_markdown(), ""]
    return "\n".join(lines)


def rl_vs_baselines_lines(table: pd.DataFrame, tests: list[inference.MultipleTest]
                          ) -> list[str]:
    if table.empty:
        return []
    lines = ["## Does RL add anything? Baselines that read the market", "",
             "Each fitted on every segment's train rows only (`backtest.strategies`: momentum "
             "k, the crossover's windows, the forecasters' horizon and penalty on an inner "
             "validation split) and traded through the agent's exposure mapping, band, ledger, "
             "costs and financing over the same OOS hours. `chosen_per_segment`: the setting "
             "each segment's train rows chose (momentum: k in hours; crossover: fast/slow; "
             "ridge: horizon/penalty; lightgbm: horizon).", "",
             markdown_table(table, ".3g"), ""]
    ens = float(table.loc["strategy", "sharpe"])
    others = table.drop(index="strategy")["sharpe"].astype(float)
    best = str(others.idxmax()) if others.notna().any() else None
    if best is not None:
        beaten = int((others < ens).sum())
        lines += [f"The ensemble's Sharpe {fmt(ens, '.2f')} is above {beaten} of the {len(others)} "
                  f"baselines; the best baseline is `{best}` at {fmt(others[best], '.2f')}.", ""]
    if tests:
        lines += ["### Multiple testing across strategies (SPA, StepM)", "",
                  "Hansen's SPA (H0: no strategy beats the benchmark; p-values lower / "
                  "consistent / upper) and Romano-Wolf StepM at 5 % (the strategies that beat "
                  "it, family-wise), both studentised, over the ensemble, each seed, each "
                  "fitted baseline and vol-targeted buy & hold (against flat, buy & hold too), "
                  "from `arch`'s stationary bootstrap on hourly returns at 1x costs. The mean "
                  "block length is Politis and White's automatic choice on the differentials, "
                  f"at least {inference.MIN_BLOCK_HOURS} h so that a block keeps the daily "
                  "cycle of hourly volatility. Two footings (the `footing` column):", "",
                  f"- **{inference.MEAN_RETURN}**: the differential is the strategy's hourly "
                  "return minus the benchmark's, so superior means a higher mean return. "
                  "In a rising market a strategy with less exposure than buy & hold cannot "
                  "beat it on this footing, whatever its Sharpe.",
                  "- **risk-adjusted (vol-scaled to buy & hold's volatility)**: each "
                  "strategy's hourly returns are first multiplied by buy & hold's sd over its "
                  "own (both over these OOS hours, as in the Sharpe column), so the "
                  "differential's mean is buy & hold's sd times the difference of the Sharpes "
                  "(M^2, Modigliani and Modigliani 1997): superior means a higher Sharpe than "
                  "buy & hold, at any exposure. Not repeated against flat: there a constant "
                  "scale leaves the studentised test unchanged, so beating flat on mean "
                  "return already means a positive Sharpe.", "",
                  markdown_table(pd.DataFrame([t.row() for t in tests]).set_index("benchmark"),
                                 ".3g"), ""]
        for t in tests:
            where = f"Against {t.benchmark}, {t.footing}"
            if "strategy" in t.superior:
                lines.append(f"- {where}: the ensemble is among the strategies StepM finds "
                             "superior at 5 %.")
            else:
                lines.append(f"- {where}: the ensemble is not among the strategies StepM "
                             f"finds superior at 5 % ({', '.join(t.superior) or 'none is'}"
                             f"{' are' if len(t.superior) > 1 else ''}).")
        lines.append("")
    return lines


def power_lines(power: pd.DataFrame, count: TrialCount, oos_years: float) -> list[str]:
    under = [str(k) for k, v in power["underpowered"].items() if v and k != "all"]
    stitched = power.loc["all"]
    minbtl = inference.min_backtest_length(max(count.total, 1), 1.0)
    minbtl_eff = inference.min_backtest_length(max(count.effective, 1), 1.0)
    lines = ["## Power before results", "",
             "The smallest annual Sharpe a one-sided 5 % test detects with 80 % power over "
             "each OOS window (Lo 2002's standard error of the Sharpe, widened by the "
             "ensemble's autocorrelation: `variance_inflation`, Newey-West). A segment that "
             f"cannot detect a Sharpe of {UNDERPOWERED_SHARPE:g} is flagged underpowered: its "
             "Sharpe alone says almost nothing.", "",
             markdown_table(power, ".3g"), "",
             f"- The stitched OOS ({int(stitched['hours'])} h, {oos_years:.2f} years) detects "
             f"an annual Sharpe of {fmt(stitched['mde_sharpe'], '.2f')} or more; "
             f"{len(under)} of {len(power) - 1} segments are underpowered"
             + (f" ({', '.join(under)})." if under else "."),
             f"- MinBTL (Bailey et al. 2014): with N = {count.total} tries (effective "
             f"{count.effective:.1f}), the best skill-less try reaches an annual Sharpe of 1 "
             f"by chance in fewer than {minbtl:.1f} years ({minbtl_eff:.1f} at the effective N) "
             f"of data; this OOS has {oos_years:.2f}.", ""]
    return lines


def trial_lines(count: TrialCount, dsr: float, dsr_eff: float) -> list[str]:
    return ["## The sceptic's N", "",
            f"- Tries counted: {count.runs} walk-forward run(s) registered over this window, "
            f"{count.tuning_trials} tuning trial(s), {count.seeds} seed(s), "
            f"{count.baseline_choices} baseline setting(s) tried on the train rows: **N = "
            f"{count.total}**. The return series held (ensemble, seeds, fitted baselines: "
            f"{count.series}) have a mean pairwise correlation of "
            f"{fmt(count.mean_correlation, '.2f')}, so **N_eff = {count.effective:.1f}** "
            "(rho + (1 - rho) N).",
            f"- Deflated Sharpe of the ensemble at N = {count.total}: **{fmt(dsr)}**; at "
            f"N_eff: **{fmt(dsr_eff)}** (per-period Sharpe variance "
            f"{count.sr_variance:.3g}: the larger of the registered runs' and the held "
            "series').", ""]
