"""The trading env: pure `reset`/`step` over an `EnvState` pytree, vmapped by the caller.

Gymnax style (gymnax `environments/environment.py`): the market arrays are a `MarketData`
argument, never attributes of a static object, so a new walk-forward segment of the same
shape reuses the compiled step. The accounting is `env.accounting` (DESIGN.md).

Time semantics. The state's `t` is the row whose close the agent has just seen. Stepping at t
chooses a_t, holds e_t = a_t * L_t and realises r_{t+1}; the next state is at t + 1. An
episode starts at t drawn uniformly in [first_start, last_start] and is TRUNCATED when
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
    target_volatility: jnp.ndarray
    vol_floor: jnp.ndarray
    max_leverage: jnp.ndarray
    reward_scale: jnp.ndarray
    ruin_nav: jnp.ndarray
    window: int = struct.field(pytree_node=False, default=64)
    episode_length: int = struct.field(pytree_node=False, default=2048)

    @classmethod
    def from_config(cls, env_cfg: EnvConfig, cost_multiplier: float = 1.0) -> EnvParams:
        """Params from `cfg.env`; `cost_multiplier` scales fee + slippage (e.g. 2.0 or 0.0)."""
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        rate = accounting.total_cost_rate(env_cfg.fee_bps, env_cfg.slippage_bps)
        return cls(cost_rate=f32(rate * cost_multiplier),
                   target_volatility=f32(env_cfg.target_volatility),
                   vol_floor=f32(env_cfg.vol_floor), max_leverage=f32(env_cfg.max_leverage),
                   reward_scale=f32(env_cfg.reward_scale), ruin_nav=f32(env_cfg.ruin_nav),
                   window=int(env_cfg.window), episode_length=int(env_cfg.episode_length))


@struct.dataclass
class MarketData:
    """One segment's arrays; same shapes across segments -> one compilation."""

    features: jnp.ndarray  # [T, F] float32, row t known at the close of hour t
    log_returns: jnp.ndarray  # [T] float32, r_t = ln(c_t / c_{t-1}), r_0 = 0
    realised_vol: jnp.ndarray  # [T] float32, NaN for t < vol_window
    close: jnp.ndarray  # [T] float32

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    @classmethod
    def from_arrays(cls, features, close, env_cfg: EnvConfig) -> MarketData:
        """Validate on the host, compute r_t and s_t in float64, store float32."""
        features = np.asarray(features)
        close = np.asarray(close, dtype=np.float64)
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
        vol = accounting.realised_vol_np(r, env_cfg.vol_window, env_cfg.vol_horizon_hours)
        return cls(features=jnp.asarray(features, jnp.float32),
                   log_returns=jnp.asarray(r, jnp.float32),
                   realised_vol=jnp.asarray(vol, jnp.float32),
                   close=jnp.asarray(close, jnp.float32))


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
    """One env's state; `t` is the row whose close was just seen."""

    t: jnp.ndarray  # int32 row index
    prev_action: jnp.ndarray  # a_{t-1}, 0 at an episode's start
    prev_exposure: jnp.ndarray  # e_{t-1}, 0 at an episode's start
    nav: jnp.ndarray  # NAV_t, 1 at an episode's start
    peak_nav: jnp.ndarray  # max NAV so far in the episode
    step: jnp.ndarray  # int32 steps taken in the episode
    key: jnp.ndarray  # the PRNG key that drew this episode's start (provenance)
    start_range: StartRange  # where auto-reset may restart


@struct.dataclass
class Observation:
    window: jnp.ndarray  # [W, F] feature rows t-W+1 .. t
    agent: jnp.ndarray  # [3] (prev_action, prev_exposure, drawdown = nav / peak_nav - 1)


def agent_state(prev_action, prev_exposure, nav, peak_nav) -> jnp.ndarray:
    """[..., 3] agent-state vector (prev_action, prev_exposure, nav / peak_nav - 1)."""
    drawdown = nav / peak_nav - 1.0
    return jnp.stack([prev_action, prev_exposure, drawdown], axis=-1).astype(jnp.float32)


def observe(params: EnvParams, market: MarketData, t: jnp.ndarray,
            agent: jnp.ndarray) -> Observation:
    """Observation at row t: `lax.dynamic_slice` of rows t-W+1..t, plus the agent vector."""
    n_features = market.features.shape[1]
    window = jax.lax.dynamic_slice(market.features, (t - params.window + 1, 0),
                                   (params.window, n_features))  # [W, F]
    return Observation(window=window, agent=agent)


def _state_agent(state: EnvState) -> jnp.ndarray:
    return agent_state(state.prev_action, state.prev_exposure, state.nav, state.peak_nav)


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


def _initial_state(key: jax.Array, start_range: StartRange) -> EnvState:
    n_starts = start_range.last_start - start_range.first_start + 1
    t0 = start_range.first_start + _draw_index(key, n_starts)
    zero = jnp.zeros((), jnp.float32)
    one = jnp.ones((), jnp.float32)
    return EnvState(t=t0, prev_action=zero, prev_exposure=zero, nav=one, peak_nav=one,
                    step=jnp.zeros((), jnp.int32), key=key, start_range=start_range)


