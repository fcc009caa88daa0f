"""What a backtest's numbers are made of: chosen vs mechanical turnover, and the flags.

Turnover attribution. A trade at t moves the book from the drifted weight w_t to the target
e*_t = a_t L_t. Since the last trade at s (the no-trade band can hold the position for many
hours) the book held e_s = a_s L_s and let it drift, so

    e*_t - w_t = (a_t - a_s) L_t  +  a_s (L_t - L_s)  +  (e_s - w_t)
                  chosen             leverage             drift

(s = the start, flat, before the first trade). The trade's turnover u_t = |e*_t - w_t| is split
between the three in proportion to their absolute sizes, so `chosen + mechanical == turnover`
hour by hour, with mechanical = the leverage part + the drift part: the turnover the vol
targeting and the price path make by themselves, which no decision of the agent asked for.
Without the band (s = t - 1) this is the familiar split of |e_t - w_t|. The split by
absolute sizes is a convention (the three parts can cancel); it is exact for trades where they
share a sign and a fair apportionment otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from cryptorl_jax.backtest.columns import fitted_baselines
from cryptorl_jax.backtest.inference import variance_inflation
from cryptorl_jax.backtest.metrics import sharpe
from cryptorl_jax.core.units import HOURS_PER_YEAR


def turnover_attribution(action, leverage, weight, turnover) -> tuple[np.ndarray, np.ndarray]:
    """(chosen [n], mechanical [n]) turnover of one book, from `simulate`'s per-step arrays
    (action, leverage, weight = w_t, turnover = u_t). chosen + mechanical == turnover."""
    a = np.asarray(action, np.float64)
    lev = np.asarray(leverage, np.float64)
    w = np.asarray(weight, np.float64)
    u = np.asarray(turnover, np.float64)
    n = len(u)
    traded = u > 0
    # index of the last trade strictly before each step (-1: none, a flat book)
    idx = np.where(traded, np.arange(n), -1)
    last = np.maximum.accumulate(idx)
    prev = np.r_[-1, last[:-1]]
    has = prev >= 0
    a_ref = np.where(has, a[np.maximum(prev, 0)], 0.0)
    l_ref = np.where(has, lev[np.maximum(prev, 0)], 0.0)
    e_ref = a_ref * l_ref
    chosen = np.abs(a - a_ref) * lev
    lever = np.abs(a_ref) * np.abs(lev - l_ref)
    drift = np.abs(e_ref - w)
    total = chosen + lever + drift
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, chosen / np.where(total > 0, total, 1.0), 0.0)
    chosen_u = np.where(traded, u * share, 0.0)
    return chosen_u, u - chosen_u


# --------------------------------------------------------------------------------------------
# Per-segment diagnostics and flags (docs/methods.md, "Diagnostics and flags")
# --------------------------------------------------------------------------------------------

# A flag's threshold; docs/methods.md ("Diagnostics and flags") gives the reasons.
MEMORISED_LEVEL = 0.01  # one-sided level of the test: in-sample Sharpe > OOS Sharpe ...
MEMORISED_MIN_INSAMPLE = 2.0  # ... and, with no baseline on the same rows, in-sample above this
COLLAPSED_CORR = 0.9  # returns correlated with buy & hold's above this ...
COLLAPSED_LONG_SHARE = 0.95  # ... while long in more than this share of hours: buy & hold
FLAT_EXPOSURE = 0.05  # mean |exposure| below this (units of NAV): flat
CHURN_TURNOVER = 50.0  # turnover above this many x NAV a year: churning (>= 3.5 % at 7 bps)
# the simple baselines whose in-sample Sharpe says what the train rows give without learning
# (beside the fitted ones, `backtest.columns.fitted_baselines`)
SIMPLE_BASELINES = ("buy_and_hold", "vol_targeted_buy_and_hold")

FLAGS = {
    "memorised": "in-sample Sharpe above OOS by more than the two windows' noise explains, "
                 "and above what the best simple baseline earns on the same train rows",
    "collapsed to buy & hold": "long nearly always, returns track buy & hold's",
    "flat": "hardly any position",
    "churning": "turnover that costs more than any plausible edge",
}

DIAGNOSTIC_COLUMNS = ("oos_sharpe", "insample_sharpe", "insample_seed_sharpe",
                      "insample_baseline_sharpe", "sharpe_gap", "sharpe_gap_se", "sharpe_gap_z",
                      "turnover", "exposure", "turnover_per_exposure", "mechanical_share",
                      "action_dispersion", "action_std", "corr_buy_and_hold", "long_share",
                      "flags")


def _sharpe(r) -> float:
    return float(sharpe(np.asarray(r, np.float64), HOURS_PER_YEAR))


def sharpe_se(r, periods: float = HOURS_PER_YEAR) -> float:
    """The annualised standard error of the Sharpe ratio of r: sqrt(v (1 + SR^2 / 2) / T) per
    period (Lo 2002, i.i.d. returns; SR the per-period Sharpe, T the periods), v = the
    returns' Newey-West variance inflation floored at 1 (`inference.variance_inflation`:
    autocorrelation widens the error, never narrows it), times sqrt(periods)."""
    r = np.asarray(r, np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    sd = r.std(ddof=1) if n > 1 else 0.0
    if n < 3 or not sd > 0:
        return math.nan
    sr = r.mean() / sd
    v = max(1.0, variance_inflation(r))
    return float(math.sqrt(v * (1.0 + 0.5 * sr * sr) / n) * math.sqrt(periods))


def best_baseline_sharpe(frame: pd.DataFrame) -> float:
    """The highest Sharpe among the simple baselines of a backtest frame (buy & hold, its vol-
    targeted version, and the baselines fitted on the train rows); NaN if it holds none."""
    names = [c for c in SIMPLE_BASELINES if c in frame] + fitted_baselines(frame)
    values = [v for v in (_sharpe(frame[c]) for c in names) if np.isfinite(v)]
    return max(values) if values else math.nan


def memorised_z() -> float:
    """The one-sided critical value of the memorised flag's test, z_{1 - MEMORISED_LEVEL}."""
    return float(sps.norm.ppf(1.0 - MEMORISED_LEVEL))


