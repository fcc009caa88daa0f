"""The verdict's rule, its size and power on simulated OOS return paths, and its minimum
detectable Sharpe (docs/methods.md, "The statistics of the report").

The rule (`passes`): "edge" when the stitched OOS Sharpe is positive and its PSR (Bailey &
Lopez de Prado 2012) reaches `psr_level(N)` = 0.95^(1/N), N = the configurations registered
over the OOS window (`report.registry`): Sidak's level, so that among N skill-less
configurations the chance that any one's report says "edge" is at most 5 % (exact for
independent configurations, conservative for positively correlated ones). With N = 1 it is
PSR >= 0.95. The Deflated Sharpe is printed beside it, not used: with the registry's variance of
the N Sharpes it is far more conservative and loses most of its power when one configuration
holds the edge (the simulation's table in docs/methods.md). The timing null is reported beside
the verdict, not part of it (`report.verdict`).

The simulation (`simulate`) draws OOS hourly net-return paths with a known annual Sharpe, no
training: r_t = scale (m + z_t) with z a GARCH(1,1) whose innovations are unit-variance Student-t
(unconditional variance 1; `ReturnModel`), so the true per-hour Sharpe is m exactly. Each draw
holds N configurations over the same hours (the first, the candidate, at the true Sharpe, the
others at 0 or, with shared_skill, at the same; equicorrelated at rho through a common path),
and applies the report's statistics to each: the per-hour Sharpe, the PSR with the path's skew
and kurtosis (`backtest.metrics`, vectorised here and checked against it in
tests/report/test_calibration.py), and, for comparison, the DSR against the expected maximum of
the N Sharpes with their variance (ddof = 1, as `report.registry`). The same innovations serve
every true Sharpe and every OOS length (a length is a prefix of the longest path): common
random numbers, so power is monotone in both up to the sampling noise of one draw's statistics.

The minimum detectable Sharpe (`min_detectable_sharpe`) is the closed form of the same rule for
normal returns: the rule passes when the estimated per-hour Sharpe x clears the threshold
x sqrt(n - 1) = z_L sqrt(1 + x^2 / 2) (the PSR's standard error at skew 0 and kurtosis 3, z_L the
normal quantile of `psr_level(N)`), and the estimate is normal around the true SR with variance
vif (1 + SR^2 / 2) / n (Lo 2002), so P(pass) = power at SR - x = z_power sqrt(vif (1 + SR^2 / 2)
/ n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from cryptorl_jax.backtest.metrics import EULER_GAMMA
from cryptorl_jax.core.units import HOURS_PER_YEAR

LEVEL = 0.95  # the verdict's level: 1 - its family-wise size over the N configurations
POWER = 0.8  # the detection probability the minimum detectable Sharpe is quoted at
MONTH_HOURS = 720
SHARPES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # true annual Sharpe ratios of the calibration grid
MONTHS = (1, 3, 6, 12, 24)  # OOS lengths of the grid, in months of 720 h
SCALE = 0.005  # hourly volatility of the simulated net returns (the statistics ignore it)


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def psr_level(n_trials: float, level: float = LEVEL) -> float:
    """The PSR the rule asks for with N configurations over the window: level^(1/N) (Sidak)."""
    return float(level ** (1.0 / max(float(n_trials), 1.0)))


def passes(sharpe, psr, n_trials: float = 1, level: float = LEVEL):
    """The verdict's statistical gate: Sharpe > 0 and PSR >= psr_level(n_trials) (NaN fails;
    arrays or scalars)."""
    sharpe, psr = np.asarray(sharpe, np.float64), np.asarray(psr, np.float64)
    with np.errstate(invalid="ignore"):
        out = (sharpe > 0) & (psr >= psr_level(n_trials, level))
    return bool(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# The report's statistics, vectorised over paths (backtest.metrics, one path at a time)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathMoments:
    """Per path: the mean, the sample sd (ddof = 1) and the biased skew and kurtosis (scipy's
    bias=True, non-Fisher), as `backtest.metrics.probabilistic_sharpe` takes them."""

    mean: np.ndarray
    sd: np.ndarray
    skew: np.ndarray
    kurt: np.ndarray
    n: int

    @classmethod
    def of(cls, r: np.ndarray) -> PathMoments:
        """The moments of each row of r [paths, hours]."""
        r = np.asarray(r, np.float64)
        n = r.shape[1]
        mean = r.mean(axis=1)
        x = r - mean[:, None]
        x2 = x * x
        m2 = x2.mean(axis=1)
        m3 = (x2 * x).mean(axis=1)
        m4 = (x2 * x2).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cls(mean=mean, sd=np.sqrt(m2 * n / (n - 1)), skew=m3 / m2**1.5,
                       kurt=m4 / m2**2, n=n)

    def shifted(self, mu: float) -> PathMoments:
        """The moments of every path plus the constant mu (only the mean moves)."""
        return PathMoments(self.mean + mu, self.sd, self.skew, self.kurt, self.n)

    @property
    def sharpe(self) -> np.ndarray:
        """Per-period Sharpe mean / sd (`backtest.metrics.sharpe` with periods = 1)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sd > 0, self.mean / self.sd, np.nan)

    def psr(self, benchmark=0.0) -> np.ndarray:
        """`backtest.metrics.probabilistic_sharpe` of each path against a per-period benchmark
        (a scalar or one per path)."""
        sr = self.sharpe
        with np.errstate(invalid="ignore"):
            denom = 1.0 - self.skew * sr + (self.kurt - 1.0) / 4.0 * sr**2
            z = (sr - benchmark) * math.sqrt(self.n - 1) / np.sqrt(np.where(denom > 0, denom,
                                                                            np.nan))
        return sps.norm.cdf(z) if self.n >= 3 else np.full_like(sr, np.nan)


