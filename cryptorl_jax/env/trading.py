"""The trading env: pure `reset`/`step` over an `EnvState` pytree, vmapped by the caller.

Gymnax style (gymnax `environments/environment.py`): the market arrays are a `MarketData`
argument, never attributes of a static object, so a new walk-forward segment of the same
shape reuses the compiled step. The accounting is `env.accounting` (docs/reference.md).

Time semantics. The state's `t` is the row whose close the agent has just seen. Stepping at t
chooses a_t, holds e_t (the target a_t * L_t, or the drifted weight w_t when the target stays
inside the no-trade band or the bar cannot trade) and realises r_{t+1}; the next state is at
t + 1. An episode starts at t drawn uniformly in [first_start, last_start] and is TRUNCATED when
t + 1 == last_row (the last row whose return it may realise) or after `episode_length` steps;
it is TERMINATED when NAV < ruin_nav. A train episode therefore never reads a return beyond
last_row. After a done, `step` returns the auto-reset observation and state (gymnax); the
learner gets the true next observation from `compact` + `replay` + `observe`.

MarketData.realised_vol is NaN where undefined (t < vol_window); `accounting.leverage` maps
NaN to 0, i.e. exposure 0. The observation window of row t is features[t-W+1 .. t].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from cryptorl_jax.config import EnvConfig
from cryptorl_jax.env import accounting


@struct.dataclass
class EnvParams:
    """Env settings; floats are dynamic leaves (a 2x-cost run does not recompile)."""

    cost_rate: jnp.ndarray  # (fee_bps + slippage_bps) / 1e4 per unit of turnover
    borrow_rate: jnp.ndarray  # hourly financing rate on the borrowed notional (annual / 8760)
    target_volatility: jnp.ndarray
    vol_floor: jnp.ndarray
    max_leverage: jnp.ndarray
    no_trade_band: jnp.ndarray  # trade only when |a_t L_t - w_t| exceeds it
    reward_scale: jnp.ndarray
    ruin_nav: jnp.ndarray
    window: int = struct.field(pytree_node=False, default=64)
    episode_length: int = struct.field(pytree_node=False, default=2048)

    @classmethod
    def from_config(cls, env_cfg: EnvConfig, cost_multiplier: float = 1.0,
                    dtype=jnp.float32) -> EnvParams:
        """Params from `cfg.env`; `cost_multiplier` scales fee + slippage (e.g. 2.0 or 0.0).

        dtype float64 (under `jax.enable_x64`) is for the ledger-reference tests.
        """
        f32 = lambda x: jnp.asarray(x, dtype)  # noqa: E731
        rate = accounting.total_cost_rate(env_cfg.fee_bps, env_cfg.slippage_bps)
        return cls(cost_rate=f32(rate * cost_multiplier),
                   borrow_rate=f32(accounting.hourly_borrow_rate(env_cfg.borrow_rate_annual)),
                   target_volatility=f32(env_cfg.target_volatility),
                   vol_floor=f32(env_cfg.vol_floor), max_leverage=f32(env_cfg.max_leverage),
                   no_trade_band=f32(env_cfg.no_trade_band),
                   reward_scale=f32(env_cfg.reward_scale), ruin_nav=f32(env_cfg.ruin_nav),
                   window=int(env_cfg.window), episode_length=int(env_cfg.episode_length))


@struct.dataclass
class MarketData:
    """One segment's arrays; same shapes across segments -> one compilation."""

    features: jnp.ndarray  # [T, F] float32, row t known at the close of hour t
    log_returns: jnp.ndarray  # [T] float32, r_t = ln(c_t / c_{t-1}), r_0 = 0
    realised_vol: jnp.ndarray  # [T] float32, NaN for t < vol_window
    close: jnp.ndarray  # [T] float32
    tradable: jnp.ndarray  # [T] bool: the traded asset's bar at t traded (not a filled bar)

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    @classmethod
    def from_arrays(cls, features, close, env_cfg: EnvConfig, tradable=None,
                    dtype=jnp.float32) -> MarketData:
        """Validate on the host, compute r_t and s_t in float64, store float32 (or `dtype`).

        `tradable` [T] (default all True) is False on rows whose traded-asset bar the loader
        filled (`<ASSET>_fresh` == 0): the env holds its position there.
        """
        features = np.asarray(features)
        close = np.asarray(close, dtype=np.float64)
        tradable = (np.ones(close.shape, bool) if tradable is None
                    else np.asarray(tradable, dtype=bool))
        if tradable.shape != close.shape:
            raise ValueError(f"tradable must have close's shape {close.shape}, got "
                             f"{tradable.shape}")
        if features.ndim != 2:
            raise ValueError(f"features must be [T, F], got shape {features.shape}")
        if close.ndim != 1 or close.shape[0] != features.shape[0]:
            raise ValueError(f"close must be [T] with T = {features.shape[0]} (features' rows), "
                             f"got shape {close.shape}")
        if features.shape[0] <= env_cfg.vol_window + 1:
            raise ValueError(f"{features.shape[0]} rows are too few for env.vol_window = "
                             f"{env_cfg.vol_window}")
        bad = ~np.isfinite(close) | (close <= 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"close must be finite and > 0: row {row} holds {close[row]!r}")
        bad_feat = ~np.isfinite(features)
        if bad_feat.any():
            row, col = (int(i) for i in np.argwhere(bad_feat)[0])
            raise ValueError(f"features must be finite: row {row}, column {col} holds "
                             f"{features[row, col]!r} (drop warm-up rows before the env)")
        r = accounting.log_returns_np(close)
        vol = accounting.realised_vol_np(r, env_cfg.vol_window, env_cfg.vol_horizon_hours,
                                         env_cfg.vol_halflife_hours)
        return cls(features=jnp.asarray(features, jnp.float32),
                   log_returns=jnp.asarray(r, dtype), realised_vol=jnp.asarray(vol, dtype),
                   close=jnp.asarray(close, dtype), tradable=jnp.asarray(tradable))


