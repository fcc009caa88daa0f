"""Performance metrics of hourly simple returns, as quantstats defines them (docs/reference.md,
"Metrics").

Risk-free rate 0, `periods_per_year` = 8,760 for hourly bars. The definitions follow quantstats
0.0.86 exactly (tests/backtest/test_metrics.py checks them against it):
sharpe = mean / std(ddof=1) * sqrt(P); sortino = mean / sqrt(sum(min(r,0)^2) / n) * sqrt(P);
max_drawdown = min(NAV / running peak) - 1 with NAV starting at 1 before the first return;
cagr = total_growth ** (P / n) - 1; calmar = cagr / |max_drawdown|; volatility = std * sqrt(P);
hit_rate = share of positive returns among non-zero ones; beta = cov(r, b) / var(b);
alpha = (mean(r) - beta * mean(b)) * P.
The Probabilistic and Deflated Sharpe ratios follow Bailey & Lopez de Prado (2012, 2014).

One departure from quantstats: CAGR and Calmar are NaN for a window shorter than
`core.units.MIN_ANNUALISED_DAYS` (90 days: n < P * 90 / 365, 2,160 hours), where annualising
compound growth multiplies the noise of a few weeks' return; `total_return` is the figure of such
a window. `n_periods` is an integer. Each column's unit: `core.dictionary`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from cryptorl_jax.core.units import HOURS_PER_YEAR, min_annualised_periods

EULER_GAMMA = 0.5772156649015329


def _clean(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {r.shape}")
    if not np.isfinite(r).all():
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"returns contain a non-finite value at position {bad}")
    return r


def sharpe(r: np.ndarray, periods: float) -> float:
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return float(r.mean() / sd * math.sqrt(periods)) if sd > 0 else float("nan")


def sortino(r: np.ndarray, periods: float) -> float:
    if len(r) == 0:
        return float("nan")
    downside = math.sqrt(float((np.minimum(r, 0.0) ** 2).sum()) / len(r))
    return float(r.mean() / downside * math.sqrt(periods)) if downside > 0 else float("nan")


def nav_curve(r: np.ndarray) -> np.ndarray:
    """NAV after each return, starting from 1 before the first."""
    return np.cumprod(1.0 + r)


def max_drawdown(r: np.ndarray) -> float:
    if len(r) == 0:
        return 0.0
    nav = np.concatenate([[1.0], nav_curve(r)])
    return float((nav / np.maximum.accumulate(nav)).min() - 1.0)


def cagr(r: np.ndarray, periods: float) -> float:
    """Compound annual growth; NaN for fewer than `min_annualised_periods(periods)` returns
    (a window shorter than 90 days is not annualised) or a negative growth."""
    if len(r) == 0 or len(r) < min_annualised_periods(periods):
        return float("nan")
    growth = float(np.prod(1.0 + r))
    if growth < 0:
        return float("nan")
    return growth ** (periods / len(r)) - 1.0


def probabilistic_sharpe(r, sr_benchmark: float = 0.0) -> float:
    """P(true per-period Sharpe > sr_benchmark) (Bailey & Lopez de Prado 2012, eq. 11)."""
    r = _clean(r)
    n = len(r)
    if n < 3 or r.std(ddof=1) == 0:
        return float("nan")
    sr = r.mean() / r.std(ddof=1)
    skew = float(sps.skew(r, bias=True))
    kurt = float(sps.kurtosis(r, fisher=False, bias=True))
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return float("nan")
    return float(sps.norm.cdf((sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(denom)))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """E[max per-period Sharpe] of n_trials unskilled trials (Bailey & Lopez de Prado 2014)."""
    if n_trials <= 1 or sr_variance <= 0:
        return 0.0
    z1 = sps.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = sps.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(r, n_trials: int, sr_variance: float) -> float:
    """PSR against the expected maximum Sharpe of n_trials trials (the Deflated Sharpe Ratio).

    sr_variance is the variance of the trials' per-period (not annualised) Sharpe ratios.
    """
    return probabilistic_sharpe(r, expected_max_sharpe(n_trials, sr_variance))


def compute_metrics(returns, benchmark=None, periods_per_year: float = HOURS_PER_YEAR, *,
                    exposure=None, turnover=None) -> dict[str, float]:
    """Metrics of simple per-period returns; keys as docs/reference.md, "Metrics" (sharpe,
    sortino, ...).

    exposure / turnover (per period, aligned with returns) add `exposure` (mean |exposure|) and
    `turnover` (annualised sum of |change in exposure|). benchmark adds excess_return, beta and
    alpha against it over the same periods. cagr and calmar are NaN for a window shorter than
    90 days (`cagr`); n_periods is an int.
    """
    r = _clean(returns)
    p = float(periods_per_year)
    out: dict[str, float] = {
        "n_periods": len(r),
        "total_return": float(np.prod(1.0 + r) - 1.0) if len(r) else 0.0,
        "cagr": cagr(r, p),
        "volatility": float(r.std(ddof=1) * math.sqrt(p)) if len(r) > 1 else float("nan"),
        "sharpe": sharpe(r, p),
        "sortino": sortino(r, p),
        "max_drawdown": max_drawdown(r),
    }
    mdd = out["max_drawdown"]
    out["calmar"] = out["cagr"] / abs(mdd) if mdd < 0 else float("nan")  # NaN where cagr is
    nonzero = r[r != 0]
    out["hit_rate"] = float((nonzero > 0).mean()) if len(nonzero) else float("nan")
    if exposure is not None:
        e = _clean(exposure)
        out["exposure"] = float(np.abs(e).mean()) if len(e) else float("nan")
    if turnover is not None:
        u = _clean(turnover)
        out["turnover"] = float(u.sum() * p / len(u)) if len(u) else float("nan")
    if benchmark is not None:
        b = _clean(benchmark)
        if len(b) != len(r):
            raise ValueError(f"benchmark has {len(b)} periods, returns have {len(r)}")
        out["benchmark_return"] = float(np.prod(1.0 + b) - 1.0) if len(b) else 0.0
        out["excess_return"] = out["total_return"] - out["benchmark_return"]
        if len(r) > 1 and b.var(ddof=1) > 0:
            cov = np.cov(r, b)
            beta = float(cov[0, 1] / cov[1, 1])
            out["beta"] = beta
            out["alpha"] = float((r.mean() - beta * b.mean()) * p)
        else:
            out["beta"] = out["alpha"] = float("nan")
    return out


def regime_metrics(returns, regimes, benchmark=None, periods_per_year: float = HOURS_PER_YEAR, *,
                   exposure=None, turnover=None) -> pd.DataFrame:
    """compute_metrics on the hours of each most-likely filtered regime (one row per regime)."""
    r = _clean(returns)
    k = np.asarray(regimes)
    if len(k) != len(r):
        raise ValueError(f"regimes has {len(k)} periods, returns have {len(r)}")
    rows = {}
    for state in sorted(int(s) for s in np.unique(k[k >= 0])):
        m = k == state
        rows[state] = compute_metrics(
            r[m], None if benchmark is None else np.asarray(benchmark)[m], periods_per_year,
            exposure=None if exposure is None else np.asarray(exposure)[m],
            turnover=None if turnover is None else np.asarray(turnover)[m])
        rows[state]["share_of_hours"] = float(m.mean())
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "regime"
    return frame
