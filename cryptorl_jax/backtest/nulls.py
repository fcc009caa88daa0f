"""A fair null for the agent's timing: its own exposure path, circularly shifted in time.

The i.i.d. random baseline trades at every close and mostly loses its costs, so beating it
proves nothing. This null keeps everything about the strategy except WHEN it holds what: the
exposure path e_t of each walk-forward segment, together with the hourly charges it paid
(trading cost and financing, so the turnover and the leverage are the strategy's own), is
rotated by a random lag within the segment and applied to the segment's own market returns:

    null_t = e_{(t + k) mod n} R_{t+1} - charges_{(t + k) mod n},   k ~ U[m, n - m]

with R_{t+1} the asset's simple return over the hour held and m = `min_shift` hours (a rotation
by a few hours would keep most of the alignment). Each null draw rotates every segment by its
own lag and stitches them like the strategy; its annualised Sharpe is one sample of what the
same positions earn with their timing broken. The p-value is (1 + #{null >= actual}) /
(1 + n_null), the one-sided permutation p-value (never 0). A strategy without timing skill
gives p-values near uniform; a small p-value says the alignment of its positions with the
returns, not its average exposure, earned its Sharpe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_NULLS = 1000
MIN_SHIFT_HOURS = 24


@dataclass(frozen=True)
class TimingNull:
    sharpe: float  # the strategy's annualised Sharpe
    null_sharpes: np.ndarray  # [n_null] annualised
    p_value: float
    min_shift: int

    @property
    def n_null(self) -> int:
        return int(len(self.null_sharpes))


def _sharpe(r: np.ndarray, periods: float) -> np.ndarray:
    """Annualised Sharpe along the last axis (NaN where the std is 0)."""
    sd = r.std(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, r.mean(axis=-1) / np.where(sd > 0, sd, 1.0), np.nan) \
            * math.sqrt(periods)


def p_value(actual: float, null: np.ndarray) -> float:
    """One-sided permutation p-value (1 + #{null >= actual}) / (1 + n); NaN if undefined."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not math.isfinite(actual) or len(null) == 0:
        return float("nan")
    return float((1 + np.sum(null >= actual)) / (1 + len(null)))


def timing_null(exposure, market_return, charges, segments=None, *, n_null: int = DEFAULT_NULLS,
                seed: int = 0, min_shift: int = MIN_SHIFT_HOURS,
                periods_per_year: float = 8760) -> TimingNull:
    """The circular-shift timing null of a strategy's hourly series (see the module docstring).

    exposure, market_return, charges: [T] aligned per hour (e_t, R_{t+1}, cost_t +
    financing_t as fractions of NAV); segments: [T] labels of contiguous blocks rotated
    separately (None: one block). The strategy's own return is e R - charges.
    """
    e = np.asarray(exposure, dtype=np.float64)
    r = np.asarray(market_return, dtype=np.float64)
    c = np.asarray(charges, dtype=np.float64)
    if not (e.shape == r.shape == c.shape) or e.ndim != 1:
        raise ValueError(f"exposure, market_return and charges must be aligned 1-D arrays, got "
                         f"shapes {e.shape}, {r.shape}, {c.shape}")
    for name, x in (("exposure", e), ("market_return", r), ("charges", c)):
        if not np.isfinite(x).all():
            raise ValueError(f"timing null: {name} is not finite at position "
                             f"{int(np.argmax(~np.isfinite(x)))}")
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    labels = np.zeros(len(e), int) if segments is None else np.asarray(segments)
    if labels.shape != e.shape:
        raise ValueError(f"segments must have shape {e.shape}, got {labels.shape}")
    rng = np.random.default_rng(seed)
    null = np.empty((n_null, len(e)))
    bounds = np.flatnonzero(np.diff(labels) != 0) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(e)]):
        n = hi - lo
        m = min(min_shift, n // 4)
        shifts = rng.integers(m, n - m + 1, size=n_null) if n > 1 else np.zeros(n_null, int)
        idx = (np.arange(n)[None, :] + shifts[:, None]) % n  # [n_null, n]
        null[:, lo:hi] = e[lo:hi][idx] * r[lo:hi][None, :] - c[lo:hi][idx]
    actual = float(_sharpe(e * r - c, periods_per_year))
    sharpes = _sharpe(null, periods_per_year)
    return TimingNull(sharpe=actual, null_sharpes=sharpes, p_value=p_value(actual, sharpes),
                      min_shift=min_shift)