def seed_columns(frame, prefix: str) -> list[str]:
    """The per-seed columns `<prefix><s>` of a backtest frame (seed_, action_), by seed."""
    return sorted((c for c in frame.columns if c.startswith(prefix)
                   and c[len(prefix):].isdigit()), key=lambda c: int(c[len(prefix):]))


def frame_diagnostics(oos, insample=None) -> dict[str, float]:
    """The diagnostics of one backtest frame (`walkforward.runner.backtest_rows`), with the
    same agents' frame over their own train rows when given. NaN where a column is missing
    (frames written before these columns existed)."""
    nan = float("nan")
    out: dict[str, float] = {"oos_sharpe": _sharpe(oos["strategy"]),
                             "oos_sharpe_se": sharpe_se(oos["strategy"])}
    if insample is not None and len(insample):
        out["insample_sharpe"] = _sharpe(insample["strategy"])
        out["insample_sharpe_se"] = sharpe_se(insample["strategy"])
        seeds = seed_columns(insample, "seed_")
        out["insample_seed_sharpe"] = (float(np.mean([_sharpe(insample[c]) for c in seeds]))
                                       if seeds else nan)
        out["insample_baseline_sharpe"] = best_baseline_sharpe(insample)
    else:
        out["insample_sharpe"] = out["insample_seed_sharpe"] = nan
        out["insample_sharpe_se"] = out["insample_baseline_sharpe"] = nan
    _gap(out)
    years = len(oos) / HOURS_PER_YEAR
    e = np.abs(oos["exposure"].to_numpy(np.float64)) if "exposure" in oos else None
    u = oos["turnover"].to_numpy(np.float64) if "turnover" in oos else None
    out["turnover"] = nan if u is None else float(u.sum() / years)
    out["exposure"] = nan if e is None else float(e.mean())
    out["turnover_per_exposure"] = (out["turnover"] / out["exposure"]
                                    if out["exposure"] and out["exposure"] > 0 else nan)
    if "turnover_mechanical" in oos and u is not None and u.sum() > 0:
        out["mechanical_share"] = float(oos["turnover_mechanical"].sum() / u.sum())
    else:
        out["mechanical_share"] = nan
    actions = seed_columns(oos, "action_")
    if actions:
        a = oos[actions].to_numpy(np.float64)
        out["action_dispersion"] = float(a.std(axis=1).mean()) if a.shape[1] > 1 else 0.0
        out["action_std"] = float(a.std(axis=0).mean())
    else:
        out["action_dispersion"] = out["action_std"] = nan
    if "buy_and_hold" in oos:
        s, b = oos["strategy"].to_numpy(np.float64), oos["buy_and_hold"].to_numpy(np.float64)
        ok = s.std() > 0 and b.std() > 0
        out["corr_buy_and_hold"] = float(np.corrcoef(s, b)[0, 1]) if ok else nan
    else:
        out["corr_buy_and_hold"] = nan
    out["long_share"] = nan if "exposure" not in oos else float(
        (oos["exposure"].to_numpy() > 0).mean())
    return out


