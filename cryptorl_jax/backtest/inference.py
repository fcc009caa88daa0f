"""How much the OOS window can tell, and the multiple-testing charge of comparing strategies.

- Power before results: the minimum annual Sharpe a one-sided test at `alpha` detects with
  probability `power` over n hours (Lo 2002's standard error of the Sharpe,
  sqrt((1 + SR^2 / 2) / n), widened by the returns' autocorrelation), and the Minimum Backtest
  Length for N tries (Bailey, Borwein, Lopez de Prado and Zhu 2014).
- The effective number of tries from the correlation of their return series.
- Hansen's (2005) test of Superior Predictive Ability and Romano and Wolf's (2005) StepM over
  a set of strategies against a benchmark, from `arch.bootstrap` (stationary bootstrap).

Written here (not taken from a library) only where none fits: the minimum detectable Sharpe
and MinBTL are closed forms, and no maintained package computes them for a return series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats as sps

from cryptorl_jax.core.units import HOURS_PER_YEAR

EULER_GAMMA = 0.5772156649015329
MIN_BLOCK_HOURS = 24


# --------------------------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------------------------


def newey_west_lags(n: int) -> int:
    """The usual automatic bandwidth floor(4 (n / 100)^(2/9)) (Newey and West 1994)."""
    return max(1, int(math.floor(4.0 * (max(n, 1) / 100.0) ** (2.0 / 9.0))))


def variance_inflation(r, lags: int | None = None) -> float:
    """The long-run over the short-run variance of the mean of r: 1 + 2 sum_k w_k rho_k with
    Bartlett weights w_k = 1 - k / (L + 1) (Newey-West), floored at 1/4 (a strongly
    mean-reverting series; 1 for i.i.d. returns)."""
    r = np.asarray(r, np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 3 or r.std() == 0:
        return 1.0
    lags = newey_west_lags(n) if lags is None else int(lags)
    x = r - r.mean()
    denom = float(x @ x)
    total = 1.0
    for k in range(1, min(lags, n - 1) + 1):
        rho = float(x[k:] @ x[:-k]) / denom
        total += 2.0 * (1.0 - k / (lags + 1.0)) * rho
    return max(total, 0.25)


def min_detectable_sharpe(n_obs: int, *, alpha: float = 0.05, power: float = 0.8,
                          periods: float = HOURS_PER_YEAR, vif: float = 1.0) -> float:
    """The smallest annual Sharpe that a one-sided test of SR > 0 at level `alpha` detects with
    probability `power` over n_obs periods.

    With c = z_{1-alpha} + z_{power} and the Sharpe's standard error sqrt(vif (1 + SR^2 / 2) / n)
    (Lo 2002; vif the autocorrelation's variance inflation), the per-period SR solves
    SR = c sqrt(vif (1 + SR^2 / 2) / n), i.e. SR = c / sqrt(n / vif - c^2 / 2).
    """
    if n_obs <= 1:
        return math.inf
    c = sps.norm.ppf(1.0 - alpha) + sps.norm.ppf(power)
    n_eff = n_obs / vif
    if n_eff <= c * c / 2:
        return math.inf
    return float(c / math.sqrt(n_eff - c * c / 2) * math.sqrt(periods))


def expected_max_standard_normal(n: float) -> float:
    """E[max of n independent standard normals], the approximation of Bailey et al. (2014)."""
    if n <= 1:
        return 0.0
    return float((1.0 - EULER_GAMMA) * sps.norm.ppf(1.0 - 1.0 / n)
                 + EULER_GAMMA * sps.norm.ppf(1.0 - 1.0 / (n * math.e)))


def min_backtest_length(n_trials: float, target_sharpe: float = 1.0) -> float:
    """MinBTL in years (Bailey, Borwein, Lopez de Prado and Zhu 2014): with fewer years than
    (E[max_N] / target)^2, the best of n_trials skill-less strategies (annual Sharpes of unit
    variance around 0) is expected to reach an annual Sharpe of `target` by chance."""
    if target_sharpe <= 0:
        raise ValueError(f"target_sharpe must be > 0, got {target_sharpe}")
    return (expected_max_standard_normal(n_trials) / target_sharpe) ** 2


def effective_trials(returns: pd.DataFrame | np.ndarray) -> tuple[int, float, float]:
    """(N, mean pairwise correlation, effective N) of the columns' return series: N_eff =
    rho + (1 - rho) N (the average-correlation approximation, Bailey and Lopez de Prado 2014),
    within [1, N]. Rows with a NaN in any column are dropped."""
    x = np.asarray(returns, np.float64)
    if x.ndim != 2:
        raise ValueError(f"returns must be [rows, series], got shape {x.shape}")
    x = x[np.isfinite(x).all(axis=1)]
    n = x.shape[1]
    keep = x.std(axis=0) > 0
    if n <= 1 or keep.sum() <= 1:
        return n, math.nan, float(max(n, 1))
    c = np.corrcoef(x[:, keep], rowvar=False)
    m = c.shape[0]
    rho = float((c.sum() - m) / (m * (m - 1)))
    return n, rho, float(min(max(rho + (1.0 - rho) * n, 1.0), n))


# --------------------------------------------------------------------------------------------
# SPA and StepM
# --------------------------------------------------------------------------------------------


def block_length(differentials: pd.DataFrame) -> int:
    """The stationary bootstrap's mean block length for these loss differentials: the median
    over the series of Politis and White's (2004; Patton, Politis and White 2009) automatic
    choice (`arch.bootstrap.optimal_block_length`), at least 24 hours. The floor keeps the daily
    cycle of hourly volatility inside a block: a resample that cut it would understate the
    variance of a strategy's mean return."""
    from arch.bootstrap import optimal_block_length

    x = differentials.dropna()
    x = x.loc[:, x.std() > 0]
    if x.shape[1] == 0 or len(x) < 10:
        return MIN_BLOCK_HOURS
    b = optimal_block_length(x)["stationary"].to_numpy(np.float64)
    b = b[np.isfinite(b)]
    return int(max(MIN_BLOCK_HOURS, math.ceil(float(np.median(b))) if len(b) else 0))


@dataclass(frozen=True)
class MultipleTest:
    """SPA and StepM of a set of strategies against one benchmark (returns, not losses)."""

    benchmark: str
    strategies: tuple[str, ...]
    block_hours: int
    reps: int
    spa_p_lower: float
    spa_p_consistent: float
    spa_p_upper: float
    superior: tuple[str, ...]  # StepM at `size`: the strategies that beat the benchmark
    size: float
    best: str  # the strategy with the highest mean return over the benchmark

    def row(self) -> dict[str, object]:
        return {"benchmark": self.benchmark, "n_strategies": len(self.strategies),
                "block_hours": self.block_hours, "reps": self.reps,
                "spa_p_consistent": self.spa_p_consistent, "spa_p_lower": self.spa_p_lower,
                "spa_p_upper": self.spa_p_upper, "best": self.best,
                "stepm_superior": ", ".join(self.superior) or "none"}


def multiple_test(returns: pd.DataFrame, benchmark: pd.Series | np.ndarray, name: str, *,
                  reps: int = 1000, seed: int = 0, size: float = 0.05,
                  block_hours: int | None = None) -> MultipleTest:
    """Hansen's SPA (p-values: lower, consistent, upper) and Romano-Wolf StepM at `size` of the
    strategies in `returns` (columns, simple returns per hour) against `benchmark`'s returns,
    with `arch`'s stationary bootstrap. Losses are negative returns, so a strategy is
    superior when its mean return exceeds the benchmark's. Rows with a NaN are dropped."""
    from arch.bootstrap import SPA, StepM

    bench = pd.Series(np.asarray(benchmark, np.float64), index=returns.index, name=name)
    data = pd.concat([returns.astype(np.float64), bench], axis=1).dropna()
    models = -data[returns.columns]
    base = -data[name]
    block = block_hours or block_length(data[returns.columns].sub(data[name], axis=0))
    rng = np.random.default_rng(seed)
    spa = SPA(base, models, block_size=block, reps=reps, bootstrap="stationary",
              studentize=True, nested=False, seed=rng)
    spa.compute()
    pv = spa.pvalues
    stepm = StepM(base, models, size=size, block_size=block, reps=reps,
                  bootstrap="stationary", studentize=True, nested=False,
                  seed=np.random.default_rng(seed + 1))
    stepm.compute()
    superior = tuple(str(c) for c in returns.columns if c in set(stepm.superior_models))
    best = str((data[returns.columns].mean() - data[name].mean()).idxmax())
    return MultipleTest(benchmark=name, strategies=tuple(str(c) for c in returns.columns),
                        block_hours=int(block), reps=reps,
                        spa_p_lower=float(pv["lower"]),
                        spa_p_consistent=float(pv["consistent"]),
                        spa_p_upper=float(pv["upper"]), superior=superior, size=size,
                        best=best)
