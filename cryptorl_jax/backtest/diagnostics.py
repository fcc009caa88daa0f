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

import numpy as np


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