@struct.dataclass
class StartRange:
    """Allowed rows of a train episode: starts in [first_start, last_start], t + 1 <= last_row."""

    first_start: jnp.ndarray  # int32
    last_start: jnp.ndarray  # int32
    last_row: jnp.ndarray  # int32, the last row whose return r_{last_row} may be realised

    @classmethod
    def create(cls, first_start: int, last_start: int, last_row: int) -> StartRange:
        i32 = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
        return cls(i32(first_start), i32(last_start), i32(last_row))


def check_start_range(market_len: int, start_range: StartRange, window: int,
                      vol_window: int = 0) -> None:
    """Host-only check that every episode row lies inside the market (ValueError naming them)."""
    first, last, last_row = (int(start_range.first_start), int(start_range.last_start),
                             int(start_range.last_row))
    if first < window - 1:
        raise ValueError(f"start range: first_start = {first} < window - 1 = {window - 1} "
                         f"(the observation window would start before row 0)")
    if first < vol_window:
        raise ValueError(f"start range: first_start = {first} < vol_window = {vol_window} "
                         f"(realised vol is undefined before it)")
    if last < first:
        raise ValueError(f"start range: last_start = {last} < first_start = {first}")
    if last_row <= last:
        raise ValueError(f"start range: last_row = {last_row} must exceed last_start = {last} "
                         f"(an episode needs one return to realise)")
    if last_row >= market_len:
        raise ValueError(f"start range: last_row = {last_row} must be < the market's "
                         f"{market_len} rows")


def make_start_range(first_row: int, last_row: int, env_cfg: EnvConfig,
                     market_len: int) -> StartRange:
    """Start range over rows [first_row, last_row]: starts after the warm-up, checked."""
    first_start = max(first_row, env_cfg.window - 1, env_cfg.vol_window)
    start_range = StartRange.create(first_start, last_row - 1, last_row)
    check_start_range(market_len, start_range, env_cfg.window, env_cfg.vol_window)
    return start_range


@struct.dataclass
class Coeffs:
    """Curriculum penalty coefficients (dynamic float32 scalars)."""

    churn: jnp.ndarray
    smooth: jnp.ndarray

    @classmethod
    def create(cls, churn: float = 0.0, smooth: float = 0.0) -> Coeffs:
        return cls(jnp.asarray(churn, jnp.float32), jnp.asarray(smooth, jnp.float32))


@struct.dataclass
class EnvState:
    """One env's state: the accounting book at row `t` (the close just seen) and the episode."""

    book: accounting.Book  # t, prev_action a_{t-1}, drifted weight w_t, nav, peak_nav
    step: jnp.ndarray  # int32 steps taken in the episode
    key: jnp.ndarray  # the PRNG key that drew this episode's start (provenance)
    start_range: StartRange  # where auto-reset may restart

    @property
    def t(self) -> jnp.ndarray:
        return self.book.t

    @property
    def prev_action(self) -> jnp.ndarray:
        return self.book.prev_action

    @property
    def weight(self) -> jnp.ndarray:
        return self.book.weight

    @property
    def nav(self) -> jnp.ndarray:
        return self.book.nav

    @property
    def peak_nav(self) -> jnp.ndarray:
        return self.book.peak_nav


