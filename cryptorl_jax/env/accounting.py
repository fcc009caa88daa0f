"""The trading accounting: log returns, realised vol, vol-targeted leverage, NAV, cost, reward.

The one definition of DESIGN.md's "The trading accounting", used by both `env.trading.step` and
`backtest.simulate`. The jnp functions are pure and broadcast elementwise (scalars inside a
vmapped env step, vectors in tests); the `*_np` variants are float64 host versions for
building `MarketData` from pandas/numpy.

Conventions (DESIGN.md): r_t = ln(c_t / c_{t-1}) with r_0 = 0.0 (never realised); s_t is NaN
for t < V; the action a_t chosen at the close of t gives exposure e_t = a_t * L_t and realises
r_{t+1}; L_t = 0 where s_t is undefined (exposure 0).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

# Floor of the one-step growth factor 1 + gross - cost: a step that would lose everything
# (only possible when |e_t| * |exp(r_{t+1}) - 1| + cost >= 1) leaves NAV at this fraction
# instead of <= 0, so pnl = ln(growth) stays finite. The ruin termination fires long before.
MIN_GROWTH = 1e-6


def log_returns_np(close: np.ndarray) -> np.ndarray:
    """r_t = ln(c_t / c_{t-1}) in float64, with r_0 = 0.0 (DESIGN.md, trading accounting)."""
    close = np.asarray(close, dtype=np.float64)
    out = np.zeros_like(close)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def log_returns(close: jnp.ndarray) -> jnp.ndarray:
    """r_t = ln(c_t / c_{t-1}) with r_0 = 0.0 (DESIGN.md, trading accounting)."""
    r = jnp.log(close[1:] / close[:-1])
    return jnp.concatenate([jnp.zeros((1,), r.dtype), r])


def realised_vol_np(log_returns: np.ndarray, vol_window: int, horizon_hours: int) -> np.ndarray:
    """s_t = std(r_{t-V+1..t}, ddof=0) * sqrt(H), NaN for t < V; float64 (DESIGN.md)."""
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"log_returns must be 1-D, got shape {r.shape}")
    out = np.full(r.shape, np.nan)
    if len(r) > vol_window:
        windows = np.lib.stride_tricks.sliding_window_view(r[1:], vol_window)  # [T-V, V]
        out[vol_window:] = windows.std(axis=1) * np.sqrt(horizon_hours)
    return out


def realised_vol(log_returns: jnp.ndarray, vol_window: int, horizon_hours: int) -> jnp.ndarray:
    """s_t = std(r_{t-V+1..t}, ddof=0) * sqrt(H), NaN for t < V (DESIGN.md, trading accounting).

    `vol_window` and `horizon_hours` are static. Two-pass std over a gathered [T, V] window
    matrix (no cumulative-sum cancellation in float32).
    """
    n = log_returns.shape[0]
    t = jnp.arange(n)
    rows = t[:, None] - jnp.arange(vol_window)[None, :]  # [T, V]: t, t-1, ..., t-V+1
    windows = log_returns[jnp.clip(rows, 0, n - 1)]  # [T, V]
    mean = windows.mean(axis=1, keepdims=True)
    std = jnp.sqrt(jnp.mean((windows - mean) ** 2, axis=1))
    vol = std * jnp.sqrt(jnp.asarray(horizon_hours, log_returns.dtype))
    return jnp.where(t >= vol_window, vol, jnp.nan)


def leverage(vol, target_volatility, vol_floor, max_leverage) -> jnp.ndarray:
    """L_t = min(target / max(s_t, floor), cap), and 0 where s_t is NaN (DESIGN.md)."""
    vol = jnp.asarray(vol)
    safe = jnp.where(jnp.isnan(vol), 1.0, vol)
    scale = jnp.minimum(target_volatility / jnp.maximum(safe, vol_floor), max_leverage)
    return jnp.where(jnp.isnan(vol), jnp.zeros_like(scale), scale)


def leverage_np(vol: np.ndarray, target_volatility: float, vol_floor: float,
                max_leverage: float) -> np.ndarray:
    """Host float64 twin of `leverage` (0 where s_t is NaN)."""
    vol = np.asarray(vol, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scale = np.minimum(target_volatility / np.maximum(vol, vol_floor), max_leverage)
    return np.where(np.isnan(vol), 0.0, scale)


@struct.dataclass
class StepAccounting:
    """The accounting of one step t (all broadcast to the inputs' shape)."""

    exposure: jnp.ndarray  # e_t = a_t * L_t
    turnover: jnp.ndarray  # u_t = |e_t - e_{t-1}|
    cost: jnp.ndarray  # cost_rate * u_t, a fraction of NAV
    gross: jnp.ndarray  # e_t * (exp(r_{t+1}) - 1)
    net_return: jnp.ndarray  # gross_t - cost_t = NAV_{t+1} / NAV_t - 1 (floored)
    pnl: jnp.ndarray  # ln(1 + gross_t - cost_t)
    next_nav: jnp.ndarray  # NAV_{t+1} = NAV_t * (1 + gross_t - cost_t)


def step_accounting(nav, prev_exposure, action, leverage, next_log_return,
                    cost_rate) -> StepAccounting:
    """NAV, cost and pnl of holding a_t * L_t over hour t+1 (DESIGN.md, trading accounting).

    cost_rate = (fee_bps + slippage_bps) / 1e4. The growth factor is floored at MIN_GROWTH.
    """
    exposure = action * leverage
    turnover = jnp.abs(exposure - prev_exposure)
    cost = cost_rate * turnover
    gross = exposure * jnp.expm1(next_log_return)
    net = jnp.maximum(gross - cost, MIN_GROWTH - 1.0)  # simple return of the step
    # log1p keeps pnl accurate in float32 (ln(1 + x) would lose ~1e-7 absolute).
    return StepAccounting(exposure=exposure, turnover=turnover, cost=cost, gross=gross,
                          net_return=net, pnl=jnp.log1p(net), next_nav=nav * (1.0 + net))


@struct.dataclass
class RewardComponents:
    """reward = reward_scale * pnl - churn - smooth; churn and smooth are the penalties."""

    reward: jnp.ndarray
    pnl_term: jnp.ndarray  # reward_scale * pnl_t
    churn: jnp.ndarray  # churn_coef * |a_t - a_{t-1}|
    smooth: jnp.ndarray  # smooth_coef * (a_t - a_{t-1})^2


def reward(pnl, action, prev_action, reward_scale, churn_coef,
           smooth_coef) -> RewardComponents:
    """r_t = scale * pnl_t - churn * |a_t - a_{t-1}| - smooth * (a_t - a_{t-1})^2 (DESIGN.md)."""
    delta = action - prev_action
    pnl_term = reward_scale * pnl
    churn = churn_coef * jnp.abs(delta)
    smooth = smooth_coef * delta * delta
    return RewardComponents(reward=pnl_term - churn - smooth, pnl_term=pnl_term, churn=churn,
                            smooth=smooth)


def total_cost_rate(fee_bps: float, slippage_bps: float) -> float:
    """Cost per unit of turnover: (fee_bps + slippage_bps) / 1e4 (DESIGN.md)."""
    return (fee_bps + slippage_bps) / 1e4
