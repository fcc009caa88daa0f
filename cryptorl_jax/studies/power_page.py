"""The power study's page and figure (`studies.power.run_power` writes them): the header and
the held-out protocol (`studies.protocol`), one part per market set (selection, held-out) with
its summary, detection lines and baselines' table, the power curve and every run."""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.config import Config
from cryptorl_jax.core import provenance
from cryptorl_jax.market.heldout import SETS
from cryptorl_jax.report import calibration
from cryptorl_jax.report.markdown import markdown_table
from cryptorl_jax.studies.protocol import protocol_lines

DETECTIONS = {"detected": "verdict", "detected_psr": "PSR only", "oracle_detected": "oracle",
              "best_baseline_detected": "best baseline"}


def baseline_names(rows: pd.DataFrame) -> list[str]:
    """The fitted baselines present in the rows (columns `<name>_recovered`)."""
    return [c[:-len("_recovered")] for c in rows.columns
            if c.endswith("_recovered") and c not in ("recovered", "seed_recovered")]


def rate_name(col: str) -> str:
    return {"detected": "detection", "detected_psr": "detection_psr"}.get(
        col, col.replace("_detected", "_detection"))


def detection_text(summary_row: Mapping[str, Any], name: str) -> str:
    """'k/n (lo-hi)': a detection rate's count and its Wilson 95 % interval."""
    n = summary_row.get(f"{name}_n", math.nan)
    if not (isinstance(n, (int, float)) and math.isfinite(n) and n > 0):
        return ""
    k = round(summary_row[f"{name}_rate"] * n)
    return f"{k}/{int(n)} ({summary_row[f'{name}_lo']:.2f}-{summary_row[f'{name}_hi']:.2f})"