@struct.dataclass
class Observation:
    window: jnp.ndarray  # [W, F] feature rows t-W+1 .. t
    agent: jnp.ndarray  # [3] (prev_action, weight w_t, drawdown = nav / peak_nav - 1)


def agent_state(prev_action, weight, nav, peak_nav) -> jnp.ndarray:
    """[..., 3] agent-state vector (prev_action, drifted weight w_t, nav / peak_nav - 1)."""
    drawdown = nav / peak_nav - 1.0
    return jnp.stack([prev_action, weight, drawdown], axis=-1).astype(jnp.float32)


def book_agent_state(book: accounting.Book) -> jnp.ndarray:
    """The agent-state vector of a book (what the policy sees besides the market window)."""
    return agent_state(book.prev_action, book.weight, book.nav, book.peak_nav)


def observe(params: EnvParams, market: MarketData, t: jnp.ndarray,
            agent: jnp.ndarray) -> Observation:
    """Observation at row t: `lax.dynamic_slice` of rows t-W+1..t, plus the agent vector."""
    n_features = market.features.shape[1]
    window = jax.lax.dynamic_slice(market.features, (t - params.window + 1, jnp.zeros_like(t)),
                                   (params.window, n_features))  # [W, F]
    return Observation(window=window, agent=agent)


def _state_agent(state: EnvState) -> jnp.ndarray:
    return book_agent_state(state.book)


def _fmix32(h: jnp.ndarray) -> jnp.ndarray:
    """MurmurHash3's 32-bit finaliser (Appleby): a bijective avalanche mix of uint32."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _draw_index(key: jax.Array, n: jnp.ndarray) -> jnp.ndarray:
    """Uniform index in [0, n) from a PRNG key: a murmur3 mix of the key's words, modulo n.

    Not `jax.random.randint`: on the CPU backend threefry lowers to a rolled loop that was
    ~70% of the XLA ops of the vmapped step, although auto-reset draws on every step. The
    key's words are already threefry outputs when the caller splits keys; the mix decorrelates
    them, and the modulo bias is n / 2^32 (< 1e-4 for a million starts). Deterministic.
    """
    words = jax.random.key_data(key).astype(jnp.uint32)  # [2] threefry, [4] rbg
    h = jnp.uint32(0x9E3779B9)
    for i in range(words.shape[-1]):  # 2 or 4 key words, static
        h = _fmix32(h ^ words[..., i])
    return (h % n.astype(jnp.uint32)).astype(jnp.int32)


def _initial_state(key: jax.Array, start_range: StartRange, dtype=jnp.float32) -> EnvState:
    n_starts = start_range.last_start - start_range.first_start + 1
    t0 = start_range.first_start + _draw_index(key, n_starts)
    return EnvState(book=accounting.Book.start(t0, dtype), step=jnp.zeros((), jnp.int32),
                    key=key, start_range=start_range)


def reset(key: jax.Array, params: EnvParams, market: MarketData,
          start_range: StartRange) -> tuple[Observation, EnvState]:
    """Start an episode at t ~ U[first_start, last_start] with NAV 1 and no position."""
    state = _initial_state(key, start_range, market.log_returns.dtype)
    return observe(params, market, state.t, _state_agent(state)), state


@struct.dataclass
class Transition:
    """What one step at row t computes, before any reset (shared by `step` and `replay`)."""

    acc: accounting.StepAccounting
    rewards: accounting.RewardComponents
    leverage: jnp.ndarray
    next_book: accounting.Book  # the book at t + 1


def market_step(params: EnvParams, market: MarketData, book: accounting.Book, action,
                cost_rate=None, band_temperature=None
                ) -> tuple[accounting.StepAccounting, accounting.Book, jnp.ndarray]:
    """`accounting.advance` at row book.t of the market arrays: (accounting, next book, L_t).

    Gathers L_t from the realised vol at t, r_{t+1} and whether row t can trade. Used by the
    env step, the replay of a compact transition and the OOS rollout. `cost_rate` overrides
    params.cost_rate (the rollout's cost multiplier); `band_temperature` relaxes the no-trade
    band (`accounting.relaxed_traded_exposure`: the direct learner's training episodes).
    """
    t = book.t
    lev = accounting.leverage(market.realised_vol[t], params.target_volatility, params.vol_floor,
                              params.max_leverage)
    rate = params.cost_rate if cost_rate is None else cost_rate
    acc, nxt = accounting.advance(book, action, lev, market.log_returns[t + 1], rate,
                                  params.borrow_rate, market.tradable[t], params.no_trade_band,
                                  band_temperature)
    return acc, nxt, lev


def _transition(params: EnvParams, market: MarketData, book: accounting.Book, action,
                coeffs: Coeffs) -> Transition:
    acc, nxt, lev = market_step(params, market, book, action)
    rew = accounting.reward(acc.pnl, acc.turnover, params.reward_scale, coeffs.churn,
                            coeffs.smooth)
    return Transition(acc=acc, rewards=rew, leverage=lev, next_book=nxt)


def _clip_action(action, like: jnp.ndarray) -> jnp.ndarray:
    """The action with `like`'s shape and dtype (drops a trailing action axis of 1), in [-1, 1]."""
    return jnp.clip(jnp.reshape(action, jnp.shape(like)).astype(like.dtype), -1.0, 1.0)


def step(key: jax.Array, state: EnvState, action, params: EnvParams, market: MarketData,
         coeffs: Coeffs):
    """One step at row t (action: scalar or [1], clipped to [-1, 1]); auto-resets on done.

    `key` draws the next episode's start when this step ends the episode (pass a fresh key
    per env and step, e.g. `jax.random.split`).

    Returns (obs, state, reward, terminated, truncated, info); info holds the step's pnl, cost,
    financing, gross, turnover, exposure, leverage, the reward terms (pnl_term, churn, smooth:
    the penalties, so reward = pnl_term - churn - smooth), the row t stepped from, and the
    episode's nav, drifted weight w_{t+1} and drawdown after the step, before any reset.
    """
    action = _clip_action(action, state.book.weight)
    tr = _transition(params, market, state.book, action, coeffs)
    acc = tr.acc
    nxt = tr.next_book
    step_next = state.step + 1
    terminated = acc.next_nav < params.ruin_nav
    truncated = (nxt.t >= state.start_range.last_row) | (step_next >= params.episode_length)
    done = terminated | truncated
    stepped = EnvState(book=nxt, step=step_next, key=state.key, start_range=state.start_range)
    restarted = _initial_state(key, state.start_range, state.book.weight.dtype)
    new_state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), restarted, stepped)
    # One window gather: the observation is a function of the (possibly reset) state only.
    obs = observe(params, market, new_state.t, _state_agent(new_state))
    info = {"pnl": acc.pnl, "cost": acc.cost, "financing": acc.financing, "gross": acc.gross,
            "turnover": acc.turnover, "exposure": acc.exposure, "leverage": tr.leverage,
            "pnl_term": tr.rewards.pnl_term, "churn": tr.rewards.churn,
            "smooth": tr.rewards.smooth, "nav": acc.next_nav, "weight": nxt.weight,
            "drawdown": acc.next_nav / nxt.peak_nav - 1.0, "t": state.t}
    return obs, new_state, tr.rewards.reward, terminated, truncated, info


