"""A seeded, regime-switching synthetic market in `load_market`'s format, for tests and demos.

The traded asset follows a 4-state Markov-switching random walk (calm .. turbulent: the vol and
drift depend on the hidden state); other crypto assets load on it; equity- and FX-like assets
(`SPY`, `DXY`, or any name in MARKET_ASSETS) trade only in their sessions and go through the
same alignment as real files (bars labelled by open time, forward-filled, `<ASSET>_fresh`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptorl_jax.config import AssetSpec, DataConfig
from cryptorl_jax.market.loader import align_assets

MARKET_ASSETS = {"SPY": "equity", "NDX": "equity", "DXY": "fx", "USD": "fx", "EURUSD": "fx"}
# hourly log-return vol and drift per hidden state: calm, normal, volatile, crash
STATE_VOL = np.array([0.0025, 0.005, 0.010, 0.020])
STATE_DRIFT = np.array([0.0001, 0.00003, -0.00005, -0.0004])
STATE_STAY = np.array([0.995, 0.99, 0.985, 0.97])
START = pd.Timestamp("2020-01-06 00:00", tz="UTC")  # a Monday
N_SUB = 6  # sub-steps per hour used to draw high/low


def _regimes(rng: np.random.Generator, n: int) -> np.ndarray:
    k = len(STATE_VOL)
    states = np.empty(n, dtype=np.int64)
    s = 1
    u = rng.random(n)
    jump = rng.integers(0, k - 1, size=n)
    for t in range(n):
        if u[t] > STATE_STAY[s]:
            s = int(jump[t] + (jump[t] >= s))  # move to one of the other states
        states[t] = s
    return states


def _bars(rng: np.random.Generator, log_ret: np.ndarray, vol: np.ndarray, price0: float,
          base_volume: float) -> pd.DataFrame:
    """OHLCV bars whose close-to-close log returns are `log_ret`, with an intrabar path."""
    n = len(log_ret)
    sub = rng.standard_normal((n, N_SUB)) * (vol[:, None] / np.sqrt(N_SUB))
    sub -= sub.mean(axis=1, keepdims=True)
    sub += log_ret[:, None] / N_SUB
    sub[:, -1] += log_ret - sub.sum(axis=1)  # the path ends exactly at the close
    path = np.cumsum(sub, axis=1)  # [n, N_SUB] log price relative to the open
    log_close = np.log(price0) + np.cumsum(log_ret)
    log_open = log_close - log_ret
    high = log_open + np.maximum(path.max(axis=1), 0.0)
    low = log_open + np.minimum(path.min(axis=1), 0.0)
    volume = base_volume * np.exp(rng.normal(0.0, 0.4, n)) * (1.0 + 30.0 * np.abs(log_ret))
    return pd.DataFrame({"open": np.exp(log_open), "high": np.exp(high), "low": np.exp(low),
                         "close": np.exp(log_close), "volume": volume})


def _session_mask(opens: pd.DatetimeIndex, kind: str) -> np.ndarray:
    hour = opens.hour.to_numpy()
    dow = opens.dayofweek.to_numpy()
    if kind == "equity":  # weekdays, roughly the US regular + extended session in UTC
        return (dow < 5) & (hour >= 13) & (hour <= 20)
    # FX-like: Sunday 22:00 to Friday 21:00 UTC, with a daily one-hour break at 21:00
    open_week = ((dow < 4) | ((dow == 4) & (hour < 21)) | ((dow == 6) & (hour >= 22)))
    return open_week & (hour != 21)


def make_market(n_hours: int, seed: int,
                assets: tuple[str, ...] = ("BTC", "ETH", "SPY", "DXY")) -> pd.DataFrame:
    """Seeded regime-switching market with exactly n_hours aligned rows (load_market's format).

    The first asset is the traded one. Also returns the hidden regimes in `frame.attrs["regime"]`
    (one per row) so that tests can check regime detection.
    """
    if n_hours < 2:
        raise ValueError(f"make_market: n_hours must be >= 2, got {n_hours}")
    if len(assets) == 0 or len(set(assets)) != len(assets):
        raise ValueError(f"make_market: assets must be distinct names, got {assets}")
    rng = np.random.default_rng(seed)
    pad = 24 * 7  # leading hours so that session assets have a bar before the first row
    n = n_hours + pad
    opens = pd.date_range(START, periods=n, freq="h", tz="UTC", name="timestamp")
    states = _regimes(rng, n)
    vol = STATE_VOL[states]
    traded_ret = STATE_DRIFT[states] + vol * rng.standard_t(5, n) / np.sqrt(5 / 3)

    raw = {}
    specs = []
    for i, name in enumerate(assets):
        kind = MARKET_ASSETS.get(name)
        if i == 0:
            ret, v, p0, base_vol = traded_ret, vol, 7000.0, 500.0
        elif kind is None:  # another crypto asset: beta 1.1 to the traded one plus noise
            ret = 1.1 * traded_ret + 0.5 * vol * rng.standard_normal(n)
            v, p0, base_vol = 1.2 * vol, 150.0, 6000.0
        elif kind == "equity":
            ret = 0.05 * traded_ret + 0.0015 * rng.standard_normal(n)
            v, p0, base_vol = np.full(n, 0.0015), 320.0, 2e5
        else:  # fx: dollar index, slightly negative loading on risk
            ret = -0.01 * traded_ret + 0.0008 * rng.standard_normal(n)
            v, p0, base_vol = np.full(n, 0.0008), 97.0, 80.0
        bars = _bars(rng, ret, v, p0, base_vol).set_axis(opens)
        if kind is not None:
            bars = bars[_session_mask(opens, kind)]
            # a closed market does not move: returns accrue only over its session bars
            bars = _rechain(bars)
        raw[name] = bars
        specs.append(AssetSpec(name, f"{name}_synthetic", "crypto" if kind is None else "market"))
    cfg = DataConfig(traded_asset=assets[0], assets=tuple(specs), cache_dir=None)
    frame = align_assets(raw, cfg)
    attrs = dict(frame.attrs)
    frame = frame.iloc[-n_hours:].copy()
    frame.attrs.update(attrs)
    # each row is labelled by its bar's close time: row t closes the bar that opened at t - 1h
    regime_by_open = pd.Series(states, index=opens)
    frame.attrs["regime"] = regime_by_open.reindex(frame.index - pd.Timedelta(hours=1)).to_numpy()
    frame.index.freq = "h"
    return frame


def _rechain(bars: pd.DataFrame) -> pd.DataFrame:
    """Make a session-only series continuous: each bar opens at the previous session close."""
    close = bars["close"].to_numpy()
    open_ = bars["open"].to_numpy()
    ret = np.log(close / open_)
    new_close = close[0] * np.exp(np.concatenate([[0.0], np.cumsum(ret[1:])]))
    new_open = np.concatenate([[open_[0]], new_close[:-1]])
    scale = new_open / open_
    out = bars.copy()
    out["open"] = new_open
    out["close"] = new_close
    # rescaling can round a high a hair below the close: keep the bars OHLC-consistent
    out["high"] = np.maximum(bars["high"].to_numpy() * scale, np.maximum(new_open, new_close))
    out["low"] = np.minimum(bars["low"].to_numpy() * scale, np.minimum(new_open, new_close))
    return out
