"""Deterministic backtest: replay an action series over a close series with the env's accounting.

`simulate` scans `env.accounting.advance` (the one state update of the trading accounting, the
env's own) with `lax.scan` in float64 (`jax.enable_x64` for the call; the training env stays
float32) and returns numpy float64 arrays. Realised vol is computed over the whole close series
given, so a caller can prepend lookback rows and act only from row `start` on:

    simulate(close[test_start - k:test_end], actions, cfg.env, start=k)

runs a backtest whose NAV is 1 at row `test_start` (the k-th given row), whose first
position is taken at the close of that row, and whose vol estimate uses the k lookback rows
(k >= vol_window makes L_t defined from the first step). Actions before `start` are ignored
(the position is flat before it, as at an episode's start); the last action is never used
(there is no return after the last close).

The exposure goes through the env's mapping: the target a_t L_t is traded only when it leaves
the no-trade band (`env.no_trade_band`) around the drifted weight; inside it the weight is held.

What is charged (docs/architecture.md): the trade from the drifted weight w_t to e_t at
(fee_bps + slippage_bps) / 1e4 per unit of NAV traded, and financing of the borrowed notional
(max(e - 1, 0) long, |e| short) at env.borrow_rate_annual / 8760 per hour. `tradable[t]`
False (a filled bar of the traded asset) holds the position at t: no trade at that price.

Costs: `cost_multiplier` scales fee + slippage (2.0: the doubled-cost stress; 0.0: no trading
costs) without touching the config and without recompiling; financing is not scaled. Replaying
one action series at several multipliers keeps the trades fixed (the cost stress of the report).

Exposure modes: "action" (default) is the env's e_t = a_t * L_t; "target" takes the action
as the exposure itself (e_t = a_t, no vol scaling, defined from the first row), which is how
plain buy-and-hold (exposure 1) runs through the same accounting.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from cryptorl_jax.config import EnvConfig
from cryptorl_jax.env import accounting

ACTION_TOLERANCE = 1e-6  # |a_t| may exceed 1 by this much (float noise); it is then clipped


@jax.jit
def _scan(actions, vol, next_returns, tradable, cost_rate, borrow_rate, target_volatility,
          vol_floor, max_leverage, band, reward_scale, churn_coef, smooth_coef, target_mode):
    """Scan the accounting over n steps; inputs are [n] (step i: row start + i)."""
    lev = accounting.leverage(vol, target_volatility, vol_floor, max_leverage)
    lev = jnp.where(target_mode, jnp.ones_like(lev), lev)

    def body(book, x):
        action, leverage, next_return, can_trade = x
        acc, nxt = accounting.advance(book, action, leverage, next_return, cost_rate,
                                      borrow_rate, can_trade, band)
        rew = accounting.reward(acc.pnl, acc.turnover, reward_scale, churn_coef, smooth_coef)
        out = {"exposure": acc.exposure, "weight": book.weight, "turnover": acc.turnover,
               "cost": acc.cost, "financing": acc.financing, "gross": acc.gross,
               "pnl": acc.pnl, "reward": rew.reward, "churn": rew.churn, "smooth": rew.smooth,
               "leverage": leverage, "returns": acc.net_return, "nav": acc.next_nav}
        return nxt, out

    start = accounting.Book.start(0, actions.dtype)
    _, out = jax.lax.scan(body, start, (actions, lev, next_returns, tradable))
    return out


def _validate(close: np.ndarray, actions: np.ndarray, start: int) -> None:
    if close.ndim != 1 or close.shape[0] < 2:
        raise ValueError(f"close must be 1-D with at least 2 values, got shape {close.shape}")
    if actions.shape != close.shape:
        raise ValueError(f"actions must have close's shape {close.shape}, got {actions.shape}")
    bad = ~np.isfinite(close) | (close <= 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"close must be finite and > 0: row {row} holds {close[row]!r}")
    if not 0 <= start <= close.shape[0] - 2:
        raise ValueError(f"start = {start} must be in [0, {close.shape[0] - 2}] "
                         f"(at least one return after it)")
    used = actions[start:-1]
    bad = ~np.isfinite(used) | (np.abs(used) > 1.0 + ACTION_TOLERANCE)
    if bad.any():
        row = start + int(np.argmax(bad))
        raise ValueError(f"actions must be finite and in [-1, 1]: row {row} holds "
                         f"{actions[row]!r}")


def simulate(close, actions, env_config: EnvConfig, churn_coef: float = 0.0,
             smooth_coef: float = 0.0, *, cost_multiplier: float = 1.0, start: int = 0,
             exposure_mode: Literal["action", "target"] = "action",
             tradable=None) -> dict[str, np.ndarray]:
    """Backtest an action series; the public API (step t realises r_{t+1}).

    close, actions (and `tradable`, default all True): T values. Returns float64 numpy arrays:
    `nav` (T - start values, nav[0] = 1) and, with T - start - 1 values (step i is row
    start + i): exposure, weight (the drifted w_t traded from), turnover (|e_t - w_t|), cost,
    financing, gross, pnl, reward, churn, smooth (the penalties), leverage, action (as used),
    returns (simple: nav[i + 1] / nav[i] - 1).
    """
    if exposure_mode not in ("action", "target"):
        raise ValueError(f"exposure_mode must be 'action' or 'target', got {exposure_mode!r}")
    if not cost_multiplier >= 0:
        raise ValueError(f"cost_multiplier must be >= 0, got {cost_multiplier}")
    close = np.asarray(close, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    start = int(start)
    _validate(close, actions, start)
    tradable = np.ones(close.shape, bool) if tradable is None else np.asarray(tradable, bool)
    if tradable.shape != close.shape:
        raise ValueError(f"tradable must have close's shape {close.shape}, got "
                         f"{tradable.shape}")
    cfg = env_config
    r = accounting.log_returns_np(close)
    vol = accounting.realised_vol_np(r, cfg.vol_window, cfg.vol_horizon_hours,
                                     cfg.vol_halflife_hours)
    used = np.clip(actions[start:-1], -1.0, 1.0)
    with jax.enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        out = _scan(f64(used), f64(vol[start:-1]), f64(r[start + 1:]),
                    jnp.asarray(tradable[start:-1]),
                    f64(accounting.total_cost_rate(cfg.fee_bps, cfg.slippage_bps)
                        * cost_multiplier),
                    f64(accounting.hourly_borrow_rate(cfg.borrow_rate_annual)),
                    f64(cfg.target_volatility), f64(cfg.vol_floor), f64(cfg.max_leverage),
                    f64(cfg.no_trade_band), f64(cfg.reward_scale), f64(churn_coef),
                    f64(smooth_coef),
                    jnp.asarray(exposure_mode == "target"))
        res = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    res["nav"] = np.concatenate([np.ones(1), res["nav"]])
    res["action"] = used
    return res
