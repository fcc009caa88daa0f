"""What a sceptic asks of a walk-forward run beyond its own Sharpe (the report's sections):

- does the agent beat the baselines that read the same market (`backtest.strategies`), each
  with the agent's PSR, timing null and cost stress;
- after the comparison itself is deflated: Hansen's SPA and Romano-Wolf's StepM over {the
  ensemble, each seed, each baseline} against buy & hold and against flat
  (`backtest.inference.multiple_test`);
- could the OOS window have detected an edge at all: the minimum detectable Sharpe of each
  segment and of the stitched series, and the MinBTL for the N tried;
- how many tries a sceptic counts (runs over the window, tuning trials, seeds, the baselines'
  grids) and how many of them are effectively independent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import inference, nulls
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe, sharpe
from cryptorl_jax.config import EnvConfig
from cryptorl_jax.layout import RunDir

PERIODS = 8760
UNDERPOWERED_SHARPE = 2.0  # a segment that cannot detect an annual Sharpe of 2 is underpowered
N_BASELINE_NULLS = 1000


# --------------------------------------------------------------------------------------------
# The baselines that read the market, measured as the agent is
# --------------------------------------------------------------------------------------------


def _timing_p(frame: pd.DataFrame, name: str, env: EnvConfig, seed: int) -> float:
    need = (f"{name}_action", "leverage", "tradable", "benchmark")
    if any(c not in frame for c in need):
        return math.nan
    seg = frame["segment"].to_numpy() if "segment" in frame else None
    null = nulls.action_timing_null(frame[f"{name}_action"].to_numpy(np.float64)[None],
                                    frame["leverage"].to_numpy(np.float64),
                                    frame["benchmark"].to_numpy(np.float64),
                                    frame["tradable"].to_numpy(bool), seg, env,
                                    n_null=N_BASELINE_NULLS, seed=seed)
    return null.p_value


def chosen_parameters(workdir: Path, segments: list[int]) -> dict[str, list[str]]:
    """Each fitted baseline's chosen setting per segment (baselines.json), as short text."""
    out: dict[str, list[str]] = {}
    rd = RunDir(workdir)
    for k in segments:
        p = rd.segment(k).baselines
        if not p.is_file():
            continue
        for name, rec in json.loads(p.read_text()).items():
            keys = [key for key in ("lookback", "fast", "slow", "horizon", "alpha") if key in rec]
            out.setdefault(name, []).append("/".join(f"{rec[key]:g}" for key in keys))
    return out


def baseline_table(oos: pd.DataFrame, comparison: pd.DataFrame, env: EnvConfig,
                   workdir: Path, segments: list[int], seed: int = 0) -> pd.DataFrame:
    """The ensemble and each fitted baseline over the stitched OOS hours: Sharpe at 1x / 0x /
    2x costs, PSR, the timing null's p, turnover, exposure and the settings each segment
    chose (empty without fitted baselines)."""
    names = oos_lib.fitted_baselines(oos)
    if not names:
        return pd.DataFrame()
    chosen = chosen_parameters(workdir, segments)
    rows = {}
    for i, name in enumerate(["strategy", *names]):
        c = comparison.loc[name]
        row = {"sharpe": c["sharpe"],
               "sharpe_0x": comparison.loc[f"{name}_zero_cost", "sharpe"]
               if f"{name}_zero_cost" in comparison.index else math.nan,
               "sharpe_2x": comparison.loc[f"{name}_2x_cost", "sharpe"]
               if f"{name}_2x_cost" in comparison.index else math.nan,
               "total_return": c["total_return"], "max_drawdown": c["max_drawdown"],
               "psr": probabilistic_sharpe(oos[name]),
               "turnover": c.get("turnover", math.nan), "exposure": c.get("exposure", math.nan)}
        if name != "strategy":
            row["timing_p_value"] = _timing_p(oos, name, env, seed + 7919 * (i + 1))
            row["chosen_per_segment"] = ", ".join(chosen.get(name, []))
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "series"
    return frame


# --------------------------------------------------------------------------------------------
# SPA / StepM
# --------------------------------------------------------------------------------------------


def tested_strategies(oos: pd.DataFrame) -> list[str]:
    """The strategies the multiple test compares: the ensemble, each seed, each fitted
    baseline and vol-targeted buy & hold (all at 1x costs)."""
    names = ["strategy", *oos_lib.seed_names(oos), *oos_lib.fitted_baselines(oos),
             "vol_targeted_buy_and_hold"]
    return [n for n in names if n in oos.columns]


def multiple_tests(oos: pd.DataFrame, reps: int, seed: int = 0) -> list[inference.MultipleTest]:
    """SPA and StepM of `tested_strategies` against buy & hold and against flat."""
    names = tested_strategies(oos)
    out = []
    for i, bench in enumerate(("buy_and_hold", "flat")):
        if bench not in oos.columns or len(names) == 0:
            continue
        cols = [n for n in names if n != bench]
        if bench == "flat" and "buy_and_hold" in oos.columns:
            cols.append("buy_and_hold")
        out.append(inference.multiple_test(oos[cols], oos[bench].to_numpy(np.float64), bench,
                                           reps=reps, seed=seed + i))
    return out


# --------------------------------------------------------------------------------------------
# Power before results
# --------------------------------------------------------------------------------------------


