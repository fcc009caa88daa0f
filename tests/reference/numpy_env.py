"""Plain-numpy, loop-based reading of docs/reference.md's trading accounting and of the trading env.

Written independently of `cryptorl_jax.env` (Python floats, float64, explicit loops) so the
parity tests compare two readings of the same equations. `NumpyTradingEnv` is also the lean
baseline of `scripts/bench.py env`: per step one [W, F] slice copy and a few scalar ops.
"""

from __future__ import annotations

import math

import numpy as np


def log_returns(close) -> np.ndarray:
    """r_t = ln(c_t / c_{t-1}), r_0 = 0."""
    out = np.zeros(len(close))
    for t in range(1, len(close)):
        out[t] = math.log(float(close[t]) / float(close[t - 1]))
    return out


def realised_vol(returns, vol_window: int, horizon_hours: int,
                 halflife_hours: float | None = None) -> np.ndarray:
    """s_t = weighted population std of r_{t-V+1..t} times sqrt(H); NaN for t < V.

    The weight of r_{t-j} is 2^(-j / h), normalised (equal weights when h is None).
    """
    raw = [1.0 if halflife_hours is None else 2.0 ** (-j / halflife_hours)
           for j in range(vol_window)]
    total = sum(raw)
    weights = [x / total for x in raw]
    out = np.full(len(returns), np.nan)
    for t in range(vol_window, len(returns)):
        window = [float(returns[t - j]) for j in range(vol_window)]  # r_t, r_{t-1}, ...
        mean = sum(w * x for w, x in zip(weights, window))
        var = sum(w * (x - mean) ** 2 for w, x in zip(weights, window))
        out[t] = math.sqrt(var) * math.sqrt(horizon_hours)
    return out


def leverage(vol: float, target_volatility: float, vol_floor: float, max_leverage: float) -> float:
    """min(target / max(s, floor), cap); 0 where s is undefined."""
    if math.isnan(vol):
        return 0.0
    return min(target_volatility / max(vol, vol_floor), max_leverage)


def account(nav: float, weight: float, action: float, lev: float, next_return: float,
            cost_rate: float, borrow_rate: float = 0.0, tradable: bool = True,
            band: float = 0.0) -> dict:
    """One step of the accounting (growth floored at 1e-6, as the package documents).

    weight: the drifted weight w_t held into the close; borrow_rate: hourly; band: the
    no-trade band (the target action * lev is traded only when it differs from w_t by more).
    """
    target = action * lev
    exposure = target if tradable and abs(target - weight) > band else weight
    turnover = abs(exposure - weight)
    cost = cost_rate * turnover
    if exposure >= 0:
        financing = borrow_rate * max(exposure - 1.0, 0.0)
    else:
        financing = borrow_rate * -exposure
    move = math.exp(next_return) - 1.0
    gross = exposure * move
    growth = max(1.0 + gross - cost - financing, 1e-6)
    return {"exposure": exposure, "turnover": turnover, "cost": cost, "financing": financing,
            "gross": gross, "pnl": math.log(growth), "next_nav": nav * growth,
            "next_weight": exposure * (1.0 + move) / growth}


def reward(pnl: float, turnover: float, reward_scale: float, churn_coef: float,
           smooth_coef: float) -> float:
    """scale * pnl - churn * u - smooth * u^2, u = |e_t - w_t| the turnover charged."""
    return reward_scale * pnl - churn_coef * turnover - smooth_coef * turnover * turnover


def simulate(close, actions, fee_bps: float, slippage_bps: float, target_volatility: float,
             vol_window: int, horizon_hours: int, max_leverage: float, vol_floor: float,
             reward_scale: float, churn_coef: float = 0.0, smooth_coef: float = 0.0,
             start: int = 0, exposure_mode: str = "action", borrow_rate_annual: float = 0.0,
             tradable=None, halflife_hours: float | None = None, band: float = 0.0) -> dict:
    """Loop backtest: nav has T - start values from 1, the rest T - start - 1 (t -> r_{t+1})."""
    r = log_returns(close)
    vol = realised_vol(r, vol_window, horizon_hours, halflife_hours)
    rate = (fee_bps + slippage_bps) / 1e4
    borrow = borrow_rate_annual / 8760.0
    nav, weight = 1.0, 0.0
    out = {k: [] for k in ("exposure", "turnover", "cost", "financing", "pnl", "reward")}
    navs = [nav]
    for t in range(start, len(close) - 1):
        a = float(actions[t])
        lev = 1.0 if exposure_mode == "target" else leverage(vol[t], target_volatility,
                                                             vol_floor, max_leverage)
        can_trade = True if tradable is None else bool(tradable[t])
        acc = account(nav, weight, a, lev, r[t + 1], rate, borrow, can_trade, band)
        for k in ("exposure", "turnover", "cost", "financing", "pnl"):
            out[k].append(acc[k])
        out["reward"].append(reward(acc["pnl"], acc["turnover"], reward_scale, churn_coef,
                                    smooth_coef))
        nav, weight = acc["next_nav"], acc["next_weight"]
        navs.append(nav)
    res = {k: np.asarray(v) for k, v in out.items()}
    res["nav"] = np.asarray(navs)
    return res


