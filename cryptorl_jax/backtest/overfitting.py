"""Probability of Backtest Overfitting (PBO) by combinatorially symmetric cross-validation (CSCV).

Reference: D. H. Bailey, J. M. Borwein, M. López de Prado, Q. J. Zhu (2014), "The Probability of
Backtest Overfitting", Journal of Computational Finance 20(4) (SSRN 2326253), section 2.

Algorithm (`pbo_cscv`), on a [T, N] matrix of simple per-period returns, T periods (rows, in time
order) of N trials (columns, e.g. hyper-parameter configurations):

1. Split the rows into S = `n_blocks` contiguous blocks of near-equal size (``np.array_split``:
   the first ``T % S`` blocks have one row more). S is even.
2. For every one of the C(S, S/2) sets J of S/2 blocks (the in-sample, IS, set; its complement
   J̄ is the out-of-sample, OOS, set; rows keep their time order inside each set), compute each
   trial's performance R on J and R̄ on J̄.
3. n* = argmax_n R_n, the trial one would pick in-sample.
4. ω = rank of R̄_{n*} among the N values R̄ (1 = worst, N = best, ties get their average rank)
   divided by N + 1, so 0 < ω < 1; the logit λ = ln(ω / (1 - ω)).
5. PBO = φ = ∫_{-∞}^0 f(λ) dλ, estimated as the share of the C(S, S/2) combinations with λ <= 0.
   Convention: λ == 0 (n* exactly at the OOS median, which happens for odd N or with ties) counts
   as overfitting, so PBO = P(λ <= 0). The test is done exactly on the ranks (2 rank <= N + 1),
   not on the rounded logit.

All C(S, S/2) combinations are used, none skipped: every set J appears once as IS and once as OOS
(the complement of J is also one of the combinations), which is the "symmetric" of CSCV; the
OOS performance of a combination is the IS performance of its complement, so each set is
evaluated once.

Performance degradation (paper section 2.2): the OLS line R̄_{n*} = intercept + slope R_{n*} over
the combinations, the means of R_{n*} and R̄_{n*}, and prob_oos_loss = the share of combinations
with R̄_{n*} < 0.

Conventions:

* The default metric is the per-period (NOT annualised) Sharpe ratio, mean / std(ddof=1), risk
  free rate 0. It is computed without a loop over combinations, from per-block counts, sums and
  sums of squares of the returns (centred on each trial's full-sample mean, which keeps the
  variance free of cancellation); a set's variance is exactly zero when its minimum equals its
  maximum, taken from per-block minima and maxima. The annualised figures multiply by
  sqrt(periods_per_year).
* A performance value that is undefined (NaN: a zero-variance trial, or a set of one row, under
  the default metric; any NaN a custom metric returns) ranks as -inf, i.e. worst, both for the
  IS selection and for the OOS rank. Ties in IS performance pick the lowest column index.
  Undefined values of n* are left out of the degradation regression and of the means (see
  `n_degradation_points`) and do not count as OOS losses.
* A custom `metric` is called as ``metric(x)`` with x the [t, N] returns of one set of blocks
  (rows in time order) and must return N performance values (higher is better); it is called
  once per combination, in a Python loop, so it is much slower than the default. Its result
  is labelled ``metric_name = "custom:<function name>"`` and is never annualised.
* At most 3,000,000 combinations (n_blocks <= 24); the paper's choice is S = 16.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryptorl_jax.core.units import HOURS_PER_YEAR

HIST_EDGES = np.arange(-4.0, 4.0 + 0.25, 0.5)  # logit histogram bins; tails go to the end bins
RAW_LOGITS_MAX = 20000  # to_dict lists the raw logits only up to this many combinations
MAX_COMBINATIONS = 3_000_000  # n_blocks <= 24
_CHUNK_ELEMENTS = 4_000_000  # bound on combinations x blocks x trials per vectorised chunk


@dataclass(frozen=True, eq=False)
class PBOResult:
    """Outcome of `pbo_cscv`; performance values are per period (Sharpe: not annualised).

    Per-combination arrays (length n_combinations, in the order of
    ``itertools.combinations(range(n_blocks), n_blocks // 2)``): logits (λ), best_index (n*),
    is_best (R_{n*}, IS performance of n*), oos_best (R̄_{n*}, its OOS performance).
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int
    n_trials: int
    n_blocks: int
    n_periods: int
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    is_best_mean: float
    oos_best_mean: float
    metric_name: str = "sharpe"
    periods_per_year: float = HOURS_PER_YEAR
    n_degradation_points: int = 0
    best_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    is_best: np.ndarray = field(default_factory=lambda: np.zeros(0))
    oos_best: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def annualised(self) -> bool:
        """Whether the metric is the default per-period Sharpe, so annualising makes sense."""
        return self.metric_name == "sharpe"

    @property
    def is_best_mean_annualised(self) -> float:
        """is_best_mean * sqrt(periods_per_year) for the default Sharpe, NaN for custom metrics."""
        if not self.annualised:
            return float("nan")
        return self.is_best_mean * math.sqrt(self.periods_per_year)

    @property
    def oos_best_mean_annualised(self) -> float:
        """oos_best_mean * sqrt(periods_per_year) for the default Sharpe, NaN for custom ones."""
        if not self.annualised:
            return float("nan")
        return self.oos_best_mean * math.sqrt(self.periods_per_year)

    def logit_summary(self) -> dict:
        """Mean, median, 5/25/50/75/95 % quantiles and a histogram of the logits."""
        lam = np.asarray(self.logits, dtype=np.float64)
        q = np.quantile(lam, [0.05, 0.25, 0.5, 0.75, 0.95])
        counts, _ = np.histogram(np.clip(lam, HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)
        return {
            "mean": float(lam.mean()),
            "median": float(np.median(lam)),
            "quantiles": {f"q{int(p * 100):02d}": float(v)
                          for p, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q)},
            "histogram": {"edges": [float(e) for e in HIST_EDGES],
                          "counts": [int(c) for c in counts],
                          "note": "logits below -4 / above 4 are counted in the end bins"},
        }

    def to_dict(self) -> dict:
        """JSON-ready summary (non-finite floats become None; raw logits up to 20,000)."""
        out = {
            "pbo": _json_float(self.pbo),
            "pbo_convention": "share of combinations with logit <= 0",
            "n_combinations": int(self.n_combinations),
            "n_trials": int(self.n_trials),
            "n_blocks": int(self.n_blocks),
            "n_periods": int(self.n_periods),
            "metric": self.metric_name,
            "per_period": True,
            "periods_per_year": float(self.periods_per_year),
            "degradation_slope": _json_float(self.degradation_slope),
            "degradation_intercept": _json_float(self.degradation_intercept),
            "n_degradation_points": int(self.n_degradation_points),
            "prob_oos_loss": _json_float(self.prob_oos_loss),
            "is_best_mean": _json_float(self.is_best_mean),
            "oos_best_mean": _json_float(self.oos_best_mean),
            "is_best_mean_annualised": _json_float(self.is_best_mean_annualised),
            "oos_best_mean_annualised": _json_float(self.oos_best_mean_annualised),
            "logits_summary": self.logit_summary(),
        }
        if self.n_combinations <= RAW_LOGITS_MAX:
            out["logits"] = [float(v) for v in np.asarray(self.logits)]
        return out


def _json_float(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _validate(returns, n_blocks, periods_per_year) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be a 2-D [T periods, N trials] matrix, got shape {r.shape}")
    t, n = r.shape
    if n < 2:
        raise ValueError(f"returns must have at least 2 trials (columns), got {n}")
    if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks:
        raise ValueError(f"n_blocks must be an integer, got {n_blocks!r}")
    n_blocks = int(n_blocks)
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if t < n_blocks:
        raise ValueError(f"returns have {t} periods (rows), fewer than n_blocks = {n_blocks}")
    if math.comb(n_blocks, n_blocks // 2) > MAX_COMBINATIONS:
        raise ValueError(f"n_blocks = {n_blocks} gives {math.comb(n_blocks, n_blocks // 2):,} "
                         f"combinations (more than {MAX_COMBINATIONS:,}); use fewer blocks")
    bad = ~np.isfinite(r)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"returns contain a non-finite value {r[row, col]!r} at row {row}, "
                         f"column {col}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be positive and finite, got {periods_per_year}")
    return r


def _combinations(n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """[C, S/2] block indices of every IS set and, for each, the index of its complement."""
    combos = np.array(list(itertools.combinations(range(n_blocks), n_blocks // 2)),
                      dtype=np.int64)
    masks = (np.int64(1) << combos).sum(axis=1)
    comp_masks = ((np.int64(1) << n_blocks) - 1) ^ masks
    order = np.argsort(masks)
    complement = order[np.searchsorted(masks[order], comp_masks)]
    return combos, complement


def _sharpe_by_set(r: np.ndarray, bounds: list[tuple[int, int]], combos: np.ndarray
                   ) -> np.ndarray:
    """[C, N] per-period Sharpe of each trial on each set of blocks (NaN where undefined)."""
    n_sets, k = combos.shape
    x = r - r.mean(axis=0)  # shift invariance of the variance; keeps sums of squares accurate
    cnt = np.array([b - a for a, b in bounds], dtype=np.float64)                 # [S]
    s1 = np.stack([x[a:b].sum(axis=0) for a, b in bounds])                       # [S, N]
    s2 = np.stack([(x[a:b] ** 2).sum(axis=0) for a, b in bounds])
    lo = np.stack([r[a:b].min(axis=0) for a, b in bounds])
    hi = np.stack([r[a:b].max(axis=0) for a, b in bounds])
    mu = r.mean(axis=0)
    out = np.empty((n_sets, r.shape[1]))
    step = max(1, _CHUNK_ELEMENTS // (k * r.shape[1]))
    for c0 in range(0, n_sets, step):
        idx = combos[c0:c0 + step]                                               # [c, k]
        n_c = cnt[idx].sum(axis=1)[:, None]                                      # [c, 1]
        sum_c = s1[idx].sum(axis=1)                                              # [c, N]
        ss_c = s2[idx].sum(axis=1)
        const = lo[idx].min(axis=1) == hi[idx].max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.maximum(ss_c - sum_c**2 / n_c, 0.0) / (n_c - 1.0)
            sr = (sum_c / n_c + mu) / np.sqrt(var)
        sr[const | (n_c < 2) | ~np.isfinite(sr)] = np.nan
        out[c0:c0 + step] = sr
    return out


def _metric_by_set(r: np.ndarray, bounds: list[tuple[int, int]], combos: np.ndarray,
                   metric: Callable) -> np.ndarray:
    """[C, N] custom metric of each trial on each set of blocks (one call per set)."""
    out = np.empty((len(combos), r.shape[1]))
    for c, blocks in enumerate(combos):
        rows = np.concatenate([np.arange(*bounds[b]) for b in blocks])
        v = np.asarray(metric(r[rows]), dtype=np.float64)
        if v.shape != (r.shape[1],):
            raise ValueError(f"metric must return {r.shape[1]} values (one per trial), got shape "
                             f"{v.shape}")
        out[c] = v
    return out


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of y on x; NaN when fewer than two points or x is constant."""
    if len(x) < 2:
        return float("nan"), float("nan")
    dx = x - x.mean()
    sxx = float((dx * dx).sum())
    if sxx == 0:
        return float("nan"), float("nan")
    slope = float((dx * (y - y.mean())).sum() / sxx)
    return slope, float(y.mean() - slope * x.mean())


def pbo_cscv(returns: np.ndarray, n_blocks: int = 16, metric: Callable | None = None,
             periods_per_year: float = HOURS_PER_YEAR) -> PBOResult:
    """Probability of Backtest Overfitting of N trials by CSCV (Bailey et al. 2014).

    returns: [T, N] simple per-period returns, rows in time order, one column per trial.
    n_blocks: S, even, <= T; C(S, S/2) combinations are evaluated (12,870 for the default 16).
    metric: None for the per-period Sharpe mean / std(ddof=1) (vectorised), else a callable
        mapping a [t, N] returns matrix to N performance values (looped, slower).
    periods_per_year: only for the annualised IS/OOS means of the default Sharpe.

    PBO is the share of combinations whose logit λ of the IS-best trial's OOS relative rank is
    <= 0 (λ == 0 counts as overfit). See the module docstring for all conventions.
    """
    r = _validate(returns, n_blocks, periods_per_year)
    t, n = r.shape
    s = int(n_blocks)
    edges = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(t), s)])
    bounds = [(int(edges[i]), int(edges[i + 1])) for i in range(s)]
    combos, complement = _combinations(s)
    if metric is None:
        perf = _sharpe_by_set(r, bounds, combos)
        name = "sharpe"
    else:
        perf = _metric_by_set(r, bounds, combos, metric)
        name = "custom:" + getattr(metric, "__name__", type(metric).__name__)

    rank_perf = np.where(np.isnan(perf), -np.inf, perf)     # undefined ranks worst
    is_perf = rank_perf                                      # [C, N]
    oos_perf = rank_perf[complement]                         # OOS of c = IS of its complement
    best = np.argmax(is_perf, axis=1)                        # first index among ties
    rows = np.arange(len(combos))
    v = oos_perf[rows, best][:, None]
    rank = (oos_perf < v).sum(axis=1) + ((oos_perf == v).sum(axis=1) + 1) / 2.0  # 1..N, averaged
    omega = rank / (n + 1.0)
    logits = np.log(omega / (1.0 - omega))
    pbo = float(np.mean(2.0 * rank <= n + 1.0))             # λ <= 0, decided on exact ranks

    is_best = perf[rows, best]
    oos_best = perf[complement][rows, best]
    ok = np.isfinite(is_best) & np.isfinite(oos_best)
    slope, intercept = _ols(is_best[ok], oos_best[ok])
    with np.errstate(invalid="ignore"):
        prob_oos_loss = float(np.mean(oos_best < 0))        # NaN is not a loss
    is_mean = float(np.mean(is_best[np.isfinite(is_best)])) if np.isfinite(is_best).any() \
        else float("nan")
    oos_mean = float(np.mean(oos_best[np.isfinite(oos_best)])) if np.isfinite(oos_best).any() \
        else float("nan")
    return PBOResult(
        pbo=pbo, logits=logits, n_combinations=len(combos), n_trials=n, n_blocks=s, n_periods=t,
        degradation_slope=slope, degradation_intercept=intercept, prob_oos_loss=prob_oos_loss,
        is_best_mean=is_mean, oos_best_mean=oos_mean, metric_name=name,
        periods_per_year=float(periods_per_year), n_degradation_points=int(ok.sum()),
        best_index=best, is_best=is_best, oos_best=oos_best)


# --------------------------------------------------------------------------------------------
# The overfitting statistics of a selection (a tuning study, or any choice among trials)
# --------------------------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def selection_overfitting(series: Mapping[int, np.ndarray], best: int | None, n_tried: int, *,
                          n_pruned: int = 0, n_failed: int = 0,
                          pbo_blocks: int = 16) -> dict[str, Any]:
    """The selected trial's Deflated Sharpe on the rows it was selected on, and the PBO.

    series: {trial: its per-period returns on the selection rows} of the trials that finished
    (a full series each); best: the trial chosen (None: none finished); n_tried: the N of the
    deflation, every trial tried (pruned and failed ones count: they were tried), of which
    n_pruned and n_failed did not finish. The best trial's series is deflated against the
    expected maximum Sharpe of N trials with the variance of the finished trials' per-period
    Sharpes (`metrics.expected_max_sharpe`); with fewer than two finished trials that
    variance, and so the DSR, is undefined. The PBO runs CSCV (`pbo_cscv`) on the [periods x
    finished trials] matrix, columns in trial order. Knows nothing of Optuna
    (`tuning.storage.study_overfitting` reads a study into these arguments).
    """
    from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe, sharpe

    series = {k: np.asarray(v, np.float64) for k, v in series.items()}
    out: dict[str, Any] = {"n_trials": int(n_tried), "n_completed": len(series),
                           "n_pruned": int(n_pruned), "n_failed": int(n_failed),
                           "best_trial": None, "best_trial_dsr": None, "best_trial_psr": None,
                           "pbo": None, "notes": []}
    notes: list[str] = out["notes"]
    if best is None:
        notes.append("no trial completed")
    elif best in series:
        r = series[best]
        sharpes = [s for s in (sharpe(v, 1.0) for v in series.values()) if math.isfinite(s)]
        out["best_trial"] = best
        out["best_trial_psr"] = _finite(probabilistic_sharpe(r))
        out["n_validation_hours"] = int(len(r))
        if len(sharpes) >= 2:
            var = float(np.var(sharpes, ddof=1))
            emax = expected_max_sharpe(n_tried, var)
            out.update({"sr_variance": var, "expected_max_sharpe": emax,
                        "expected_max_sharpe_annualised": emax * math.sqrt(HOURS_PER_YEAR),
                        "best_trial_dsr": _finite(probabilistic_sharpe(r, emax))})
        else:
            notes.append(f"the best trial's DSR is undefined: {len(sharpes)} completed trial(s) "
                         "with a validation Sharpe, at least 2 are needed for the variance of "
                         "the trials' Sharpes (the PSR alone does not deflate anything)")
    else:
        notes.append(f"trial {best} has no validation returns (a study from before they "
                     "were recorded)")
    lengths = {len(v) for v in series.values()}
    if len(series) < 2:
        notes.append(f"PBO is undefined: {len(series)} completed trial(s), CSCV needs >= 2")
    elif len(lengths) != 1:
        notes.append(f"PBO is undefined: the trials' validation series differ in length "
                     f"({sorted(lengths)}; a searched key changed the validation rows)")
    elif lengths.pop() < pbo_blocks:
        notes.append(f"PBO is undefined: fewer validation hours than tune.pbo_blocks = "
                     f"{pbo_blocks}")
    else:
        numbers = sorted(series)
        matrix = np.stack([series[k] for k in numbers], axis=1)
        res = pbo_cscv(matrix, n_blocks=pbo_blocks)
        detail = res.to_dict()
        detail.pop("logits", None)
        out.update({"pbo": _finite(res.pbo), "pbo_detail": detail, "pbo_trials": numbers})
        if n_pruned:
            notes.append(f"{n_pruned} pruned trial(s) count in N but are not in the PBO "
                         "matrix (no full validation series)")
    return out