@struct.dataclass
class CompactTransition:
    """A replay-buffer record: the book before the step, the action and the done flags."""

    book: accounting.Book  # t, prev_action, drifted weight, nav, peak_nav at the step's row
    action: jnp.ndarray  # the clipped a_t
    terminated: jnp.ndarray  # bool
    truncated: jnp.ndarray  # bool

    @classmethod
    def example(cls) -> CompactTransition:
        """One unbatched record (the replay buffer's item structure; values unused)."""
        no = jnp.zeros((), bool)
        return cls(book=accounting.Book.start(0), action=jnp.zeros((), jnp.float32),
                   terminated=no, truncated=no)


def compact(state: EnvState, action, terminated, truncated) -> CompactTransition:
    """The compact record of the step taken from `state` with `action` (batched or not)."""
    return CompactTransition(book=state.book, action=_clip_action(action, state.book.weight),
                             terminated=jnp.asarray(terminated, bool),
                             truncated=jnp.asarray(truncated, bool))


@struct.dataclass
class ReplayedTransition:
    t: jnp.ndarray  # int32
    agent_state: jnp.ndarray  # [3] at t
    reward: jnp.ndarray  # with the coeffs given to `replay`
    t_next: jnp.ndarray  # int32, t + 1
    agent_state_next: jnp.ndarray  # [3] after the step (true next state, never a reset)
    terminated: jnp.ndarray
    truncated: jnp.ndarray


def replay(params: EnvParams, market: MarketData, ct: CompactTransition,
           coeffs: Coeffs) -> ReplayedTransition:
    """Rebuild a transition by gather from the arrays and the CURRENT coeffs (unbatched)."""
    tr = _transition(params, market, ct.book, ct.action, coeffs)
    return ReplayedTransition(
        t=ct.book.t, agent_state=book_agent_state(ct.book), reward=tr.rewards.reward,
        t_next=tr.next_book.t, agent_state_next=book_agent_state(tr.next_book),
        terminated=ct.terminated, truncated=ct.truncated)
