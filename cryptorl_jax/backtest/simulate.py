"""Deterministic backtest: replay an action series over a close series with the env's accounting.

`simulate` scans `env.accounting` (the one definition of DESIGN.md's trading accounting) with
`lax.scan` in float32 and returns numpy arrays. Realised vol is computed over the whole close
series given, so a caller can prepend lookback rows and act only from row `start` on:

    simulate(close[test_start - k:test_end], actions, cfg.env, start=k)

runs a backtest whose NAV is 1 at row `test_start` (the k-th given row), whose first
position is taken at the close of that row, and whose vol estimate uses the k lookback rows
(k >= vol_window makes L_t defined from the first step). Actions before `start` are ignored
(the position is flat before it, as at an episode's start); the last action is never used
(there is no return after the last close).

Costs: `cost_multiplier` scales fee + slippage (2.0: the doubled-cost stress run; 0.0:
frictionless) without touching the config and without recompiling.

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
def _scan(actions, vol, next_returns, cost_rate, target_volatility, vol_floor, max_leverage,
          reward_scale, churn_coef, smooth_coef, target_mode):
    """Scan the accounting over n steps; inputs are [n] float32 (step i: row start + i)."""
    lev = accounting.leverage(vol, target_volatility, vol_floor, max_leverage)
    lev = jnp.where(target_mode, jnp.ones_like(lev), lev)

    def body(carry, x):
        nav, prev_action, prev_exposure = carry
        action, leverage, next_return = x
        acc = accounting.step_accounting(nav, prev_exposure, action, leverage, next_return,
                                         cost_rate)
        rew = accounting.reward(acc.pnl, action, prev_action, reward_scale, churn_coef,
                                smooth_coef)
        out = {"exposure": acc.exposure, "turnover": acc.turnover, "cost": acc.cost,
               "gross": acc.gross, "pnl": acc.pnl, "reward": rew.reward, "churn": rew.churn,
               "smooth": rew.smooth, "leverage": leverage,
               "returns": acc.net_return, "nav": acc.next_nav}
        return (acc.next_nav, action, acc.exposure), out

    zero = jnp.zeros((), jnp.float32)
    _, out = jax.lax.scan(body, (jnp.ones((), jnp.float32), zero, zero),
                          (actions, lev, next_returns))
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
             exposure_mode: Literal["action", "target"] = "action") -> dict[str, np.ndarray]:
    """Backtest an action series; DESIGN.md's public API (step t realises r_{t+1}).

    close, actions: T values. Returns numpy arrays: `nav` (T - start values, nav[0] = 1) and,
    with T - start - 1 values (step i is row start + i): exposure, turnover, cost, gross, pnl,
    reward, churn, smooth (the penalties), leverage, action (as used), returns (simple:
    nav[i + 1] / nav[i] - 1).
    """
    if exposure_mode not in ("action", "target"):
        raise ValueError(f"exposure_mode must be 'action' or 'target', got {exposure_mode!r}")
    if cost_multiplier < 0:
        raise ValueError(f"cost_multiplier must be >= 0, got {cost_multiplier}")
    close = np.asarray(close, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    start = int(start)
    _validate(close, actions, start)
    cfg = env_config
    r = accounting.log_returns_np(close)
    vol = accounting.realised_vol_np(r, cfg.vol_window, cfg.vol_horizon_hours)
    used = np.clip(actions[start:-1], -1.0, 1.0)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    out = _scan(f32(used), f32(vol[start:-1]), f32(r[start + 1:]),
                f32(accounting.total_cost_rate(cfg.fee_bps, cfg.slippage_bps) * cost_multiplier),
                f32(cfg.target_volatility), f32(cfg.vol_floor), f32(cfg.max_leverage),
                f32(cfg.reward_scale), f32(churn_coef), f32(smooth_coef),
                jnp.asarray(exposure_mode == "target"))
    res = {k: np.asarray(v) for k, v in out.items()}
    res["nav"] = np.concatenate([np.ones(1, np.float32), res["nav"]])
    res["action"] = used.astype(np.float32)
    return res
