"""The report's verdict: one paragraph that says whether the run shows evidence of an edge,
from its stitched-OOS figures (metrics.csv's `all` row) and its flags (diagnostics.csv).

The rule and its calibration: `report.calibration` and docs/methods.md ("The statistics of the
report"). "Edge" when the stitched OOS Sharpe is positive, its PSR reaches 0.95^(1/N) (N = the
configurations run over this OOS window; 0.95 for one), and no flag says the figure is made by
something else (VETO_FLAGS). The paragraph names the minimum detectable Sharpe for the run's OOS
length, and reports the timing null beside the verdict, not as part of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cryptorl_jax.backtest import nulls
from cryptorl_jax.backtest.diagnostics import FLAGS
from cryptorl_jax.report.calibration import LEVEL, POWER, min_detectable_sharpe, passes, psr_level


@dataclass(frozen=True)
class Verdict:
    """The verdict of a run: `edge` (the rule's yes / no) and `text`, the paragraph summary.md
    and report.html open with (`report.Run.verdict` rebuilds it from the run's files)."""

    edge: bool
    text: str

    def __str__(self) -> str:
        return self.text


VETO_FLAGS = ("memorised", "collapsed to buy & hold", "flat")
"""Flags that say the figure is made by something other than a skill that generalises; any other
flag (churning) only warns."""


def _num(agg: Mapping, key: str) -> float:
    try:
        return float(agg.get(key))
    except (TypeError, ValueError):
        return float("nan")


def _n_trials(agg: Mapping, n_trials: float | None) -> float:
    n = _num(agg, "n_trials") if n_trials is None else float(n_trials)
    return n if math.isfinite(n) and n >= 1 else 1.0


def edge(agg: Mapping, flags: Sequence[str], n_trials: float | None = None,
         level: float = LEVEL) -> bool:
    """The verdict's yes / no: `calibration.passes` on the `all` row's Sharpe and PSR at N =
    n_trials (default: the row's `n_trials`) and no flag in VETO_FLAGS."""
    n = _n_trials(agg, n_trials)
    return bool(passes(_num(agg, "sharpe"), _num(agg, "psr"), n, level)) and \
        not any(f in VETO_FLAGS for f in flags)


def detection_sentence(hours: float, n_trials: float, level: float = LEVEL) -> str:
    """'With H OOS hours this rule detects a true Sharpe of X with 80 % probability ...'."""
    if not (math.isfinite(hours) and hours >= 3):
        return "The OOS length is unknown, so the rule's power is not stated."
    mds = min_detectable_sharpe(int(hours), n_trials, level=level)
    n_text = (f"with N = {n_trials:g} configurations over the window"
              if n_trials > 1 else "one configuration over the window")
    return (f"With {int(hours):,} OOS hours this rule detects a true Sharpe of "
            f"{_fmt(mds, '.2f')} with {100 * POWER:.0f} % probability ({n_text}; hourly returns "
            "without autocorrelation, docs/methods.md).")


def timing_undefined_reason(agg: Mapping) -> str:
    """Why the `all` row's timing p is undefined: the OOS too short for the agents' declared
    memory (`nulls.too_short` on n_periods and timing_memory_hours), or, failing that, no
    per-seed actions and leverage in the segments' frames or a constant series."""
    mem, hours = _num(agg, "timing_memory_hours"), _num(agg, "n_periods")
    short = (nulls.too_short(int(hours), int(mem))
             if math.isfinite(mem) and math.isfinite(hours) else None)
    return short or ("no per-seed actions and leverage in these segments' frames, or a "
                     "constant series")


def timing_sentence(p: float, p_level: float = 0.05, undefined_reason: str | None = None) -> str:
    """The timing null, beside the verdict (`undefined_reason` says why when p is NaN)."""
    head = "Beside the verdict, not part of its rule: "
    if not math.isfinite(p):
        why = f" ({undefined_reason})" if undefined_reason else ""
        return head + f"the timing null is undefined for this run{why}."
    if p < p_level:
        return (head + f"the timing null rejects (p = {_fmt(p)}): the timing of the actions, "
                "not only their average level, earned the Sharpe.")
    return (head + f"the timing null does not reject (p = {_fmt(p)}): the agents' own actions "
            "rotated in time earn as much, so it does not confirm that their timing, rather "
            "than their average position (e.g. net long in a rising market), earned the "
            "Sharpe.")


def verdict(agg: Mapping, flags: Sequence[str], n_runs: int, level: float = LEVEL,
            p_level: float = 0.05) -> tuple[bool, str]:
    """(edge?, one paragraph): `edge` with N = n_runs; the paragraph gives every reason that
    denies an edge, the minimum detectable Sharpe for the run's OOS hours, and the timing
    null's p beside the verdict."""
    n = _n_trials(agg, n_runs)
    sr, psr, dsr = _num(agg, "sharpe"), _num(agg, "psr"), _num(agg, "dsr")
    need = psr_level(n, level)
    level_text = (f"{_fmt(need, '.4g')} (the {100 * (1 - level):g} % family-wise level for "
                  f"N = {n:g} configurations run over this window: {level:g}^(1/{n:g}), Sidak)"
                  if n > 1 else
                  f"{_fmt(need, '.4g')} (one configuration run over this window)")
    reasons = []
    if not sr > 0:
        reasons.append(f"the stitched OOS Sharpe is {_fmt(sr, '.2f')}")
    if not psr >= need:
        reasons.append(f"PSR (P[true Sharpe > 0]) {_fmt(psr)} < {level_text}")
    for f in flags:
        if f in VETO_FLAGS:
            reasons.append(f"flag: {f} ({FLAGS.get(f, 'see the diagnostics')})")
    yes = edge(agg, flags, n, level)
    power = detection_sentence(_num(agg, "n_periods"), n, level)
    timing = timing_sentence(_num(agg, "timing_p_value"), p_level, timing_undefined_reason(agg))
    warnings = [f for f in flags if f not in VETO_FLAGS]
    if yes:
        text = (f"**Evidence of an edge.** The stitched OOS Sharpe is {_fmt(sr, '.2f')} with "
                f"PSR {_fmt(psr)} >= {level_text}, and no flag says the figure is made by "
                "memorisation, buy & hold or a flat book.")
        if n > 1:
            text += (f" (The Deflated Sharpe, {_fmt(dsr)}, is shown below; the rule does not "
                     "use it: docs/methods.md.)")
    else:
        text = "**No evidence of an edge.** " + "; ".join(reasons) + "."
    if "churning" in warnings:
        text += " It churns: check the cost stress before trusting it."
    others = [f for f in warnings if f != "churning"]
    if others:
        text += " Flags that warn but do not deny: " + ", ".join(others) + "."
    text += " " + power
    if not yes:
        text += (" A smaller true Sharpe is missed more than one time in five, so this 'no' "
                 "says little about smaller edges.")
    return yes, text + " " + timing


def _fmt(x: float, spec: str = ".3f") -> str:
    return "undefined" if not np.isfinite(x) else format(x, spec)