def flags_in(table: pd.DataFrame, row: str = "all") -> list[str]:
    """The flags of one row of a diagnostics table (its `flags` cell, ", "-joined)."""
    text = str(table.loc[row, "flags"])
    return [f for f in text.split(", ") if f and f != "nan"]


def _gap(d: dict[str, float]) -> None:
    """The gap in-sample minus OOS Sharpe, its standard error from the two windows (taken as
    independent: sqrt(se_in^2 + se_oos^2)) and gap / se, into d."""
    d["sharpe_gap"] = d["insample_sharpe"] - d["oos_sharpe"]
    d["sharpe_gap_se"] = math.hypot(d["insample_sharpe_se"], d["oos_sharpe_se"])
    d["sharpe_gap_z"] = (d["sharpe_gap"] / d["sharpe_gap_se"]
                         if d["sharpe_gap_se"] > 0 else math.nan)


def memorised(d: dict[str, float]) -> bool:
    """The memorised flag: the in-sample Sharpe exceeds the OOS Sharpe by more than the noise of
    the two windows explains (gap / se > z_{1 - MEMORISED_LEVEL}, one-sided) AND it is more
    than the train rows give without learning: above the best simple baseline's in-sample
    Sharpe on the same rows (and above 0), or, where no baseline was run there, above
    MEMORISED_MIN_INSAMPLE."""
    z, ins = d.get("sharpe_gap_z", np.nan), d.get("insample_sharpe", np.nan)
    if not (np.isfinite(z) and np.isfinite(ins)):
        return False
    base = d.get("insample_baseline_sharpe", np.nan)
    bar = max(float(base), 0.0) if np.isfinite(base) else MEMORISED_MIN_INSAMPLE
    return bool(z > memorised_z() and ins > bar)


def flags_of(d: dict[str, float]) -> list[str]:
    """The plain flags a diagnostics row raises (thresholds: the module constants)."""
    out = []
    if memorised(d):
        out.append("memorised")
    flat = d.get("exposure", np.nan) < FLAT_EXPOSURE
    if d.get("corr_buy_and_hold", np.nan) > COLLAPSED_CORR and \
            d.get("long_share", np.nan) > COLLAPSED_LONG_SHARE and not flat:
        out.append("collapsed to buy & hold")
    if flat:
        out.append("flat")
    if d.get("turnover", np.nan) > CHURN_TURNOVER:
        out.append("churning")
    return out


def diagnostics_table(oos_by_segment: dict, insample_by_segment: dict,
                      stitched: pd.DataFrame) -> pd.DataFrame:
    """One row per segment and `all` (pandas DataFrame indexed by segment label): the
    diagnostics and their flags. The `all` row's OOS figures are the stitched series'; its
    in-sample Sharpe, its baseline's and the in-sample standard error are the means of the
    segments' (each agent on its own train rows; the mean of the errors bounds the error of
    the mean from above whatever the overlapping windows' correlation)."""
    rows = {}
    for k, frame in oos_by_segment.items():
        d = frame_diagnostics(frame, insample_by_segment.get(k))
        d["flags"] = ", ".join(flags_of(d))
        rows[str(k)] = d
    if rows:
        d = frame_diagnostics(stitched)
        for key in ("insample_sharpe", "insample_seed_sharpe", "insample_baseline_sharpe",
                    "insample_sharpe_se"):
            values = [r[key] for r in rows.values() if np.isfinite(r[key])]
            d[key] = float(np.mean(values)) if values else np.nan
        _gap(d)
        d["flags"] = ", ".join(flags_of(d))
        rows["all"] = d
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "segment"
    return table[[c for c in DIAGNOSTIC_COLUMNS if c in table.columns]]
