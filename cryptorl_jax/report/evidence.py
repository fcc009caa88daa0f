"""What a sceptic asks of a walk-forward run beyond its own Sharpe (the summary's sections:
`report.summary`; the tables: baselines.csv, multiple_testing.csv, power.csv):

- does the agent beat the baselines that read the same market (`backtest.strategies`), each
  with the agent's PSR, timing null and cost stress;
- after the comparison itself is deflated: Hansen's SPA and Romano-Wolf's StepM over {the
  ensemble, each seed, each baseline} against buy & hold and against flat on mean return
  (`backtest.inference.multiple_test`), and against buy & hold risk-adjusted
  (`backtest.inference.risk_adjusted_test`: vol-scaled to buy & hold's sd);
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

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import inference, nulls
from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest.memory import baseline_memory_hours
from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe, sharpe
from cryptorl_jax.config import Config
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report.registry import OOSDeflation
from cryptorl_jax.report.trials import read_trial_log

UNDERPOWERED_SHARPE = 2.0  # a segment that cannot detect an annual Sharpe of 2 is underpowered
N_BASELINE_NULLS = 1000


# --------------------------------------------------------------------------------------------
# The baselines that read the market, measured as the agent is
# --------------------------------------------------------------------------------------------


def _timing_p(frame: pd.DataFrame, name: str, cfg: Config, seed: int) -> float:
    """The timing null of one baseline's action path, its lags beyond the baseline's own
    declared memory (`backtest.memory.baseline_memory_hours`)."""
    need = (f"{name}_action", "leverage", "tradable", "benchmark")
    if any(c not in frame for c in need):
        return math.nan
    seg = frame["segment"].to_numpy() if "segment" in frame else None
    null = nulls.action_timing_null(frame[f"{name}_action"].to_numpy(np.float64)[None],
                                    frame["leverage"].to_numpy(np.float64),
                                    frame["benchmark"].to_numpy(np.float64),
                                    frame["tradable"].to_numpy(bool), seg, cfg.env,
                                    n_null=N_BASELINE_NULLS, seed=seed,
                                    memory_hours=baseline_memory_hours(cfg, name))
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


def baseline_table(oos: pd.DataFrame, comparison: pd.DataFrame, cfg: Config,
                   workdir: Path, segments: list[int], seed: int = 0) -> pd.DataFrame:
    """The ensemble and each fitted baseline over the stitched OOS hours: Sharpe at 1x / 0x /
    2x costs, PSR, the timing null's p, turnover, exposure and the settings each segment
    chose (empty without fitted baselines); each baseline's timing null lags beyond its own
    declared memory (`backtest.memory.baseline_memory_hours`)."""
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
            row["timing_p_value"] = _timing_p(oos, name, cfg, seed + 7919 * (i + 1))
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
    """SPA and StepM of `tested_strategies` on mean return against buy & hold and against
    flat, and risk-adjusted (each strategy vol-scaled to buy & hold's sd) against buy & hold:
    in that order. Against flat the risk-adjusted test would be the mean-return one again
    (a constant scale leaves a studentised differential of a zero benchmark unchanged)."""
    names = tested_strategies(oos)
    out = []
    for i, bench in enumerate(("buy_and_hold", "flat")):
        if bench not in oos.columns or len(names) == 0:
            continue
        cols = [n for n in names if n != bench]
        if bench == "flat" and "buy_and_hold" in oos.columns:
            cols.append("buy_and_hold")
        b = oos[bench].to_numpy(np.float64)
        if not _any_differs(oos[cols], b):
            continue
        out.append(inference.multiple_test(oos[cols], b, bench, reps=reps, seed=seed + i))
        if bench == "buy_and_hold" and _scalable(oos[cols], b):
            out.append(inference.risk_adjusted_test(oos[cols], b, bench, reps=reps,
                                                    seed=seed + 2))
    return out


def _any_differs(returns: pd.DataFrame, bench: np.ndarray) -> bool:
    """Whether some strategy differs from the benchmark on the rows without a NaN."""
    data = returns.assign(_bench=bench).dropna()
    return bool(len(data) > 1 and (data[returns.columns].sub(data["_bench"], axis=0)
                                   .nunique() > 1).any())


def _scalable(returns: pd.DataFrame, bench: np.ndarray) -> bool:
    """Whether the benchmark and some strategy move on the rows without a NaN (what
    `inference.risk_adjusted_test` needs)."""
    data = returns.assign(_bench=bench).dropna()
    sd = data.std(ddof=1)
    return bool(len(data) > 2 and sd["_bench"] > 0 and (sd[returns.columns] > 0).any())


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
# The run's evidence, computed and written
# --------------------------------------------------------------------------------------------


@dataclass
class Sceptic:
    """The report's evidence beyond the run's own Sharpe."""

    baselines: pd.DataFrame
    tests: list
    power: pd.DataFrame
    count: TrialCount
    dsr: float
    dsr_effective: float


def sceptic_evidence(cfg: Config, workdir: Path, oos: pd.DataFrame, segments: list[int],
                     comparison: pd.DataFrame, table: pd.DataFrame,
                     deflation: OOSDeflation) -> Sceptic:
    """Baselines, SPA/StepM, power and the sceptic's N (it reads the segments'
    baselines.json); adds their columns to metrics.csv's rows (`table`, in place).
    `write_sceptic` writes them."""
    bl = baseline_table(oos, comparison, cfg, workdir, segments, cfg.seed)
    tests = multiple_tests(oos, cfg.baselines.bootstrap_reps, cfg.seed)
    power = power_table(oos, segments)
    n_tuning = read_trial_log(cfg.wfo.trial_log, workdir)[0] if cfg.wfo.trial_log else 0
    count = trial_count(oos, workdir, segments, deflation.n_runs, deflation.sr_variance,
                        n_tuning)
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
