"""How much the OOS window can tell, and the multiple-testing charge of comparing strategies.

- Power before results: the minimum annual Sharpe a one-sided test at `alpha` detects with
  probability `power` over n hours (Lo 2002's standard error of the Sharpe,
  sqrt((1 + SR^2 / 2) / n), widened by the returns' autocorrelation), and the Minimum Backtest
  Length for N tries (Bailey, Borwein, Lopez de Prado and Zhu 2014).
- The effective number of tries from the correlation of their return series.
- Hansen's (2005) test of Superior Predictive Ability and Romano and Wolf's (2005) StepM over
  a set of strategies against a benchmark, from `arch.bootstrap` (stationary bootstrap), on
  two footings: mean return (`multiple_test`) and risk-adjusted (`risk_adjusted_test`: each
  strategy vol-scaled to the benchmark's volatility, Modigliani and Modigliani 1997's M^2).

Written here (not taken from a library) only where none fits: the minimum detectable Sharpe
and MinBTL are closed forms, and no maintained package computes them for a return series;
arch's SPA is studentised here (`spa_stepm`: arch 8.0 leaves its statistic unstudentised)
and StepM's stepdown runs over its draws (arch 8.0's StepM fails when the last models fall
in a later round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.stats as sps

from cryptorl_jax.core.units import HOURS_PER_YEAR

EULER_GAMMA = 0.5772156649015329
MIN_BLOCK_HOURS = 24
MEAN_RETURN = "mean return"


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


def stationary_bootstrap_variance(x: np.ndarray, block: float) -> np.ndarray:
    """n times the variance of the mean of each column of x [n, k] under the stationary
    bootstrap with mean block `block` (Politis and Romano 1994, eq. 5, the estimator of
    `arch`'s SPA without nesting): g_0 + 2 sum_{i=1}^{n-1} kappa_i g_i, g_i = sum_t x_t x_{t+i} / n
    of the demeaned x, kappa_i = (1 - i/n) q^i + (i/n) q^(n-i), q = 1 - 1/block. The
    autocovariances by FFT."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    d = x - x.mean(axis=0)
    size = 1 << int(2 * n - 1).bit_length()
    f = np.fft.rfft(d, size, axis=0)
    g = np.fft.irfft(f * np.conj(f), size, axis=0)[:n] / n
    i = np.arange(1, n, dtype=np.float64)
    q = 1.0 - 1.0 / float(block)
    kappa = (1.0 - i / n) * q**i + (i / n) * q ** (n - i)
    return g[0] + 2.0 * (kappa[:, None] * g[1:]).sum(axis=0)


def spa_stepm(differentials: pd.DataFrame, block: int, reps: int, seed: int,
              size: float) -> tuple[dict[str, float], tuple[str, ...]]:
    """Hansen's (2005) studentised SPA p-values (lower, consistent, upper) and Romano and
    Wolf's (2005) studentised StepM at `size` for the loss differentials d_k (benchmark loss
    minus model loss, > 0 where the model is better), one `arch` SPA's stationary bootstrap.

    `arch.bootstrap.SPA` (8.0) compares max_k mean(d_k) with the bootstrap max of the recentred
    means, unstudentised whatever `studentize` says (it only sets the recentring threshold),
    so a model with a volatile differential would dominate the max and hide a steady one.
    Each d_k is therefore divided by its own omega_k = sqrt(`stationary_bootstrap_variance`)
    first: arch's statistic becomes max_k mean(d_k) / omega_k, Hansen's T^SPA with omega_k
    held fixed over the draws, and his threshold -sqrt(2 log log n) on sqrt(n) mean / omega.
    StepM is Romano-Wolf's Algorithm 4.1 over the same draws: reject the models above the
    consistent critical value of the models not yet rejected, repeat until a round rejects
    none or all are rejected (arch 8.0's StepM stops on the count of the last round only and
    fails when the last models fall in a later round)."""
    from arch.bootstrap import SPA

    d = differentials.to_numpy(np.float64)
    omega = np.sqrt(stationary_bootstrap_variance(d, block))
    z = pd.DataFrame(d / omega, index=differentials.index, columns=differentials.columns)
    spa = SPA(np.zeros(len(z)), -z, block_size=block, reps=reps, bootstrap="stationary",
              studentize=True, nested=False, seed=np.random.default_rng(seed))
    spa.compute()
    pvalues = {k: float(v) for k, v in spa.pvalues.items()}
    k = z.shape[1]
    rejected: list[int] = []
    while len(rejected) < k:
        keep = np.ones(k, dtype=bool)
        keep[rejected] = False
        spa.subset(keep)
        spa.compute()
        new = [int(i) for i in spa.better_models(size, "consistent") if keep[int(i)]]
        if not new:
            break
        rejected += new
    spa.subset(np.ones(k, dtype=bool))
    superior = tuple(str(c) for i, c in enumerate(z.columns) if i in set(rejected))
    return pvalues, superior


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
    best: str  # the strategy with the highest mean differential on this footing
    footing: str = MEAN_RETURN  # what is compared: "mean return" or "risk-adjusted (...)"
    vol_scaled_to: float | None = None  # annual vol every series is scaled to (risk-adjusted)
    excluded: tuple[str, ...] = ()  # left out: no volatility, or a constant differential

    def row(self) -> dict[str, object]:
        return {"benchmark": self.benchmark, "footing": self.footing,
                "vol_scaled_to": math.nan if self.vol_scaled_to is None else self.vol_scaled_to,
                "n_strategies": len(self.strategies),
                "block_hours": self.block_hours, "reps": self.reps,
                "spa_p_consistent": self.spa_p_consistent, "spa_p_lower": self.spa_p_lower,
                "spa_p_upper": self.spa_p_upper, "best": self.best,
                "stepm_superior": ", ".join(self.superior) or "none",
                "excluded": ", ".join(self.excluded)}


def multiple_test(returns: pd.DataFrame, benchmark: pd.Series | np.ndarray, name: str, *,
                  reps: int = 1000, seed: int = 0, size: float = 0.05,
                  block_hours: int | None = None, footing: str = MEAN_RETURN) -> MultipleTest:
    """Hansen's SPA (p-values: lower, consistent, upper) and Romano-Wolf StepM at `size` of the
    strategies in `returns` (columns, simple returns per hour) against `benchmark`'s returns,
    studentised, with `arch`'s stationary bootstrap (`spa_stepm`). Losses are negative
    returns, so a strategy is superior when its mean return exceeds the benchmark's. Rows
    with a NaN are dropped; a strategy whose differential is constant (the benchmark, up to
    a constant: no variance to studentise by) is `excluded`."""
    bench = pd.Series(np.asarray(benchmark, np.float64), index=returns.index, name=name)
    data = pd.concat([returns.astype(np.float64), bench], axis=1).dropna()
    diff = data[returns.columns].sub(data[name], axis=0)
    cols = [c for c in returns.columns if (diff[c] != diff[c].iloc[0]).any()]
    if not cols:
        raise ValueError(f"no strategy differs from {name!r}")
    diff = diff[cols]
    block = block_hours or block_length(diff)
    pv, superior = spa_stepm(diff, int(block), reps, seed, size)
    return MultipleTest(benchmark=name, strategies=tuple(str(c) for c in cols),
                        block_hours=int(block), reps=reps, spa_p_lower=pv["lower"],
                        spa_p_consistent=pv["consistent"], spa_p_upper=pv["upper"],
                        superior=superior, size=size, best=str(diff.mean().idxmax()),
                        footing=footing,
                        excluded=tuple(str(c) for c in returns.columns if c not in cols))


def vol_scale(returns: pd.DataFrame, target: float) -> pd.DataFrame:
    """Each column times target / its sample sd (ddof = 1, as `metrics.sharpe`), so that its
    mean is target x its per-period Sharpe (M^2, Modigliani and Modigliani 1997)."""
    sd = returns.std(ddof=1)
    if not (sd > 0).all():
        raise ValueError(f"columns without volatility cannot be scaled: "
                         f"{list(sd.index[~(sd > 0)])}")
    return returns * (float(target) / sd)


def risk_adjusted_label(annual_vol: float, name: str) -> str:
    """The footing's words, e.g. 'risk-adjusted (vol-scaled to buy_and_hold's 58 % a year)'."""
    return f"risk-adjusted (vol-scaled to {name}'s {100 * annual_vol:.0f} % a year)"


def risk_adjusted_test(returns: pd.DataFrame, benchmark: pd.Series | np.ndarray, name: str, *,
                       reps: int = 1000, seed: int = 0, size: float = 0.05,
                       block_hours: int | None = None,
                       periods: float = HOURS_PER_YEAR) -> MultipleTest:
    """SPA and StepM (`multiple_test`) after each strategy is vol-scaled to the benchmark's
    sample sd over the tested rows (`vol_scale`): the differential's mean is sd_b (SR_i - SR_b)
    per period, so a strategy is superior when its Sharpe exceeds the benchmark's, whatever
    its exposure. Strategies with zero sd are left out (`excluded`); the benchmark must move."""
    bench = pd.Series(np.asarray(benchmark, np.float64), index=returns.index, name=name)
    data = pd.concat([returns.astype(np.float64), bench], axis=1).dropna()
    sd_b = float(data[name].std(ddof=1))
    if not sd_b > 0:
        raise ValueError(f"benchmark {name!r} has no volatility to scale to")
    sd = data[returns.columns].std(ddof=1)
    keep = [c for c in returns.columns if sd[c] > 0]
    if not keep:
        raise ValueError("no strategy with volatility to scale")
    scaled = vol_scale(data[keep], sd_b)
    vol = sd_b * math.sqrt(periods)
    res = multiple_test(scaled, data[name].to_numpy(), name, reps=reps, seed=seed, size=size,
                        block_hours=block_hours, footing=risk_adjusted_label(vol, name))
    return replace(res, vol_scaled_to=vol,
                   excluded=tuple(str(c) for c in returns.columns if c not in res.strategies))