class NumpyTradingEnv:
    """Single-env gymnasium-style reading of `cryptorl_jax.env.trading` (no auto-reset).

    reset(start=None) draws the start uniformly in [first_start, last_start] unless given;
    step(action) -> (obs, reward, terminated, truncated, info); obs = (window [W, F], agent [3]).
    """

    def __init__(self, features: np.ndarray, close: np.ndarray, *, window: int,
                 episode_length: int, fee_bps: float, slippage_bps: float,
                 target_volatility: float, vol_window: int, horizon_hours: int,
                 max_leverage: float, vol_floor: float, reward_scale: float, ruin_nav: float,
                 first_start: int, last_start: int, last_row: int, churn_coef: float = 0.0,
                 smooth_coef: float = 0.0, seed: int = 0, borrow_rate_annual: float = 0.0,
                 halflife_hours: float | None = None, band: float = 0.0):
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.window = window
        self.episode_length = episode_length
        self.cost_rate = (fee_bps + slippage_bps) / 1e4
        self.borrow_rate = borrow_rate_annual / 8760.0
        r = log_returns(close)
        vol = realised_vol(r, vol_window, horizon_hours, halflife_hours)
        self.band = band
        # Python lists: scalar reads per step without numpy-scalar overhead.
        self._returns = r.tolist()
        self._vol = vol.tolist()
        self.target_volatility = target_volatility
        self.vol_floor = vol_floor
        self.max_leverage = max_leverage
        self.reward_scale = reward_scale
        self.ruin_nav = ruin_nav
        self.first_start, self.last_start, self.last_row = first_start, last_start, last_row
        self.churn_coef, self.smooth_coef = churn_coef, smooth_coef
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, features, close, env_cfg, first_start: int, last_start: int,
                    last_row: int, **kwargs) -> NumpyTradingEnv:
        c = env_cfg
        return cls(features, close, window=c.window, episode_length=c.episode_length,
                   fee_bps=c.fee_bps, slippage_bps=c.slippage_bps,
                   target_volatility=c.target_volatility, vol_window=c.vol_window,
                   horizon_hours=c.vol_horizon_hours, max_leverage=c.max_leverage,
                   vol_floor=c.vol_floor, reward_scale=c.reward_scale, ruin_nav=c.ruin_nav,
                   first_start=first_start, last_start=last_start, last_row=last_row,
                   borrow_rate_annual=c.borrow_rate_annual,
                   halflife_hours=c.vol_halflife_hours, band=c.no_trade_band, **kwargs)

    def _obs(self):
        t = self.t
        window = self.features[t - self.window + 1:t + 1].copy()  # [W, F], the one slice copy
        agent = np.array([self.prev_action, self.weight, self.nav / self.peak_nav - 1.0],
                         dtype=np.float32)
        return window, agent

    def reset(self, start: int | None = None):
        if start is None:
            start = int(self.rng.integers(self.first_start, self.last_start + 1))
        self.t = start
        self.step_count = 0
        self.prev_action = 0.0
        self.weight = 0.0
        self.nav = 1.0
        self.peak_nav = 1.0
        return self._obs()

    def step(self, action: float):
        t = self.t
        a = min(max(float(action), -1.0), 1.0)
        vol = self._vol[t]
        lev = 0.0 if vol != vol else min(self.target_volatility / max(vol, self.vol_floor),
                                         self.max_leverage)
        target = a * lev
        exposure = target if abs(target - self.weight) > self.band else self.weight
        turnover = abs(exposure - self.weight)
        cost = self.cost_rate * turnover
        borrowed = exposure - 1.0 if exposure > 1.0 else (-exposure if exposure < 0 else 0.0)
        financing = self.borrow_rate * borrowed
        move = math.exp(self._returns[t + 1]) - 1.0
        gross = exposure * move
        growth = max(1.0 + gross - cost - financing, 1e-6)
        pnl = math.log(growth)
        churn = self.churn_coef * turnover
        smooth = self.smooth_coef * turnover * turnover
        rew = self.reward_scale * pnl - churn - smooth
        self.nav *= growth
        self.peak_nav = max(self.peak_nav, self.nav)
        self.prev_action, self.weight = a, exposure * (1.0 + move) / growth
        self.t = t + 1
        self.step_count += 1
        terminated = self.nav < self.ruin_nav
        truncated = self.t >= self.last_row or self.step_count >= self.episode_length
        info = {"pnl": pnl, "cost": cost, "financing": financing, "turnover": turnover,
                "exposure": exposure,
                "leverage": lev, "churn": churn, "smooth": smooth, "nav": self.nav}
        return self._obs(), rew, terminated, truncated, info
