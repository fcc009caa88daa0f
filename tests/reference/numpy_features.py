"""Plain-loop references for the feature formulas and the HMM forward filter (docs/reference.md).

Written for readability, not speed: one scalar at a time, straight from the definitions.
"""

from __future__ import annotations

import math

import numpy as np


def ffd_weights_loop(d: float, threshold: float) -> list[float]:
    """w_0 = 1, w_k = -w_{k-1} (d - k + 1) / k while |w_k| >= threshold."""
    weights = [1.0]
    k = 1
    while True:
        w = -weights[k - 1] * (d - k + 1) / k
        if abs(w) < threshold:
            return weights
        weights.append(w)
        k += 1


def ffd_loop(x: np.ndarray, d: float, threshold: float) -> np.ndarray:
    """out_t = sum_k w_k x_{t-k}, NaN until the full window exists."""
    weights = ffd_weights_loop(d, threshold)
    out = np.full(len(x), np.nan)
    for t in range(len(x)):
        if t - (len(weights) - 1) < 0:
            continue
        total = 0.0
        for k, w in enumerate(weights):
            total += w * x[t - k]
        out[t] = total
    return out


def parkinson_loop(high: np.ndarray, low: np.ndarray, window: int) -> np.ndarray:
    """sqrt(mean over window of ln(H/L)^2 / (4 ln 2))."""
    out = np.full(len(high), np.nan)
    for t in range(window - 1, len(high)):
        total = 0.0
        for i in range(t - window + 1, t + 1):
            total += math.log(high[i] / low[i]) ** 2 / (4.0 * math.log(2.0))
        out[t] = math.sqrt(total / window)
    return out


def garman_klass_loop(open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                      close: np.ndarray, window: int) -> np.ndarray:
    """sqrt(max(mean over window of [0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2], 0))."""
    out = np.full(len(high), np.nan)
    for t in range(window - 1, len(high)):
        total = 0.0
        for i in range(t - window + 1, t + 1):
            total += (0.5 * math.log(high[i] / low[i]) ** 2
                      - (2.0 * math.log(2.0) - 1.0) * math.log(close[i] / open_[i]) ** 2)
        out[t] = math.sqrt(max(total / window, 0.0))
    return out


def realised_vol_loop(close: np.ndarray, vol_window: int, horizon_hours: int) -> np.ndarray:
    """Population std of the last V hourly log returns times sqrt(H); NaN while t < V."""
    out = np.full(len(close), np.nan)
    for t in range(vol_window, len(close)):
        rets = [math.log(close[i] / close[i - 1]) for i in range(t - vol_window + 1, t + 1)]
        mean = sum(rets) / vol_window
        var = sum((r - mean) ** 2 for r in rets) / vol_window
        out[t] = math.sqrt(var) * math.sqrt(horizon_hours)
    return out


def zscore_loop(x: np.ndarray, window: int) -> np.ndarray:
    """(x_t - mean) / population std over the trailing window."""
    out = np.full(len(x), np.nan)
    for t in range(window - 1, len(x)):
        w = x[t - window + 1:t + 1]
        mean = sum(w) / window
        std = math.sqrt(sum((v - mean) ** 2 for v in w) / window)
        out[t] = (x[t] - mean) / std
    return out


def corr_loop(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation over the trailing window."""
    out = np.full(len(x), np.nan)
    for t in range(window - 1, len(x)):
        a, b = x[t - window + 1:t + 1], y[t - window + 1:t + 1]
        ma, mb = sum(a) / window, sum(b) / window
        cov = sum((u - ma) * (v - mb) for u, v in zip(a, b))
        va = sum((u - ma) ** 2 for u in a)
        vb = sum((v - mb) ** 2 for v in b)
        out[t] = cov / math.sqrt(va * vb)
    return out


def gaussian_pdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """Multivariate normal density, textbook form."""
    dim = len(x)
    diff = x - mean
    quad = float(diff @ np.linalg.inv(cov) @ diff)
    return math.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** dim * np.linalg.det(cov))


def forward_filter_loop(x: np.ndarray, startprob: np.ndarray, transmat: np.ndarray,
                        means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """Scaled forward recursion (Rabiner 1989): alpha_t(j) ∝ b_j(x_t) sum_i alpha_{t-1}(i) a_ij,
    normalised at each step, for an observed sequence x [T, D] without gaps."""
    n_states = len(startprob)
    out = np.zeros((len(x), n_states))
    for t in range(len(x)):
        alpha = []
        for j in range(n_states):
            if t == 0:
                prior = startprob[j]
            else:
                prior = sum(out[t - 1, i] * transmat[i, j] for i in range(n_states))
            alpha.append(prior * gaussian_pdf(x[t], means[j], covars[j]))
        total = sum(alpha)
        out[t] = [a / total for a in alpha]
    return out
