"""Plain-numpy references for the multiple test's footings (backtest.inference): the vol
scaling of the risk-adjusted footing and the stationary bootstrap's variance of a mean.

Loops over the definitions, independent of `cryptorl_jax.backtest.inference`.
"""

from __future__ import annotations

import math

import numpy as np


def sample_sd(x) -> float:
    """sqrt(sum (x_t - mean)^2 / (n - 1)), a loop."""
    x = [float(v) for v in x]
    m = sum(x) / len(x)
    return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))


def vol_scale(columns: dict[str, np.ndarray], target: float) -> dict[str, np.ndarray]:
    """Each series times target / its sample sd (M^2, Modigliani and Modigliani 1997)."""
    return {k: np.array([v * target / sample_sd(x) for v in x]) for k, x in columns.items()}


def per_period_sharpe(x) -> float:
    """mean / sample sd, a loop."""
    return sum(float(v) for v in x) / len(x) / sample_sd(x)


def stationary_bootstrap_variance(x, block: float) -> float:
    """n Var*(mean) of one series under the stationary bootstrap with mean block `block`
    (Politis and Romano 1994, eq. 5): g_0 + 2 sum_{i=1}^{n-1} kappa_i g_i with
    g_i = sum_{t < n - i} (x_t - m)(x_{t+i} - m) / n and
    kappa_i = (1 - i/n) q^i + (i/n) q^(n-i), q = 1 - 1/block; double loop."""
    x = [float(v) for v in x]
    n = len(x)
    m = sum(x) / n
    d = [v - m for v in x]
    q = 1.0 - 1.0 / block
    total = sum(v * v for v in d) / n
    for i in range(1, n):
        g = sum(d[t] * d[t + i] for t in range(n - i)) / n
        kappa = (1.0 - i / n) * q**i + (i / n) * q ** (n - i)
        total += 2.0 * kappa * g
    return total
