"""The timing null: the seeds' own ACTION paths, rotated over the stitched OOS by lags longer
than the policy's memory, and re-simulated.

The i.i.d. random baseline trades at every close and mostly loses its costs, so beating it
proves nothing. This null keeps everything about the strategy except WHEN it asks for what.
For each of `n_null` draws one lag k is drawn uniformly from [m, N - m], the same for every
seed, where N is the stitched OOS length, M the policy's declared memory in hours (the returns
r_{t-M+1} .. r_t its action at t can read: `backtest.memory`; 0 for a market-blind path) and
m = max(M + 1, min(min_shift, N // 4)); each seed's whole stitched action path is rotated,

    a'_t = a_{(t + k) mod N},

cut at the segments (the contiguous runs of `segments`), and each segment's book re-simulated
from flat (weight 0, NAV 1) at its first row through the one accounting update
(`env.accounting.advance`, via `backtest.replay.simulate_paths`) with the MARKET's own leverage
L_t, tradable mask, returns R_{t+1}, the config's trading costs, financing and no-trade band:
the target exposure is a'_t L_t, traded only when it leaves the band around the drifted
weight. The seeds' books are combined as the equal-weight fund (`portfolio.equal_weight_returns`,
per segment), the segments stitched, and the annualised Sharpe is one sample of what the same
actions earn with their alignment to the market broken. When [m, N - m] holds no more lags than
n_null, every lag in it is used once instead (the exact test over the range: drawing with
replacement from a few lags would give p-values below 1 / (1 + lags)). The strategy's own
Sharpe is that of the UNROTATED paths re-simulated the same way (so the actual and the null are
computed identically). The p-value is (1 + #{null >= actual}) / (1 + n_null), the one-sided
permutation p-value (never 0). A strategy without timing skill gives p-values near uniform; a
small p-value says the alignment of its actions with the returns, not their average level,
earned its Sharpe.

Why k > M (issue 39). An action that reads its last M hours of returns is a function of
r_{t+k-M+1} .. r_{t+k} at hour t + k: with k <= M the rotated a'_t = a_{t+k} reads r_{t+1}, the
return it is scored on, and the null is biased (issue 39 measured the previous null, which
rotated by 24 h .. n - 24 h within each segment: a 720-h contrarian rejected at 5 % in 34 % of
no-edge paths, a 720-h momentum in none). With k > M, an unwrapped a_{t+k} reads only returns
after r_{t+1}, and a wrapped one a_{t+k-N} was decided at t + k - N <= t - M - 1, before r_{t+1}
existed: without predictability a'_t is independent of r_{t+1}. (The range is symmetric, so a
rotation and its inverse are equally likely.) Why stitched: within one segment of n hours
k > M needs n > 2M + 2, and the defaults (M = 481 h) leave no lag in a 720-h segment. When
N <= 2M + 2 (min_shift aside) the null is undefined: p NaN, and `TimingNull.reason` says so.

`scheme="segments"` rotates each segment by its own lag in [m_b, n_b - m_b] instead (m_b as m
for the segment's n_b hours): with M = 0 it is the null before issue 39 (kept for the
comparison in tests/backtest/test_null_size.py); with M > 0 it is size-correct too, needs every
segment longer than 2M + 2 hours, and never pairs a return with the action of a LATER segment,
whose agent trained on that return (docs/methods.md: what M does not bound).

A constant action path (vol-targeted buy & hold: a_t = 1) equals each of its rotations, so its
null is its own Sharpe and p = 1: it has no timing to test. That is not evidence against it.

Why not the exposure (the null before issue 23): rotating e_t = a_t L_t together with its
charges also rotates the mechanical leverage L_t, which the env sets from realised vol, away
from the vol it answered. The actual returns are vol-targeted, the rotated ones are not, so a
strategy that loses its costs without any timing turns that loss into a more negative Sharpe
than its rotations: p near 1. Issue 23 measured vol-targeted buy & hold (no timing at all) at
p = 0.996 and 60 market-blind persistent action paths at a mean p of 0.74, none below 0.05; on
the default env and the last 34,560 hours of BTC, market-blind i.i.d. actions (which trade
every hour) got a mean p of 0.91 under it (0.43 under the action rotation), an AR(1) path with
a 24-hour half-life 0.63, while slow two-week sign switches, which pay little, were not visibly
biased (tests/backtest/test_null_size.py). Rotating the actions and re-applying the current
leverage and costs keeps the vol targeting, which is the env's and not the agent's, out of the
test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cryptorl_jax.backtest import portfolio
from cryptorl_jax.config import EnvConfig
from cryptorl_jax.core.units import HOURS_PER_YEAR

DEFAULT_NULLS = 1000
MIN_SHIFT_HOURS = 24
SCHEMES = ("stitched", "segments")
# Books simulated per call (draws x seeds), every call of a block the same shape: at 512, a
# 1,000-null, 3-seed null of 16 blocks of 2,160 hours peaks ~120 MB above the JAX import and
# runs in ~3 s on 2 cores (larger batches were no faster and used more memory).
LANES_PER_BATCH = 512


@dataclass(frozen=True)
class TimingNull:
    sharpe: float  # the strategy's annualised Sharpe (its unrotated actions re-simulated)
    null_sharpes: np.ndarray  # [n_null] annualised (empty when undefined)
    p_value: float
    min_shift: int
    n_seeds: int = 1
    memory_hours: int = 0  # M: the policy's declared memory; every lag exceeds it
    scheme: str = "stitched"
    reason: str | None = None  # why the null is undefined (p NaN), e.g. the OOS is too short

    @property
    def n_null(self) -> int:
        return int(len(self.null_sharpes))


def p_value(actual: float, null: np.ndarray) -> float:
    """One-sided permutation p-value (1 + #{null >= actual}) / (1 + n); NaN if undefined."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not math.isfinite(actual) or len(null) == 0:
        return float("nan")
    return float((1 + np.sum(null >= actual)) / (1 + len(null)))


def block_bounds(segments, n: int) -> list[tuple[int, int]]:
    """[(lo, hi)] of the contiguous runs of equal labels in segments [n] (None: one block)."""
    if segments is None:
        return [(0, n)]
    labels = np.asarray(segments)
    if labels.shape != (n,):
        raise ValueError(f"segments must have shape ({n},), got {labels.shape}")
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    return list(zip(np.r_[0, cuts].tolist(), np.r_[cuts, n].tolist()))


def lag_floor(n: int, memory_hours: int = 0, min_shift: int = MIN_SHIFT_HOURS) -> int:
    """m, the shortest lag of a rotation of n hours: max(M + 1, min(min_shift, n // 4))."""
    return max(int(memory_hours) + 1, min(int(min_shift), n // 4))


def too_short(n: int, memory_hours: int = 0, min_shift: int = MIN_SHIFT_HOURS) -> str | None:
    """Why a rotation of n hours is undefined (fewer than two lags in [m, n - m]; at
    min_shift <= M + 1: n <= 2M + 2), or None."""
    m = lag_floor(n, memory_hours, min_shift)
    if n - m >= m + 1:
        return None
    return (f"OOS too short for the timing null at memory M = {int(memory_hours)} h: "
            f"{n} h, it needs at least {2 * m + 1} h (lags from {m} h to N - {m} h)")


def stitched_lags(n: int, n_null: int, seed: int = 0, min_shift: int = MIN_SHIFT_HOURS,
                  memory_hours: int = 0) -> np.ndarray:
    """The lags of a rotation of n hours: k ~ U[m, n - m] (inclusive, m = `lag_floor`),
    n_null of them from numpy default_rng(seed); every lag once, in order, when the range
    holds at most n_null. Empty when `too_short`."""
    if too_short(n, memory_hours, min_shift):
        return np.zeros(0, np.int64)
    m = lag_floor(n, memory_hours, min_shift)
    if n - 2 * m + 1 <= n_null:
        return np.arange(m, n - m + 1, dtype=np.int64)
    return np.random.default_rng(seed).integers(m, n - m + 1, size=n_null).astype(np.int64)


def draw_lags(bounds: list[tuple[int, int]], n_null: int, seed: int = 0,
              min_shift: int = MIN_SHIFT_HOURS, memory_hours: int = 0) -> np.ndarray:
    """[n_null, n_blocks] lags of the `segments` scheme: block b of draw j is rotated by
    k ~ U[m_b, n_b - m_b] (inclusive, m_b = `lag_floor` of its n_b hours; 0 for a block
    `too_short` to rotate); numpy default_rng(seed), one block after the other."""
    rng = np.random.default_rng(seed)
    lags = np.zeros((n_null, len(bounds)), dtype=np.int64)
    for b, (lo, hi) in enumerate(bounds):
        n = hi - lo
        m = lag_floor(n, memory_hours, min_shift)
        if n > 1 and not too_short(n, memory_hours, min_shift):
            lags[:, b] = rng.integers(m, n - m + 1, size=n_null)
    return lags


def _finite(name: str, x: np.ndarray, ok: np.ndarray, what: str) -> None:
    if not ok.all():
        pos = tuple(int(i) for i in np.unravel_index(int(np.argmax(~ok)), x.shape))
        where = pos[0] if len(pos) == 1 else list(pos)
        raise ValueError(f"timing null: {name} must be {what}: position {where} holds "
                         f"{float(x[pos])!r}")


def _block_stats(actions, lo: int, hi: int, leverage, log_returns, tradable, lags,
                 env_config: EnvConfig, stitched: bool):
    """Per draw (lags [D]) of the block [lo, hi): (mean, sum of squared deviations) of the
    fund's hourly returns, [D] each. The block's rows of draw j are actions[:, (t + k_j) mod N]
    (stitched) or actions[:, lo + (t - lo + k_j) mod n] (segments), t in [lo, hi). Books in lane
    batches of <= LANES_PER_BATCH (draws x seeds), all batches of a block the same shape (the
    last padded), so one compile per block length."""
    from cryptorl_jax.backtest.replay import simulate_paths

    s, total = actions.shape
    n = hi - lo
    d = len(lags)
    n_batches = max(1, math.ceil(d * s / LANES_PER_BATCH))
    per = math.ceil(d / n_batches)
    mean, m2 = np.empty(d), np.empty(d)
    t = np.arange(n)
    for first in range(0, d, per):
        k = lags[first:first + per]
        k = np.concatenate([k, np.zeros(per - len(k), k.dtype)])  # pad: one shape
        if stitched:
            idx = (lo + t[None, :] + k[:, None]) % total  # [per, n]
        else:
            idx = lo + (t[None, :] + k[:, None]) % n
        lanes = actions[:, idx].transpose(1, 0, 2).reshape(per * s, n)  # draw-major
        ret = simulate_paths(lanes, leverage, log_returns, tradable, env_config,
                             keys=("returns",))["returns"]
        fund = portfolio.equal_weight_returns(ret.reshape(per, s, n))  # [per, n]
        keep = min(per, d - first)
        mu = fund[:keep].mean(axis=-1)
        mean[first:first + keep] = mu
        m2[first:first + keep] = ((fund[:keep] - mu[:, None]) ** 2).sum(axis=-1)
    return mean, m2


def action_timing_null(actions, leverage, market_return, tradable, segments,
                       env_config: EnvConfig, *, n_null: int = DEFAULT_NULLS, seed: int = 0,
                       min_shift: int = MIN_SHIFT_HOURS,
                       periods_per_year: float = HOURS_PER_YEAR, memory_hours: int = 0,
                       scheme: str = "stitched") -> TimingNull:
    """The action-rotation timing null of an ensemble (see the module docstring).

    actions [S, n] (one row per seed; [n]: one seed): each seed's action a_t on its own book,
    in [-1, 1]; leverage [n]: the market's L_t at the decision row (>= 0, 0 where undefined);
    market_return [n]: R_{t+1}, the traded asset's simple return over the hour held (> -1);
    tradable [n]: row t's bar traded; segments [n]: labels of the contiguous blocks, each
    re-simulated from flat (None: one block). Costs, financing and the no-trade band come from
    env_config (1x costs). memory_hours: M, the hours of past returns an action can read
    (`backtest.memory.policy_memory_hours`; 0: a market-blind path); every lag exceeds it.
    scheme: "stitched" (one rotation of the whole path) or "segments" (each block by its own
    lag). Undefined (p NaN, `reason`) when the path, or under "segments" a block, is too short.
    """
    from cryptorl_jax.backtest.replay import path_arrays

    a, (lev, r, ok) = path_arrays(actions, {"leverage": leverage, "market_return": market_return,
                                            "tradable": tradable}, min_len=2,
                                  context="timing null: ")
    n = a.shape[1]
    _finite("leverage", lev, np.isfinite(lev) & (lev >= 0), "finite and >= 0")
    _finite("market_return", r, np.isfinite(r) & (r > -1), "finite and > -1")
    if ok.dtype != bool:
        okf = ok.astype(np.float64)
        _finite("tradable", okf, np.isfinite(okf), "boolean")
        ok = okf != 0
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    if isinstance(memory_hours, bool) or int(memory_hours) != memory_hours or memory_hours < 0:
        raise ValueError(f"memory_hours must be an integer >= 0, got {memory_hours!r}")
    memory_hours = int(memory_hours)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    bounds = block_bounds(segments, n)
    if scheme == "stitched":
        reason = too_short(n, memory_hours, min_shift)
        lags = stitched_lags(n, n_null, seed, min_shift, memory_hours)[:, None]
        lags = np.repeat(lags, len(bounds), axis=1)  # [D, blocks]: one lag for the whole path
    else:
        reason = next((f"segment {b} ({lo}..{hi}): {why}" for b, (lo, hi) in enumerate(bounds)
                       if hi - lo > 1 and (why := too_short(hi - lo, memory_hours, min_shift))),
                      None)
        lags = draw_lags(bounds, n_null, seed, min_shift, memory_hours)
    if reason:
        lags = lags[:0]  # the strategy's own Sharpe only
    log_r = np.log1p(r)
    a = np.clip(a, -1.0, 1.0)
    # draw 0 is the strategy itself (lag 0): actual and null go through the same code
    means, m2s, sizes = [], [], []
    for b, (lo, hi) in enumerate(bounds):
        k = np.concatenate([[0], lags[:, b]]).astype(np.int64)
        mean, m2 = _block_stats(a, lo, hi, lev[lo:hi], log_r[lo:hi], ok[lo:hi], k, env_config,
                                stitched=scheme == "stitched")
        means.append(mean)
        m2s.append(m2)
        sizes.append(hi - lo)
    sharpes = _combine(np.stack(means), np.stack(m2s), np.asarray(sizes, np.float64),
                       periods_per_year)
    actual, null = float(sharpes[0]), sharpes[1:]
    return TimingNull(sharpe=actual, null_sharpes=null, p_value=p_value(actual, null),
                      min_shift=min_shift, n_seeds=a.shape[0], memory_hours=memory_hours,
                      scheme=scheme, reason=reason)


def _combine(means: np.ndarray, m2s: np.ndarray, sizes: np.ndarray,
             periods: float) -> np.ndarray:
    """Annualised Sharpe (mean / std(ddof=1)) of the stitched series from the blocks' [B, D]
    means and sums of squared deviations (NaN where the std is 0 or undefined)."""
    total = sizes.sum()
    mean = (sizes[:, None] * means).sum(axis=0) / total
    m2 = (m2s + sizes[:, None] * (means - mean[None, :]) ** 2).sum(axis=0)
    sd = np.sqrt(m2 / (total - 1)) if total > 1 else np.full_like(mean, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), np.nan) * math.sqrt(periods)