def reset(key: jax.Array, params: EnvParams, market: MarketData,
          start_range: StartRange) -> tuple[Observation, EnvState]:
    """Start an episode at t ~ U[first_start, last_start] with NAV 1 and no position."""
    state = _initial_state(key, start_range)
    return observe(params, market, state.t, _state_agent(state)), state


@struct.dataclass
class Transition:
    """What one step at row t computes, before any reset (shared by `step` and `replay`)."""

    acc: accounting.StepAccounting
    rewards: accounting.RewardComponents
    leverage: jnp.ndarray
    next_peak_nav: jnp.ndarray


def _transition(params: EnvParams, market: MarketData, t, prev_action, prev_exposure, nav,
                peak_nav, action, coeffs: Coeffs) -> Transition:
    lev = accounting.leverage(market.realised_vol[t], params.target_volatility, params.vol_floor,
                              params.max_leverage)
    acc = accounting.step_accounting(nav, prev_exposure, action, lev, market.log_returns[t + 1],
                                     params.cost_rate)
    rew = accounting.reward(acc.pnl, action, prev_action, params.reward_scale, coeffs.churn,
                            coeffs.smooth)
    return Transition(acc=acc, rewards=rew, leverage=lev,
                      next_peak_nav=jnp.maximum(peak_nav, acc.next_nav))


def _clip_action(action, t: jnp.ndarray) -> jnp.ndarray:
    """The action as a float32 of t's shape (drops a trailing action axis of 1), in [-1, 1]."""
    return jnp.clip(jnp.reshape(action, jnp.shape(t)).astype(jnp.float32), -1.0, 1.0)


def step(key: jax.Array, state: EnvState, action, params: EnvParams, market: MarketData,
         coeffs: Coeffs):
    """One step at row t (action: scalar or [1], clipped to [-1, 1]); auto-resets on done.

    `key` draws the next episode's start when this step ends the episode (pass a fresh key
    per env and step, e.g. `jax.random.split`).

    Returns (obs, state, reward, terminated, truncated, info); info holds the step's pnl, cost,
    gross, turnover, exposure, leverage, the reward terms (pnl_term, churn, smooth: the
    penalties, so reward = pnl_term - churn - smooth), the row t stepped from, and the episode's
    nav and drawdown after the step, before any reset.
    """
    action = _clip_action(action, state.t)
    tr = _transition(params, market, state.t, state.prev_action, state.prev_exposure, state.nav,
                     state.peak_nav, action, coeffs)
    acc = tr.acc
    t_next = state.t + 1
    step_next = state.step + 1
    terminated = acc.next_nav < params.ruin_nav
    truncated = (t_next >= state.start_range.last_row) | (step_next >= params.episode_length)
    done = terminated | truncated
    stepped = EnvState(t=t_next, prev_action=action, prev_exposure=acc.exposure,
                       nav=acc.next_nav, peak_nav=tr.next_peak_nav, step=step_next,
                       key=state.key, start_range=state.start_range)
    restarted = _initial_state(key, state.start_range)
    new_state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), restarted, stepped)
    # One window gather: the observation is a function of the (possibly reset) state only.
    obs = observe(params, market, new_state.t, _state_agent(new_state))
    info = {"pnl": acc.pnl, "cost": acc.cost, "gross": acc.gross, "turnover": acc.turnover,
            "exposure": acc.exposure, "leverage": tr.leverage, "pnl_term": tr.rewards.pnl_term,
            "churn": tr.rewards.churn, "smooth": tr.rewards.smooth, "nav": acc.next_nav,
            "drawdown": acc.next_nav / tr.next_peak_nav - 1.0, "t": state.t}
    return obs, new_state, tr.rewards.reward, terminated, truncated, info


@struct.dataclass
class CompactTransition:
    """A replay-buffer record: the state before the step, the action and the done flags."""

    t: jnp.ndarray  # int32
    prev_action: jnp.ndarray
    prev_exposure: jnp.ndarray
    nav: jnp.ndarray
    peak_nav: jnp.ndarray
    action: jnp.ndarray  # the clipped a_t
    terminated: jnp.ndarray  # bool
    truncated: jnp.ndarray  # bool


def compact(state: EnvState, action, terminated, truncated) -> CompactTransition:
    """The compact record of the step taken from `state` with `action` (batched or not)."""
    return CompactTransition(t=state.t, prev_action=state.prev_action,
                             prev_exposure=state.prev_exposure, nav=state.nav,
                             peak_nav=state.peak_nav, action=_clip_action(action, state.t),
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
    tr = _transition(params, market, ct.t, ct.prev_action, ct.prev_exposure, ct.nav, ct.peak_nav,
                     ct.action, coeffs)
    return ReplayedTransition(
        t=ct.t, agent_state=agent_state(ct.prev_action, ct.prev_exposure, ct.nav, ct.peak_nav),
        reward=tr.rewards.reward, t_next=ct.t + 1,
        agent_state_next=agent_state(ct.action, tr.acc.exposure, tr.acc.next_nav,
                                     tr.next_peak_nav),
        terminated=ct.terminated, truncated=ct.truncated)