def power_table(oos: pd.DataFrame, segments: list[int]) -> pd.DataFrame:
    """Per segment and stitched (`all`): OOS hours, the variance inflation of the ensemble's
    hourly returns (Newey-West), the minimum detectable annual Sharpe at 5 % / 80 % with and
    without it, and whether the segment is underpowered (cannot detect a Sharpe of 2)."""
    rows = []
    parts = [(str(k), oos[oos["segment"] == k]) for k in segments] + [("all", oos)]
    for label, part in parts:
        r = part["strategy"].to_numpy(np.float64)
        vif = inference.variance_inflation(r)
        mde = inference.min_detectable_sharpe(len(r), vif=vif)
        rows.append({"segment": label, "hours": len(r), "variance_inflation": vif,
                     "mde_sharpe_iid": inference.min_detectable_sharpe(len(r)),
                     "mde_sharpe": mde, "underpowered": bool(mde > UNDERPOWERED_SHARPE)})
    return pd.DataFrame(rows).set_index("segment")


# --------------------------------------------------------------------------------------------
# The sceptic's N
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialCount:
    """What the OOS Deflated Sharpe should count, and how many of those tries are independent."""

    runs: int  # walk-forward configurations registered over this window and market
    tuning_trials: int  # the trials of the study that chose the config (0 without one)
    seeds: int  # the population's members
    baseline_choices: int  # every grid point the fitted baselines tried
    mean_correlation: float  # of the return series held (ensemble, seeds, baselines)
    series: int  # how many series that correlation was measured on
    sr_variance: float  # per-period Sharpe variance used for the expected maximum

    @property
    def total(self) -> int:
        return self.runs + self.tuning_trials + self.seeds + self.baseline_choices

    @property
    def effective(self) -> float:
        rho = self.mean_correlation
        if not math.isfinite(rho):
            return float(self.total)
        return float(min(max(rho + (1.0 - rho) * self.total, 1.0), self.total))

    def dsr(self, r: np.ndarray, effective: bool = False) -> float:
        n = self.effective if effective else self.total
        emax = expected_max_sharpe(max(int(round(n)), 1), self.sr_variance)
        return probabilistic_sharpe(r, emax)


def trial_count(oos: pd.DataFrame, workdir: Path, segments: list[int], n_runs: int,
                registry_variance: float, tuning_trials: int) -> TrialCount:
    """The sceptic's N for this run: the registered runs, the tuning trials named by
    wfo.trial_log, the seeds, and every grid point of the fitted baselines (their largest
    grid over the segments); the per-period Sharpe variance is the larger of the registered
    runs' and that of the series this run holds (ensemble, seeds, fitted baselines)."""
    seeds = len(oos_lib.seed_names(oos))
    choices: dict[str, int] = {}
    rd = RunDir(workdir)
    for k in segments:
        p = rd.segment(k).baselines
        if p.is_file():
            for name, rec in json.loads(p.read_text()).items():
                choices[name] = max(choices.get(name, 0), int(rec.get("n_tried", 1)))
    held = ["strategy", *oos_lib.seed_names(oos), *oos_lib.fitted_baselines(oos)]
    held = [c for c in held if c in oos.columns]
    _, rho, _ = inference.effective_trials(oos[held].to_numpy(np.float64))
    srs = [sharpe(oos[c].to_numpy(np.float64), 1.0) for c in held]
    srs = [s for s in srs if math.isfinite(s)]
    var = float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    return TrialCount(runs=n_runs, tuning_trials=tuning_trials, seeds=seeds,
                      baseline_choices=sum(choices.values()), mean_correlation=rho,
                      series=len(held), sr_variance=max(var, registry_variance))


# --------------------------------------------------------------------------------------------
# The report's sections
# --------------------------------------------------------------------------------------------


def _f(x: Any, spec: str = ".2f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "undefined" if not math.isfinite(v) else format(v, spec)


def rl_vs_baselines_lines(table: pd.DataFrame, tests: list[inference.MultipleTest],
                          markdown_table: Any) -> list[str]:
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
        lines += [f"The ensemble's Sharpe {_f(ens)} is above {beaten} of the {len(others)} "
                  f"baselines; the best baseline is `{best}` at {_f(others[best])}.", ""]
    if tests:
        lines += ["### Multiple testing across strategies (SPA, StepM)", "",
                  "Hansen's SPA (H0: no strategy beats the benchmark; p-values lower / "
                  "consistent / upper) and Romano-Wolf StepM at 5 % (the strategies that beat "
                  "it, family-wise) over the ensemble, each seed, each fitted baseline and "
                  "vol-targeted buy & hold (against flat, buy & hold too), from `arch`'s "
                  "stationary bootstrap on hourly returns at 1x costs. The mean block length "
                  "is Politis and White's automatic choice on the return differentials, at "
                  f"least {inference.MIN_BLOCK_HOURS} h so that a block keeps the daily cycle "
                  "of hourly volatility.", "",
                  markdown_table(pd.DataFrame([t.row() for t in tests]).set_index("benchmark"),
                                 ".3g"), ""]
        for t in tests:
            if "strategy" in t.superior:
                lines.append(f"- Against {t.benchmark}: the ensemble is among the strategies "
                             "StepM finds superior at 5 %.")
            else:
                lines.append(f"- Against {t.benchmark}: the ensemble is not among the "
                             f"strategies StepM finds superior at 5 % ("
                             f"{', '.join(t.superior) or 'none is'}"
                             f"{' are' if len(t.superior) > 1 else ''}).")
        lines.append("")
    return lines


def power_lines(power: pd.DataFrame, count: TrialCount, oos_years: float,
                markdown_table: Any) -> list[str]:
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
             f"an annual Sharpe of {_f(stitched['mde_sharpe'])} or more; "
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
            f"{_f(count.mean_correlation)}, so **N_eff = {count.effective:.1f}** "
            "(rho + (1 - rho) N).",
            f"- Deflated Sharpe of the ensemble at N = {count.total}: **{_f(dsr, '.3f')}**; at "
            f"N_eff: **{_f(dsr_eff, '.3f')}** (per-period Sharpe variance "
            f"{count.sr_variance:.3g}: the larger of the registered runs' and the held "
            "series').", ""]