def expected_max_sharpe(n_trials: int, sr_variance) -> np.ndarray:
    """`backtest.metrics.expected_max_sharpe`, vectorised over the variance (0 for one trial or
    a variance <= 0; NaN for a NaN variance, as `report.registry.deflation_of` gets it)."""
    v = np.asarray(sr_variance, np.float64)
    if n_trials <= 1:
        return np.zeros_like(v)
    z1 = sps.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = sps.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    factor = (1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2
    with np.errstate(invalid="ignore"):
        return np.where(v > 0, np.sqrt(np.where(v > 0, v, 0.0)) * factor,
                        np.where(np.isnan(v), np.nan, 0.0))


# --------------------------------------------------------------------------------------------
# Simulated OOS net returns
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnModel:
    """z_t = sigma_t eps_t, sigma_t^2 = (1 - alpha - beta) + alpha z_{t-1}^2 + beta
    sigma_{t-1}^2 (GARCH(1,1), unconditional variance 1), eps unit-variance Student-t with nu
    degrees of freedom (normal for nu = inf); `burn` hours discarded from sigma^2 = 1."""

    alpha: float = 0.08
    beta: float = 0.90
    nu: float = 4.0
    burn: int = 500
    name: str = "GARCH(1,1)-t4"

    def __post_init__(self):
        if not (self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta < 1):
            raise ValueError("need alpha, beta >= 0 and alpha + beta < 1 (a finite variance)")
        if not self.nu > 2:
            raise ValueError("need nu > 2 (a finite variance)")

    def innovations(self, n_paths: int, hours: int, rng: np.random.Generator) -> np.ndarray:
        """[n_paths, hours] draws of z."""
        total = self.burn + hours
        if math.isinf(self.nu):
            eps = rng.standard_normal((total, n_paths))
        else:
            eps = rng.standard_t(self.nu, (total, n_paths)) * math.sqrt((self.nu - 2) / self.nu)
        if self.alpha == 0 and self.beta == 0:
            return np.ascontiguousarray(eps[self.burn:].T)
        omega = 1.0 - self.alpha - self.beta
        s2 = np.ones(n_paths)
        for t in range(total):  # in place, time-major rows: eps[t] becomes z_t
            row = eps[t]
            row *= np.sqrt(s2)
            s2 = omega + self.alpha * row * row + self.beta * s2
        return np.ascontiguousarray(eps[self.burn:].T)


GARCH_T = ReturnModel()
NORMAL = ReturnModel(alpha=0.0, beta=0.0, nu=math.inf, burn=0, name="i.i.d. normal")


def per_hour(sharpe_annual: float, periods: float = HOURS_PER_YEAR) -> float:
    return float(sharpe_annual) / math.sqrt(periods)


def simulate_paths(sharpe_annual: float, hours: int, n_paths: int, rng: np.random.Generator,
                   model: ReturnModel = GARCH_T) -> np.ndarray:
    """[n_paths, hours] hourly net returns scale (m + z) with true annual Sharpe sharpe_annual."""
    return SCALE * (per_hour(sharpe_annual) + model.innovations(n_paths, hours, rng))


def _chunk_draws(n_draws: int, n_trials: int, hours: int, max_bytes: float = 2e8) -> int:
    per_draw = 8.0 * max(n_trials, 1) * (hours + 500) * (2 if n_trials > 1 else 1)
    return max(1, min(n_draws, int(max_bytes // per_draw)))


def simulate(sharpes: Sequence[float] = SHARPES, months: Sequence[float] = MONTHS,
             n_draws: int = 400, *, n_trials: int = 1, rho: float = 0.0,
             shared_skill: bool = False, model: ReturnModel = GARCH_T,
             seed: int = 0) -> pd.DataFrame:
    """The rule's detection rate per true annual Sharpe and OOS length (module docstring).

    One row per (sharpe, hours), each rate over n_draws draws: `rule` = P(the candidate passes
    `passes` at N = n_trials), `rule_any` = P(any of the N configurations passes) (at Sharpe 0:
    the family-wise size); `dsr` / `dsr_any` = the same for DSR >= 0.95 (and Sharpe > 0), with
    the expected maximum of the N Sharpes from their variance; `psr_only` / `psr_only_any` =
    PSR >= 0.95 whatever N. The other N - 1 configurations have true Sharpe 0, or the
    candidate's with shared_skill (variants of one method that all hold the edge).
    """
    if n_trials < 1 or n_draws < 1:
        raise ValueError("n_trials and n_draws must be >= 1")
    if not 0.0 <= rho < 1.0:
        raise ValueError("rho must be in [0, 1)")
    lengths = sorted({int(round(m * MONTH_HOURS)) for m in months})
    h_max = lengths[-1]
    rng = np.random.default_rng(seed)
    names = ("rule", "rule_any", "dsr", "dsr_any", "psr_only", "psr_only_any")
    counts = {(s, h): np.zeros(len(names)) for s in sharpes for h in lengths}
    done = 0
    while done < n_draws:
        d = min(_chunk_draws(n_draws, n_trials, h_max), n_draws - done)
        z = model.innovations(n_trials * d, h_max, rng).reshape(n_trials, d, h_max)
        if rho > 0 and n_trials > 1:
            common = model.innovations(d, h_max, rng)
            z = math.sqrt(1.0 - rho) * z + math.sqrt(rho) * common[None]
        for h in lengths:
            moments = [PathMoments.of(z[i, :, :h]) for i in range(n_trials)]
            for s in sharpes:
                mu = per_hour(s)
                stats = [moments[0].shifted(mu),
                         *(m.shifted(mu) if shared_skill else m for m in moments[1:])]
                srs = np.vstack([m.sharpe for m in stats])  # [N, d]
                psr = np.vstack([m.psr() for m in stats])
                var = srs.var(axis=0, ddof=1) if n_trials > 1 else np.zeros(d)
                emax = expected_max_sharpe(n_trials, var)
                dsr = np.vstack([m.psr(emax) for m in stats])
                rule = passes(srs, psr, n_trials)
                with np.errstate(invalid="ignore"):
                    by_dsr = (srs > 0) & (dsr >= LEVEL)
                    by_psr = (srs > 0) & (psr >= LEVEL)
                counts[(s, h)] += [rule[0].sum(), rule.any(0).sum(), by_dsr[0].sum(),
                                   by_dsr.any(0).sum(), by_psr[0].sum(), by_psr.any(0).sum()]
        done += d
    rows = [{"sharpe": s, "hours": h, "months": h / MONTH_HOURS, "n_trials": n_trials,
             "rho": rho, "shared_skill": shared_skill, "model": model.name, "draws": n_draws,
             **{k: float(c) / n_draws for k, c in zip(names, counts[(s, h)])}}
            for s in sharpes for h in lengths]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The minimum detectable Sharpe, closed form
# --------------------------------------------------------------------------------------------


def detection_threshold(hours: int, n_trials: float = 1, level: float = LEVEL) -> float:
    """The per-hour Sharpe estimate at which the rule starts to pass for normal returns: x > 0
    with x sqrt(n - 1) = z_L sqrt(1 + x^2 / 2), z_L the quantile of psr_level(n_trials)."""
    if hours < 3:
        return math.inf
    z, root = sps.norm.ppf(psr_level(n_trials, level)), math.sqrt(hours - 1)
    if z <= 0:
        return 0.0
    if root * root <= z * z / 2.0:
        return math.inf  # the PSR cannot reach the level over so few hours
    return float(z / math.sqrt(root * root - z * z / 2.0))


def min_detectable_sharpe(hours: int, n_trials: float = 1, *, level: float = LEVEL,
                          power: float = POWER, vif: float = 1.0,
                          periods: float = HOURS_PER_YEAR) -> float:
    """The true annual Sharpe the rule detects with probability `power` over `hours` hours with
    N = n_trials configurations over the window (module docstring); vif inflates the estimate's
    variance for autocorrelated returns (1: uncorrelated, the simulation's case)."""
    thr = detection_threshold(hours, n_trials, level)
    if not math.isfinite(thr) or not 0.0 < power < 1.0:
        return math.inf
    zp = sps.norm.ppf(power)
    scale = math.sqrt(vif / hours)
    if zp > 0 and zp * scale / math.sqrt(2.0) >= 1.0:
        return math.inf  # the estimate's spread grows faster than the Sharpe

    def g(sr):
        return sr - thr - zp * scale * math.sqrt(1.0 + sr * sr / 2.0)

    lo, hi = thr - 1.0, thr + 1.0
    while g(hi) <= 0:
        hi = 2.0 * hi + 1.0
    while g(lo) >= 0:
        lo = 2.0 * lo - 1.0
    return float(optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-13) * math.sqrt(periods))


def detection_probability(sharpe_annual: float, hours: int, n_trials: float = 1, *,
                          level: float = LEVEL, vif: float = 1.0,
                          periods: float = HOURS_PER_YEAR) -> float:
    """P(the rule says edge) at a true annual Sharpe over `hours` hours, closed form (module
    docstring): Phi((SR - threshold) / sqrt(vif (1 + SR^2 / 2) / n)) per hour."""
    thr = detection_threshold(hours, n_trials, level)
    if not math.isfinite(thr):
        return 0.0
    sr = per_hour(sharpe_annual, periods)
    return float(sps.norm.cdf((sr - thr) / math.sqrt(vif * (1.0 + sr * sr / 2.0) / hours)))


def hours_to_detect(sharpe_annual: float, n_trials: float = 1, *, power: float = POWER,
                    level: float = LEVEL, max_hours: int = 50 * HOURS_PER_YEAR) -> float:
    """The fewest OOS hours over which the rule detects a true annual Sharpe with probability
    `power` (inf beyond max_hours); the MDS falls with the hours, so a bisection finds it."""
    if not sharpe_annual > 0:
        return math.inf

    def ok(h):
        return min_detectable_sharpe(h, n_trials, level=level, power=power) <= sharpe_annual

    if not ok(max_hours):
        return math.inf
    lo, hi = 3, max_hours
    if ok(lo):
        return float(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)


def wilson(successes, n, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (statsmodels' proportion_confint)."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# The tables of docs/methods.md
# --------------------------------------------------------------------------------------------

SCENARIOS = (  # (label, n_trials, rho, shared_skill) of the multiple-configuration table
    ("N = 5, independent, one holds the edge", 5, 0.0, False),
    ("N = 5, rho = 0.5, one holds the edge", 5, 0.5, False),
    ("N = 5, rho = 0.5, all hold it", 5, 0.5, True),
    ("N = 5, rho = 0.9, all hold it", 5, 0.9, True),
    ("N = 10, independent, one holds the edge", 10, 0.0, False),
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def methods_tables(n_draws: int = 2000, seed: int = 0, scenario_months: float = 6,
                   scenario_sharpe: float = 3.0) -> str:
    """The Markdown tables of docs/methods.md: the rule's detection rate (%) over the grid of
    true Sharpe and OOS length at N = 1 (GARCH-t; the i.i.d. normal size row and the closed-form
    MDS beside), and size and power of the rule, the DSR and the PSR alone with N
    configurations."""
    grid = simulate(n_draws=n_draws, seed=seed)
    normal = simulate(sharpes=(0.0,), n_draws=n_draws, model=NORMAL, seed=seed + 1)
    hours = sorted(grid["hours"].unique())
    head = "| true Sharpe | " + " | ".join(f"{h / MONTH_HOURS:g} m ({h:,} h)" for h in hours) + \
        " |"
    lines = [head, "|---" * (len(hours) + 1) + "|"]
    for s, g in grid.groupby("sharpe", sort=True):
        cells = [_pct(v) for v in g.sort_values("hours")["rule"]]
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    lines.append("| 0, i.i.d. normal | " + " | ".join(
        _pct(v) for v in normal.sort_values("hours")["rule"]) + " |")
    lines.append("| MDS (80 %), closed form | " + " | ".join(
        f"{min_detectable_sharpe(int(h)):.2f}" for h in hours) + " |")
    half = 1.96 * math.sqrt(0.05 * 0.95 / n_draws)
    out = [f"The rule's detection rate in % ({n_draws:,} draws of {GARCH_T.name} paths, "
           f"seed {seed}; a size of 5 % has a 95 % band of +-{100 * half:.1f}):", "",
           *lines, ""]
    rows = ["| configurations | size: rule | size: DSR | size: PSR only | "
            f"power at {scenario_sharpe:g}: rule | DSR | PSR only |", "|---" * 7 + "|"]
    for label, n, rho, shared in SCENARIOS:
        df = simulate(sharpes=(0.0, scenario_sharpe), months=(scenario_months,),
                      n_draws=n_draws, n_trials=n, rho=rho, shared_skill=shared,
                      seed=seed + 2 + n).set_index("sharpe")
        z, p = df.loc[0.0], df.loc[scenario_sharpe]
        rows.append(f"| {label} | {_pct(z['rule_any'])} | {_pct(z['dsr_any'])} | "
                    f"{_pct(z['psr_only_any'])} | {_pct(p['rule'])} | {_pct(p['dsr'])} | "
                    f"{_pct(p['psr_only'])} |")
    out += [f"Several configurations over one window ({scenario_months:g} months, "
            f"{n_draws:,} draws, %): size = P(any configuration's verdict says edge) when "
            f"none has one; power = P(the verdict says edge for the one at a true Sharpe of "
            f"{scenario_sharpe:g}). Rule: PSR >= 0.95^(1/N); DSR: DSR >= 0.95 with the "
            "registry's variance of the N Sharpes; PSR only: PSR >= 0.95.", "", *rows, ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m cryptorl_jax.report.calibration [--draws N] [--seed S]: print the tables."""
    import argparse
    import time

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    text = methods_tables(args.draws, args.seed)
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
