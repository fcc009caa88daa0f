"""The ensemble of a population: the equal-weight portfolio of the seeds' own books.

Each seed acts on its own book out of sample: its observation holds ITS previous action, ITS
drifted weight and ITS drawdown, the states it was trained on. The ensemble is the portfolio
that gives each of the S seeds 1/S of the capital at the start of the backtest and never
rebalances between them: a fund of S sub-accounts, each held to the units-and-cash ledger.
Its NAV is the mean of the seeds' NAVs,

    P_i = (1/S) sum_s NAV_{s,i},    ret_i = P_{i+1} / P_i - 1 = sum_s v_{s,i} net_{s,i},

with v_{s,i} = NAV_{s,i} / sum_k NAV_{k,i} the seed's share of the fund at the close of step i.
Every per-hour quantity of the fund (exposure, turnover, cost, financing, ...) is the same
v-weighted sum of the seeds' own, as fractions of the fund's NAV. Trades of different seeds
are not netted against each other (each sub-account pays its own costs): conservative, and
exactly what S separate accounts would pay.

(The alternative, one book acting on the mean of the seeds' actions, feeds every seed states
that no seed produced in training; it was this project's ensemble until issue 23.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def shares(navs: np.ndarray) -> np.ndarray:
    """[S, n] NAV shares v_{s,i} at the close of each step from the seeds' NAVs [S, n + 1]
    (NAV before each step's return)."""
    navs = np.asarray(navs, dtype=np.float64)
    if navs.ndim != 2 or navs.shape[1] < 2:
        raise ValueError(f"navs must be [S, n + 1] with n >= 1, got shape {navs.shape}")
    before = navs[:, :-1]
    return before / before.sum(axis=0, keepdims=True)


def equal_weight(sims: Sequence[dict[str, np.ndarray]],
                 keys: Sequence[str] = ("returns", "exposure", "weight", "turnover", "cost",
                                        "financing", "gross")) -> dict[str, np.ndarray]:
    """The equal-weight fund of S `simulate` outputs over the same rows.

    Returns `nav` (n + 1 values from 1: the mean of the seeds' NAVs) and, for each of `keys`
    present in every sim, the NAV-weighted sum over the seeds (n values), plus `shares`
    [S, n]. `returns` is then exactly nav[i + 1] / nav[i] - 1.
    """
    if len(sims) == 0:
        raise ValueError("equal_weight needs at least one book")
    lengths = {len(s["nav"]) for s in sims}
    if len(lengths) != 1:
        raise ValueError(f"the books cover different rows (nav lengths {sorted(lengths)})")
    navs = np.stack([np.asarray(s["nav"], dtype=np.float64) for s in sims])
    v = shares(navs)
    out: dict[str, np.ndarray] = {"nav": navs.mean(axis=0), "shares": v}
    for k in keys:
        if all(k in s for s in sims):
            out[k] = np.sum(v * np.stack([np.asarray(s[k], np.float64) for s in sims]), axis=0)
    return out


def equal_weight_returns(returns: np.ndarray) -> np.ndarray:
    """The fund's simple returns [n] from the seeds' simple returns [S, n] (each book from 1);
    a batch [..., S, n] of such funds gives [..., n]."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        return r
    navs = np.concatenate([np.ones(r.shape[:-1] + (1,)), np.cumprod(1.0 + r, axis=-1)],
                          axis=-1)
    total = navs.sum(axis=-2)
    return total[..., 1:] / total[..., :-1] - 1.0
