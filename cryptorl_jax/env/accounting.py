"""The trading accounting: log returns, realised vol, vol-targeted leverage, NAV, cost, reward.

The one definition of docs/reference.md's "The trading accounting", used by both
`env.trading.step` and `backtest.simulate`. The jnp functions are pure and broadcast elementwise
(scalars inside a vmapped env step, vectors in tests); the `*_np` variants are float64 host
versions for building `MarketData` from pandas/numpy.

Conventions (docs/reference.md): r_t = ln(c_t / c_{t-1}) with r_0 = 0.0 (never realised); s_t is NaN
for t < V; the action a_t chosen at the close of t asks for the exposure e*_t = a_t * L_t
(the target), which is traded only when it leaves the no-trade band around the drifted weight
(|e*_t - w_t| > b: then e_t = e*_t, else e_t = w_t), and realises r_{t+1}; L_t = 0 where s_t is
undefined (exposure 0).

The vol estimate s_t is an exponentially weighted standard deviation over the last V returns
(half-life h hours; h = None gives equal weights, the plain rolling std), times sqrt(H): with
H = 8,760 it is an annual vol and the target is stated in annual terms. A finite window keeps
s_t a function of rows t-V+1..t only, so every slice of the market that holds them gives the
same s_t (a recursive EWMA would depend on where the slice starts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cryptorl_jax.core.units import HOURS_PER_YEAR

# Floor of the one-step growth factor 1 + gross - cost: a step that would lose everything
# (only possible when |e_t| * |exp(r_{t+1}) - 1| + cost >= 1) leaves NAV at this fraction
# instead of <= 0, so pnl = ln(growth) stays finite. The ruin termination fires long before.
MIN_GROWTH = 1e-6


def log_returns_np(close: np.ndarray) -> np.ndarray:
    """r_t = ln(c_t / c_{t-1}) in float64, with r_0 = 0.0 (docs/reference.md, trading
    accounting)."""
    close = np.asarray(close, dtype=np.float64)
    out = np.zeros_like(close)
    out[1:] = np.log(close[1:] / close[:-1])
    return out


def log_returns(close: jnp.ndarray) -> jnp.ndarray:
    """r_t = ln(c_t / c_{t-1}) with r_0 = 0.0 (docs/reference.md, trading accounting)."""
    r = jnp.log(close[1:] / close[:-1])
    return jnp.concatenate([jnp.zeros((1,), r.dtype), r])


def vol_weights(vol_window: int, halflife_hours: float | None = None) -> np.ndarray:
    """[V] float64 weights of r_t, r_{t-1}, ..., r_{t-V+1}: 2^(-j / h) normalised to sum 1
    (equal weights 1 / V when h is None)."""
    if halflife_hours is None:
        w = np.ones(vol_window)
    else:
        w = 0.5 ** (np.arange(vol_window) / float(halflife_hours))
    return w / w.sum()


def realised_vol_np(log_returns: np.ndarray, vol_window: int, horizon_hours: int,
                    halflife_hours: float | None = None) -> np.ndarray:
    """s_t = sqrt(sum_j w_j (r_{t-j} - m_t)^2) * sqrt(H) with m_t = sum_j w_j r_{t-j} over
    j < V (weights `vol_weights`), NaN for t < V; float64 (docs/reference.md). With equal
    weights this is std(r_{t-V+1..t}, ddof=0) * sqrt(H)."""
    r = np.asarray(log_returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"log_returns must be 1-D, got shape {r.shape}")
    out = np.full(r.shape, np.nan)
    if len(r) > vol_window:
        # row i of the view holds r_{i+1} .. r_{i+V}; reversed, column j is r_{t-j}, t = i + V
        windows = np.lib.stride_tricks.sliding_window_view(r[1:], vol_window)[:, ::-1]
        if halflife_hours is None:
            out[vol_window:] = windows.std(axis=1) * np.sqrt(horizon_hours)
        else:
            w = vol_weights(vol_window, halflife_hours)
            mean = windows @ w
            var = ((windows - mean[:, None]) ** 2) @ w
            out[vol_window:] = np.sqrt(var) * np.sqrt(horizon_hours)
    return out


def realised_vol(log_returns: jnp.ndarray, vol_window: int, horizon_hours: int,
                 halflife_hours: float | None = None) -> jnp.ndarray:
    """`realised_vol_np` on the device, NaN for t < V (docs/reference.md, trading accounting).

    `vol_window`, `horizon_hours` and `halflife_hours` are static. Two-pass weighted std over a
    gathered [T, V] window matrix (no cumulative-sum cancellation in float32).
    """
    n = log_returns.shape[0]
    t = jnp.arange(n)
    rows = t[:, None] - jnp.arange(vol_window)[None, :]  # [T, V]: t, t-1, ..., t-V+1
    windows = log_returns[jnp.clip(rows, 0, n - 1)]  # [T, V]
    w = jnp.asarray(vol_weights(vol_window, halflife_hours), log_returns.dtype)
    mean = windows @ w
    std = jnp.sqrt(((windows - mean[:, None]) ** 2) @ w)
    vol = std * jnp.sqrt(jnp.asarray(horizon_hours, log_returns.dtype))
    return jnp.where(t >= vol_window, vol, jnp.nan)


def leverage(vol, target_volatility, vol_floor, max_leverage) -> jnp.ndarray:
    """L_t = min(target / max(s_t, floor), cap), and 0 where s_t is NaN (docs/reference.md)."""
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
class Book:
    """The accounting state at the close of row t, before the trade at t (broadcasts).

    `weight` is w_t, the position actually held into the close of t as a fraction of NAV_t:
    the previous exposure after one hour of drift, w_t = e_{t-1} (1 + R_t) / (1 + net_{t-1}),
    with R_t = exp(r_t) - 1 (0 before the first step). The trade at t is e_t - w_t.
    """

    t: jnp.ndarray  # int32 row whose close was just seen
    prev_action: jnp.ndarray  # a_{t-1}, 0 before the first step
    weight: jnp.ndarray  # w_t, the drifted weight held into the close of t
    nav: jnp.ndarray  # NAV_t
    peak_nav: jnp.ndarray  # max NAV so far

    @classmethod
    def start(cls, t, dtype=jnp.float32) -> Book:
        """Flat, NAV 1 at row t (an episode's or a backtest's first close)."""
        zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
        return cls(t=jnp.asarray(t, jnp.int32), prev_action=zero, weight=zero, nav=one,
                   peak_nav=one)


@struct.dataclass
class StepAccounting:
    """The accounting of one step t (all broadcast to the inputs' shape)."""

    exposure: jnp.ndarray  # e_t: the target a_t L_t if traded, else w_t (band, held bar)
    turnover: jnp.ndarray  # u_t = |e_t - w_t|
    cost: jnp.ndarray  # cost_rate * u_t, a fraction of NAV_t
    financing: jnp.ndarray  # borrow_rate * (max(e_t - 1, 0) + max(-e_t, 0)), fraction of NAV_t
    gross: jnp.ndarray  # e_t * (exp(r_{t+1}) - 1)
    net_return: jnp.ndarray  # gross - cost - financing = NAV_{t+1} / NAV_t - 1 (floored)
    pnl: jnp.ndarray  # ln(1 + net_t)
    next_nav: jnp.ndarray  # NAV_{t+1} = NAV_t * (1 + net_t)
    next_weight: jnp.ndarray  # w_{t+1} = e_t (1 + R_{t+1}) / (1 + net_t)


def borrowed(exposure) -> jnp.ndarray:
    """Borrowed notional as a fraction of NAV: max(e - 1, 0) for a long, |e| for a short."""
    return jnp.maximum(exposure - 1.0, 0.0) + jnp.maximum(-exposure, 0.0)


def traded_exposure(weight, action, leverage, tradable=True, band=0.0) -> jnp.ndarray:
    """e_t: the target e*_t = a_t L_t where row t can trade and |e*_t - w_t| > band, else the
    drifted weight w_t (no trade). band 0 trades every change of the target."""
    target = action * leverage
    trade = jnp.logical_and(tradable, jnp.abs(target - weight) > band)
    return jnp.where(trade, target, weight)


def relaxed_traded_exposure(weight, action, leverage, tradable=True, band=0.0,
                            temperature=0.02) -> jnp.ndarray:
    """A differentiable stand-in for `traded_exposure` (the direct learner's training): of the
    move d = a_t L_t - w_t the share g = sigmoid((|d| - band) / temperature) is traded,
    e_t = w_t + g d, where row t can trade (else w_t). As temperature -> 0, g tends to
    1{|d| > band} and e_t to `traded_exposure` (for |d| != band)."""
    move = action * leverage - weight
    gate = jax.nn.sigmoid((jnp.abs(move) - band) / temperature)
    return jnp.where(tradable, weight + gate * move, weight)


def step_accounting(nav, weight, action, leverage, next_log_return, cost_rate,
                    borrow_rate=0.0, tradable=True, band=0.0,
                    band_temperature=None) -> StepAccounting:
    """NAV, costs and pnl of trading from w_t to e_t and holding it over hour t+1.

    e_t = `traded_exposure`: the target a_t * L_t when it leaves the no-trade band |.| <= band
    around w_t on a row that can trade, else w_t (no trade; `tradable` False means the traded
    asset's bar at t was filled: its price did not trade). cost_rate = (fee_bps +
    slippage_bps) / 1e4 per unit of turnover; borrow_rate is the HOURLY rate
    (borrow_rate_annual / 8760). The growth factor is floored at MIN_GROWTH. Broadcasts
    elementwise; the dtype follows the inputs. `band_temperature` (the direct learner's
    training only) trades through `relaxed_traded_exposure` instead; None: the exact band.
    """
    if band_temperature is None:
        exposure = traded_exposure(weight, action, leverage, tradable, band)
    else:
        exposure = relaxed_traded_exposure(weight, action, leverage, tradable, band,
                                           band_temperature)
    turnover = jnp.abs(exposure - weight)
    cost = cost_rate * turnover
    financing = borrow_rate * borrowed(exposure)
    growth = jnp.expm1(next_log_return)  # R_{t+1}
    gross = exposure * growth
    net = jnp.maximum(gross - cost - financing, MIN_GROWTH - 1.0)
    # log1p keeps pnl accurate in float32 (ln(1 + x) would lose ~1e-7 absolute).
    return StepAccounting(exposure=exposure, turnover=turnover, cost=cost, financing=financing,
                          gross=gross, net_return=net, pnl=jnp.log1p(net),
                          next_nav=nav * (1.0 + net),
                          next_weight=exposure * (1.0 + growth) / (1.0 + net))


def advance(book: Book, action, leverage, next_log_return, cost_rate, borrow_rate=0.0,
            tradable=True, band=0.0, band_temperature=None) -> tuple[StepAccounting, Book]:
    """The one state update of the accounting: trade at the close of book.t, hold to t + 1.

    Returns the step's accounting and the book at t + 1 (row, action, drifted weight, NAV and
    peak NAV). The env (`trading.step`, `trading.replay`), the OOS rollout and
    `backtest.simulate` all step through this function.
    """
    acc = step_accounting(book.nav, book.weight, action, leverage, next_log_return, cost_rate,
                          borrow_rate, tradable, band, band_temperature)
    nxt = Book(t=book.t + 1, prev_action=jnp.asarray(action, book.weight.dtype),
               weight=acc.next_weight, nav=acc.next_nav,
               peak_nav=jnp.maximum(book.peak_nav, acc.next_nav))
    return acc, nxt


@struct.dataclass
class RewardComponents:
    """reward = reward_scale * pnl - churn - smooth; churn and smooth are the penalties."""

    reward: jnp.ndarray
    pnl_term: jnp.ndarray  # reward_scale * pnl_t
    churn: jnp.ndarray  # churn_coef * u_t, u_t = |e_t - w_t| the step's turnover
    smooth: jnp.ndarray  # smooth_coef * u_t^2


def reward(pnl, turnover, reward_scale, churn_coef, smooth_coef) -> RewardComponents:
    """r_t = scale * pnl_t - churn * u_t - smooth * u_t^2 with u_t = |e_t - w_t|, the turnover
    the ledger charges (docs/reference.md): the penalties act on the trade actually made, so
    holding a steady exposure while leverage moves costs what the trade costs, and a move of
    the action inside the no-trade band costs nothing."""
    pnl_term = reward_scale * pnl
    churn = churn_coef * turnover
    smooth = smooth_coef * turnover * turnover
    return RewardComponents(reward=pnl_term - churn - smooth, pnl_term=pnl_term, churn=churn,
                            smooth=smooth)


def total_cost_rate(fee_bps: float, slippage_bps: float) -> float:
    """Cost per unit of turnover: (fee_bps + slippage_bps) / 1e4 (docs/reference.md)."""
    return (fee_bps + slippage_bps) / 1e4




def hourly_borrow_rate(borrow_rate_annual: float) -> float:
    """The financing charged per hour on the borrowed notional: annual rate / 8,760."""
    return borrow_rate_annual / HOURS_PER_YEAR
