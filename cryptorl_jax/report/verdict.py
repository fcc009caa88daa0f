"""The report's verdict: one paragraph that says whether the run shows evidence of an edge,
from its stitched-OOS figures (metrics.csv's `all` row) and its flags (diagnostics.csv)."""

from __future__ import annotations

import numpy as np

from cryptorl_jax.backtest.diagnostics import FLAGS


def verdict(agg: dict, flags: list[str], n_runs: int, psr_level: float = 0.95,
            p_level: float = 0.05) -> tuple[bool, str]:
    """(edge?, one paragraph): evidence of an edge only when the stitched OOS Sharpe is
    positive, its PSR and Deflated Sharpe both reach `psr_level`, the timing null rejects at
    `p_level`, and no flag says the figure is made by something else (memorised, collapsed to
    buy & hold, flat). Otherwise 'no evidence of an edge', with every reason that applies."""
    def num(key):
        v = agg.get(key)
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    sr, psr, dsr, p = num("sharpe"), num("psr"), num("dsr"), num("timing_p_value")
    reasons = []
    if not sr > 0:
        reasons.append(f"the stitched OOS Sharpe is {_fmt(sr, '.2f')}")
    if not psr >= psr_level:
        reasons.append(f"PSR {_fmt(psr)} < {psr_level} (P[true Sharpe > 0])")
    if not dsr >= psr_level:
        reasons.append(f"Deflated Sharpe {_fmt(dsr)} < {psr_level} over N = {n_runs} "
                       "configuration(s) run on this window")
    if not p < p_level:
        reasons.append(f"timing null p = {_fmt(p)} (rotating the agents' own actions earns as "
                       "much)")
    bad = [f for f in flags if f != "churning"]
    for f in bad:
        reasons.append(f"flag: {f} ({FLAGS[f]})")
    edge = not reasons
    if edge:
        text = (f"**Evidence of an edge.** The stitched OOS Sharpe is {_fmt(sr, '.2f')} with "
                f"PSR {_fmt(psr)} and Deflated Sharpe {_fmt(dsr)} (N = {n_runs}), the timing "
                f"null rejects at p = {_fmt(p)}, and no flag says the figure is made by "
                "memorisation, buy & hold or a flat book.")
        if "churning" in flags:
            text += " It churns: check the cost stress before trusting it."
        return True, text
    return False, ("**No evidence of an edge.** " + "; ".join(reasons) + ".")


def _fmt(x: float, spec: str = ".3f") -> str:
    return "undefined" if not np.isfinite(x) else format(x, spec)