def plot_power(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    summary = with_set(summary)
    several = summary["set"].nunique() > 1
    for (market_set, family), g in summary.groupby(["set", "family"], sort=False):
        g = g.sort_values("oracle_sharpe_mean")
        ax.errorbar(g["oracle_sharpe_mean"], g["sharpe_mean"],
                    yerr=g["sharpe_sd"].fillna(0.0), marker="o" if market_set == "selection"
                    else "s", capsize=3,
                    label=f"{family} ({market_set})" if several else family)
    hi = max(1.0, float(np.nanmax(summary["oracle_sharpe_mean"].to_numpy())))
    xs = np.linspace(0.0, hi, 10)
    ax.plot(xs, xs, color="grey", lw=0.8, ls="--", label="the oracle (y = x)")
    ax.plot(xs, xs / 2, color="grey", lw=0.8, ls=":", label="half the oracle")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xlabel("oracle's stitched-OOS Sharpe after costs")
    ax.set_ylabel("ensemble OOS Sharpe (mean, sd over repeats)")
    ax.set_title("power curve: planted edges")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_minutes(rows: pd.DataFrame) -> float:
    """The runs' wall time in minutes, every invocation of each run summed (a run finished in
    an earlier invocation and skipped with --resume keeps its time)."""
    total = 0.0
    for d in rows["run_dir"]:
        path = Path(d) / "run_info.json"
        if path.is_file():
            info = json.loads(path.read_text())
            total += sum(float(x.get("seconds") or 0.0)
                         for x in [info, *info.get("history", [])])
    return total / 60.0


def page_markdown(summary: pd.DataFrame, rows: pd.DataFrame, command: str, seconds: float,
                  cfg: Config) -> str:
    """The power page: its header and protocol, then one part per market set present (the
    selection set's, then the held-out set's, each with its own tables), the figure, the
    runs. With the selection set alone the parts carry no heading (the page before issue 40,
    plus the protocol line)."""
    summary = with_set(summary)
    rows = with_set(rows)
    present = [s for s in SETS if s in set(summary["set"])]
    info = provenance.run_info()
    git = (info.get("git") or {}).get("sha")
    lines = ["# Power: does the method find a planted edge?", "",
             "Written by `cryptorl power` (cryptorl_jax/studies/power.py); do not edit by "
             "hand.", "",
             f"- command: `{command}`",
             f"- config: `{cfg.source}`; commit {git}; machine {platform.node()} "
             f"({platform.processor() or platform.machine()}, "
             f"{(info.get('devices') or {}).get('backend')}); wall time of this invocation "
             f"{seconds / 60:.1f} min; the runs' own wall time, every invocation summed "
             f"(run_info.json): {run_minutes(rows):.1f} min",
             "- oracle: each market's sign policy (market/planted.py, market/heldout.py), "
             "replayed through the same backtest over the same OOS hours as the agents; "
             "`recovered` = ensemble Sharpe / oracle Sharpe; `seed_recovered_min` = the worst "
             "seed of the worst repeat; `seed_recovered_mean_min` = the worst seed's recovery "
             "averaged over the repeats; `drift_captured` = the planted next-hour drift the "
             "ensemble's exposure earns as a share of what the sign oracle's earns at the same "
             "leverage (no return noise in it: 1 = the oracle, 0 = nothing; OOS, and "
             "`insample_` over the agents' own train rows)",
             *protocol_lines(), *_DETECTED]
    headed = present != ["selection"]
    for market_set in present:
        lines += set_lines(summary[summary["set"] == market_set],
                           rows[rows["set"] == market_set], market_set, headed)
    lines += ["![power curve](power.png)", "", "## Runs", "",
              markdown_table(rows.drop(columns=["run_dir"]).set_index("family"), ".3g"), ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


SET_HEADINGS = {
    "selection": ("## The selection set: market/planted.py's markets, where settings may be "
                  "chosen"),
    "heldout": "## The held-out set: market/heldout.py's markets, where no setting was chosen",
}


def set_lines(summary: pd.DataFrame, rows: pd.DataFrame, market_set: str,
              headed: bool) -> list[str]:
    """One set's part of the page: its heading (when the page has more than the selection
    set), what was chosen on it, the repeats per family and strength, its detection lines,
    its table and its baselines' table."""
    show = summary[["family", "strength", "repeats", "oracle_sharpe_mean", "sharpe_mean",
                    "sharpe_sd", "seed_sharpe_mean_mean", "recovered_mean",
                    "seed_recovered_min", "seed_recovered_mean_min", "drift_captured_mean",
                    "insample_drift_captured_mean", "insample_sharpe_mean", "gap_mean",
                    "turnover_mean"]].copy()
    for col, label in DETECTIONS.items():
        show[f"detected: {label}"] = [detection_text(r, rate_name(col))
                                      for r in summary.to_dict("records")]
    lines = []
    if headed:
        chosen = ("No setting was chosen on this set: every default was chosen on the "
                  "selection set (`studies.protocol.DECISIONS`) before these runs were read."
                  if market_set == "heldout" else
                  "Settings may be chosen on this set; today's defaults were "
                  "(`studies.protocol.DECISIONS`).")
        lines += ["", SET_HEADINGS[market_set], "", chosen, ""]
    counts = ", ".join(f"{r['family']} s{r['strength']:g}: {int(r['repeats'])}"
                       for r in summary.to_dict("records"))
    lines += [f"- repeats per family and strength ({market_set} set): {counts}",
              *_detection_lines(summary), "",
              markdown_table(show.set_index("family"), ".3g"), "",
              *_baseline_lines(summary, rows, "###" if headed else "##")]
    return lines


def with_set(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a `set` column (rows written before issue 40 are the selection set's)."""
    return frame if "set" in frame.columns else frame.assign(set="selection")


_DETECTED = ["- detected: **verdict** = the verdict the run's report prints (\"Evidence of an "
             "edge\": stitched OOS Sharpe > 0, PSR >= 0.95^(1/N) with N the configurations run "
             "over the window, and no memorised / collapsed / flat flag; "
             "`report.verdict.edge`, docs/methods.md); **PSR only** = PSR >= 0.95, beside it; "
             "**oracle** and **best baseline** = the verdict's rule on the oracle's OOS path "
             "(N = 1) and on the fitted baseline with the best OOS Sharpe (N = the baselines it "
             "was picked from): the rule's power apart from the learner's. Each cell: "
             "detections / runs (Wilson 95 % interval)"]


def _detection_lines(summary: pd.DataFrame) -> list[str]:
    """The false positives on `none`, and the OOS length the rule would need."""
    lines = []
    for r in summary.to_dict("records"):
        if r["strength"] == 0 and r.get("detection_n", 0) > 0:
            lines.append(f"- false positives on `{r['family']}` (nothing planted): the verdict "
                         f"said edge in {detection_text(r, 'detection')} runs")
    for r in summary.to_dict("records"):
        if r["strength"] > 0 and math.isfinite(r.get("mds", math.nan)):
            lines.append(
                f"- {r['family']} s{r['strength']:g}: with {r['oos_hours']:,.0f} OOS hours the "
                f"rule detects a true Sharpe of {r['mds']:.2f} with "
                f"{100 * calibration.POWER:.0f} % "
                f"probability (`report.calibration`); the oracle's mean Sharpe here, "
                f"{r['oracle_sharpe_mean']:.2f}, needs {_hours(r['hours_to_detect_oracle'])}, "
                f"the agents' mean, {r['sharpe_mean']:.2f}, "
                f"{_hours(r['hours_to_detect_agents'])}")
    return lines


def _hours(h: float) -> str:
    if not math.isfinite(h):
        return "more than 50 years of hours (or a Sharpe <= 0: never)"
    return f"{h:,.0f} OOS hours ({h / 720:.1f} months of 720 h)"


def _baseline_lines(summary: pd.DataFrame, rows: pd.DataFrame, level: str = "##"
                    ) -> list[str]:
    names = baseline_names(rows)
    if not names:
        return []
    cols = ["family", "strength", "oracle_sharpe_mean", "sharpe_mean", "recovered_mean"]
    for n in names:
        cols += [f"{n}_sharpe_mean", f"{n}_recovered_mean"]
    return [f"{level} Baselines that read the market, on the same planted markets", "",
            "Fitted on each segment's train rows and traded like the agent "
            "(`backtest.strategies`): on a planted trend momentum should find it, on a planted "
            "lead the ridge forecaster (it reads the context asset's features).", "",
            markdown_table(summary[[c for c in cols if c in summary.columns]]
                           .set_index("family"), ".3g"), ""]


