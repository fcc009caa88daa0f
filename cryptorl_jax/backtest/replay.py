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

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from cryptorl_jax.config import EnvConfig
from cryptorl_jax.env import accounting

ACTION_TOLERANCE = 1e-6  # |a_t| may exceed 1 by this much (float noise); it is then clipped


SIM_KEYS = ("exposure", "weight", "turnover", "cost", "financing", "gross", "pnl", "reward",
            "churn", "smooth", "leverage", "returns", "nav")
PATH_KEYS = ("returns", "exposure", "turnover", "cost", "financing")


def _run(actions, leverage, next_returns, tradable, cost_rate, borrow_rate, band, reward_scale,
         churn_coef, smooth_coef, keys):
    """The one scan body: `accounting.advance` over n steps from a flat book with NAV 1.

    Inputs are [n] (step i: the i-th decision row): the action a_t, the leverage L_t, the log
    return r_{t+1} realised over the hour held, and whether row t can trade. Returns the
    per-step outputs named in `keys` (static), each [n].
    """

    def body(book, x):
        action, lev, next_return, can_trade = x
        acc, nxt = accounting.advance(book, action, lev, next_return, cost_rate,
                                      borrow_rate, can_trade, band)
        rew = accounting.reward(acc.pnl, acc.turnover, reward_scale, churn_coef, smooth_coef)
        out = {"exposure": acc.exposure, "weight": book.weight, "turnover": acc.turnover,
               "cost": acc.cost, "financing": acc.financing, "gross": acc.gross,
               "pnl": acc.pnl, "reward": rew.reward, "churn": rew.churn, "smooth": rew.smooth,
               "leverage": lev, "returns": acc.net_return, "nav": acc.next_nav}
        return nxt, {k: out[k] for k in keys}

    start = accounting.Book.start(0, actions.dtype)
    _, out = jax.lax.scan(body, start, (actions, leverage, next_returns, tradable))
    return out


# `simulate`: one book; one compile per length.
_scan = jax.jit(_run, static_argnames="keys")


@functools.partial(jax.jit, static_argnames="keys")
def _scan_paths(actions, leverage, next_returns, tradable, cost_rate, borrow_rate, band,
                reward_scale, keys):
    """`_run` vmapped over the rows of actions [N, n] (one book per row), the market shared,
    no churn or smoothness penalty; outputs [N, n]. One compile per (N, n, keys)."""
    zero = jnp.zeros((), actions.dtype)
    return jax.vmap(lambda a: _run(a, leverage, next_returns, tradable, cost_rate, borrow_rate,
                                   band, reward_scale, zero, zero, keys))(actions)


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
        if exposure_mode == "target":
            lev = f64(np.ones(len(used)))
        else:
            lev = accounting.leverage(f64(vol[start:-1]), f64(cfg.target_volatility),
                                      f64(cfg.vol_floor), f64(cfg.max_leverage))
        out = _scan(f64(used), lev, f64(r[start + 1:]), jnp.asarray(tradable[start:-1]),
                    f64(accounting.total_cost_rate(cfg.fee_bps, cfg.slippage_bps)
                        * cost_multiplier),
                    f64(accounting.hourly_borrow_rate(cfg.borrow_rate_annual)),
                    f64(cfg.no_trade_band), f64(cfg.reward_scale), f64(churn_coef),
                    f64(smooth_coef), keys=SIM_KEYS)
        res = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    res["nav"] = np.concatenate([np.ones(1), res["nav"]])
    res["action"] = used
    return res


def path_arrays(actions, columns: dict[str, object], *, min_len: int = 1,
                context: str = "") -> tuple[np.ndarray, list[np.ndarray]]:
    """Actions as [N, n] float64 (a 1-D path becomes [1, n]), checked finite and in [-1, 1]
    (up to ACTION_TOLERANCE), and each named column as an array of shape [n] (float64, the
    tradable mask as given); a ValueError prefixed by `context` names the array, and the
    position of a bad action."""
    a = np.asarray(actions, dtype=np.float64)
    a = a[None, :] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] < min_len:
        raise ValueError(f"{context}actions must be [N, n] with n >= {min_len}, got shape "
                         f"{np.shape(actions)}")
    bad = ~np.isfinite(a) | (np.abs(a) > 1.0 + ACTION_TOLERANCE)
    if bad.any():
        i, t = (int(j) for j in np.unravel_index(int(np.argmax(bad)), a.shape))
        raise ValueError(f"{context}actions must be finite and in [-1, 1]: actions[{i}, {t}] "
                         f"holds {float(a[i, t])!r}")
    n = a.shape[1]
    out = []
    for name, x in columns.items():
        arr = np.asarray(x) if name == "tradable" else np.asarray(x, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"{context}{name} must have shape ({n},) like each action path, "
                             f"got {arr.shape}")
        out.append(arr)
    return a, out


def simulate_paths(actions, leverage, next_log_returns, tradable, env_config: EnvConfig,
                   cost_multiplier: float = 1.0, *,
                   keys: tuple[str, ...] = PATH_KEYS) -> dict[str, np.ndarray]:
    """Re-simulate N action paths on one market through the same accounting as `simulate`.

    actions [N, n] (or [n]): a_t of each path at the n decision rows, in [-1, 1] (clipped);
    leverage [n]: the market's L_t at those rows (>= 0, 0 where undefined: the env's
    `accounting.leverage`, not recomputed here); next_log_returns [n]: r_{t+1}, the log return
    over the hour held; tradable [n]: row t's bar traded. Each path starts flat with NAV 1 at
    the first row and trades through `accounting.advance` with the config's costs (fee +
    slippage times `cost_multiplier`), financing and no-trade band, in float64. Returns the
    per-step outputs named in `keys` (any of `SIM_KEYS`, as `simulate` with churn_coef =
    smooth_coef = 0; default returns, exposure, turnover, cost, financing), each [N, n]
    float64 ([n] for 1-D actions; `nav` is NAV after each step: `simulate`'s nav[1:]). One
    compile per (N, n, keys).
    """
    one = np.ndim(actions) == 1
    a, (lev, r, ok) = path_arrays(actions, {"leverage": leverage,
                                            "next_log_returns": next_log_returns,
                                            "tradable": tradable})
    for name, x, cond in (("leverage", lev, np.isfinite(lev) & (lev >= 0)),
                          ("next_log_returns", r, np.isfinite(r))):
        if not cond.all():
            t = int(np.argmax(~cond))
            raise ValueError(f"{name} must be finite{' and >= 0' if name == 'leverage' else ''}"
                             f": position {t} holds {float(x[t])!r}")
    unknown = [k for k in keys if k not in SIM_KEYS]
    if unknown:
        raise ValueError(f"unknown keys {unknown}; choose from {SIM_KEYS}")
    if not cost_multiplier >= 0:
        raise ValueError(f"cost_multiplier must be >= 0, got {cost_multiplier}")
    cfg = env_config
    with jax.enable_x64(True):
        f64 = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
        out = _scan_paths(f64(np.clip(a, -1.0, 1.0)), f64(lev), f64(r),
                          jnp.asarray(ok.astype(bool)),
                          f64(accounting.total_cost_rate(cfg.fee_bps, cfg.slippage_bps)
                              * cost_multiplier),
                          f64(accounting.hourly_borrow_rate(cfg.borrow_rate_annual)),
                          f64(cfg.no_trade_band), f64(cfg.reward_scale), keys=tuple(keys))
        res = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    return {k: v[0] for k, v in res.items()} if one else res
