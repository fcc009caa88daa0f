"""Plain-numpy references for the baselines that read the market and the power statistics.

Loops and closed forms, independent of `cryptorl_jax.backtest.strategies` and `metrics`.
"""

from __future__ import annotations

import math

import numpy as np


def momentum_sign(close, k: int) -> np.ndarray:
    """a_t = sign(log c_t - log c_{t-k}), 0 for t < k (a loop)."""
    out = np.zeros(len(close))
    for t in range(k, len(close)):
        out[t] = np.sign(math.log(close[t]) - math.log(close[t - k]))
    return out


def momentum_scaled(close, k: int, min_sigma: int = 168) -> np.ndarray:
    """a_t = clip((log c_t - log c_{t-k}) / (sigma_t sqrt(k)), -1, 1), sigma_t the sample std of
    the hourly log returns r_{t-w+1} .. r_t, w = max(k, min_sigma); 0 until r_{t-w+1} exists."""
    w = max(k, min_sigma)
    p = np.log(np.asarray(close, float))
    out = np.zeros(len(close))
    for t in range(w, len(close)):
        r = [p[i] - p[i - 1] for i in range(t - w + 1, t + 1)]
        sigma = float(np.std(r, ddof=1))
        if sigma > 0 and t >= k:
            out[t] = min(1.0, max(-1.0, (p[t] - p[t - k]) / (sigma * math.sqrt(k))))
    return out


def hourly_sigma(close, t: int, w: int = 168) -> float:
    """The sample std of the hourly log returns r_{t-w+1} .. r_t (NaN until r_{t-w+1} exists)."""
    if t < w:
        return math.nan
    p = np.log(np.asarray(close, float))
    return float(np.std([p[i] - p[i - 1] for i in range(t - w + 1, t + 1)], ddof=1))


def forecast_target(close, t: int, h: int, w: int = 168) -> float:
    """log(c_{t+h} / c_t) / (sigma_t sqrt(h)), sigma_t = hourly_sigma(close, t, w)."""
    return math.log(close[t + h] / close[t]) / (hourly_sigma(close, t, w) * math.sqrt(h))


def ema(x, halflife: float) -> np.ndarray:
    """y_0 = x_0, y_t = (1 - w) y_{t-1} + w x_t, w = 1 - 2^(-1 / halflife) (a loop)."""
    w = 1.0 - 0.5 ** (1.0 / halflife)
    out = np.empty(len(x))
    for t, v in enumerate(x):
        out[t] = v if t == 0 else (1.0 - w) * out[t - 1] + w * v
    return out


def crossover(close, fast: int, slow: int) -> np.ndarray:
    """a_t = sign(mean(log c_{t-fast+1..t}) - mean(log c_{t-slow+1..t})), 0 for t < slow - 1."""
    p = np.log(np.asarray(close, float))
    out = np.zeros(len(close))
    for t in range(slow - 1, len(close)):
        out[t] = np.sign(p[t - fast + 1:t + 1].mean() - p[t - slow + 1:t + 1].mean())
    return out


def ridge(x, y, alpha: float) -> tuple[np.ndarray, float]:
    """The ridge closed form with an unpenalised intercept: centre x and y, then
    coef = (Xc'Xc + alpha I)^-1 Xc'yc, intercept = mean(y) - mean(x) coef."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    xm, ym = x.mean(axis=0), y.mean()
    xc, yc = x - xm, y - ym
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return coef, float(ym - xm @ coef)
