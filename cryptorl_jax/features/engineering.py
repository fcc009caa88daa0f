"""Causal feature engineering on the aligned market frame (docs/reference.md, principle 4).

Every value on row t is a function of the market rows <= t only: rolling windows end at t,
exponential averages run forward, and context assets' stale holes (NaN rows of the market
frame) are neutralised by carrying the last known close forward as a flat bar (o=h=l=c, volume
0). A hole then looks like a long market closure: returns 0, range vols 0, and `<ASSET>_fresh`
is 0, which tells the agent. Nothing is ever back-filled or filled from the future.

NaN appears only in the leading warm-up rows (`warmup_rows`); after it every value is finite,
and zero-variance windows give 0 (z-scores, correlations), never inf/NaN.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from cryptorl_jax.config import FeaturesConfig
from cryptorl_jax.core.notices import notice
from cryptorl_jax.features.stationarity import blas_single_thread

log = logging.getLogger(__name__)

CALENDAR_COLUMNS = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "us_market_open")
_MAX_FFD_WIDTH = 100_000  # refuse thresholds that would need a longer window than this
_CHUNK_ROWS = 8192  # rows per block of sliding windows (bounds the temporary memory)
_DEGENERATE = 1e-12  # a window's std below this fraction of its RMS counts as zero variance
_US_OPEN_MIN = 9 * 60 + 30  # NYSE regular session, America/New_York local minutes
_US_CLOSE_MIN = 16 * 60


# --------------------------------------------------------------------------------------------
# Formulas (docs/reference.md, "Feature formulas"; public API)
# --------------------------------------------------------------------------------------------


def ffd_weights(d: float, threshold: float) -> np.ndarray:
    """AFML (Lopez de Prado 2018, sec. 5.5) fixed-width weights: w_0 = 1,
    w_k = -w_{k-1} (d - k + 1) / k, kept while |w_k| >= threshold (stop at the first below)."""
    if not (isinstance(d, (int, float)) and math.isfinite(d) and d >= 0):
        raise ValueError(f"ffd: d must be a finite number >= 0, got {d!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"ffd: threshold must be in (0, 1), got {threshold!r}")
    weights = [1.0]
    k = 1
    while True:
        w_k = -weights[-1] * (d - k + 1) / k
        if abs(w_k) < threshold:
            break
        weights.append(w_k)
        k += 1
        if k > _MAX_FFD_WIDTH:
            raise ValueError(f"ffd: d={d}, threshold={threshold} needs a window longer than "
                             f"{_MAX_FFD_WIDTH}; raise features.ffd_threshold")
    return np.asarray(weights, dtype=np.float64)


def ffd(series: pd.Series, d: float, threshold: float) -> pd.Series:
    """Fixed-width fractional difference out_t = sum_k w_k x_{t-k} (docs/reference.md; AFML
    sec. 5.5).

    NaN until a full window of len(ffd_weights(d, threshold)) values exists (and wherever the
    window holds a NaN input). d = 0 gives the identity.
    """
    weights = ffd_weights(d, threshold)
    x = np.asarray(series, dtype=np.float64)
    out = np.full(len(x), np.nan)
    width = len(weights)
    if len(x) >= width:
        # convolve flips the kernel: valid[j] = sum_k w_k x[j + width - 1 - k], i.e. t = j+width-1
        out[width - 1:] = np.convolve(x, weights, mode="valid")
    return pd.Series(out, index=getattr(series, "index", None), name=getattr(series, "name", None))


def parkinson_vol(high: pd.Series, low: pd.Series, window: int) -> pd.Series:
    """Per-bar Parkinson (1980) vol: sqrt(mean over window of ln(H/L)^2 / (4 ln 2))
    (docs/reference.md)."""
    _check_window(window, "parkinson_vol")
    hl = np.log(np.asarray(high, dtype=np.float64) / np.asarray(low, dtype=np.float64))
    out = np.sqrt(_rolling_mean(hl * hl / (4.0 * math.log(2.0)), window))
    return pd.Series(out, index=getattr(high, "index", None))


def garman_klass_vol(open: pd.Series, high: pd.Series, low: pd.Series, close: pd.Series,
                     window: int) -> pd.Series:
    """Per-bar Garman-Klass (1980) vol (docs/reference.md):
    sqrt(max(mean over window of [0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2], 0))."""
    _check_window(window, "garman_klass_vol")
    hl = np.log(np.asarray(high, dtype=np.float64) / np.asarray(low, dtype=np.float64))
    co = np.log(np.asarray(close, dtype=np.float64) / np.asarray(open, dtype=np.float64))
    mean = _rolling_mean(0.5 * hl * hl - (2.0 * math.log(2.0) - 1.0) * co * co, window)
    out = np.sqrt(np.where(np.isnan(mean), np.nan, np.maximum(mean, 0.0)))
    return pd.Series(out, index=getattr(high, "index", None))


def realised_vol(log_returns: np.ndarray, vol_window: int, vol_horizon_hours: int) -> np.ndarray:
    """s_t = population std of r_{t-V+1..t} times sqrt(H) (docs/reference.md, trading
    accounting)."""
    _check_window(vol_window, "realised_vol")
    _, std, _ = _rolling_moments(np.asarray(log_returns, dtype=np.float64), vol_window)
    return std * math.sqrt(vol_horizon_hours)


def warmup_rows(features: pd.DataFrame) -> int:
    """The number of leading rows that contain any NaN (= the first usable row index)."""
    has_nan = features.isna().to_numpy().any(axis=1)
    if not has_nan.any():
        return 0
    if has_nan.all():
        return len(has_nan)
    return int(np.argmin(has_nan))


# --------------------------------------------------------------------------------------------
# Rolling statistics over exact trailing windows (each window is computed on its own, so a
# value depends only on the `window` rows ending at t, bit for bit)
# --------------------------------------------------------------------------------------------


def _check_window(window: int, what: str) -> None:
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"{what}: window must be an integer >= 1, got {window!r}")


def _windows(x: np.ndarray, window: int):
    """Yield (first output row, [rows, window] view) blocks of the trailing windows of x."""
    view = np.lib.stride_tricks.sliding_window_view(x, window)  # [T - window + 1, window]
    for start in range(0, view.shape[0], _CHUNK_ROWS):
        yield start + window - 1, view[start:start + _CHUNK_ROWS]


def _rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) < window:
        return out
    for row, block in _windows(x, window):
        out[row:row + len(block)] = block.mean(axis=1)
    return out


def _rolling_moments(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trailing mean, population std (two-pass) and degenerate-window mask (std ~ 0)."""
    mean = np.full(len(x), np.nan)
    std = np.full(len(x), np.nan)
    flat = np.zeros(len(x), dtype=bool)
    if len(x) < window:
        return mean, std, flat
    for row, block in _windows(x, window):
        m = block.mean(axis=1)
        dev = block - m[:, None]
        s = np.sqrt((dev * dev).mean(axis=1))
        rms = np.sqrt((block * block).mean(axis=1))
        sl = slice(row, row + len(block))
        mean[sl], std[sl], flat[sl] = m, s, s <= _DEGENERATE * rms
    return mean, std, flat


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x_t - mean) / std over the trailing window (population std); 0 for a flat window."""
    mean, std, flat = _rolling_moments(x, window)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / std
    return np.where(flat & ~np.isnan(mean), 0.0, z)


def rolling_corr(x: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Pearson correlation over the trailing window; 0 when either side has zero variance."""
    out = np.full(len(x), np.nan)
    if len(x) < window:
        return out
    blocks_y = dict(_windows(y, window))
    for row, bx in _windows(x, window):
        by = blocks_y[row]
        dx = bx - bx.mean(axis=1)[:, None]
        dy = by - by.mean(axis=1)[:, None]
        sx = np.sqrt((dx * dx).mean(axis=1))
        sy = np.sqrt((dy * dy).mean(axis=1))
        flat = ((sx <= _DEGENERATE * np.sqrt((bx * bx).mean(axis=1)))
                | (sy <= _DEGENERATE * np.sqrt((by * by).mean(axis=1))))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = np.clip((dx * dy).mean(axis=1) / (sx * sy), -1.0, 1.0)
        valid = np.isfinite(sx) & np.isfinite(sy)  # no NaN input inside the window
        out[row:row + len(bx)] = np.where(valid, np.where(flat, 0.0, corr), np.nan)
    return out


def _lag_diff(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) > lag:
        out[lag:] = x[lag:] - x[:-lag]
    return out


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _traded_asset(market: pd.DataFrame, traded_asset: str | None) -> str:
    name = traded_asset or market.attrs.get("traded_asset")
    if not name:
        raise ValueError("build_features: the market frame has no attrs['traded_asset'] (frames "
                         "from load_market/make_market carry it); pass traded_asset=...")
    if f"{name}_close" not in market.columns:
        raise ValueError(f"build_features: traded asset '{name}' has no column '{name}_close'")
    return str(name)


def _market_assets(market: pd.DataFrame) -> list[str]:
    names = market.attrs.get("assets")
    if names:
        return list(names)
    return [c[: -len("_close")] for c in market.columns if c.endswith("_close")]


def _feature_assets(market: pd.DataFrame, cfg: FeaturesConfig) -> list[str]:
    available = _market_assets(market)
    assets = list(cfg.assets) if cfg.assets is not None else available
    for a in assets:
        if f"{a}_close" not in market.columns:
            raise ValueError(f"features.assets: '{a}' has no column '{a}_close' in the market "
                             f"frame (assets there: {available})")
    return assets


class _Bars:
    """One asset's OHLCV with stale holes carried forward as flat bars (past data only)."""

    def __init__(self, market: pd.DataFrame, asset: str):
        need = [f"{asset}_{f}" for f in ("open", "high", "low", "close", "volume")]
        missing = [c for c in need if c not in market.columns]
        if missing:
            raise ValueError(f"build_features: market frame lacks column(s) {missing} for "
                             f"asset '{asset}'")
        raw_close = market[f"{asset}_close"].to_numpy(dtype=np.float64)
        known = np.isfinite(raw_close)
        close = pd.Series(raw_close).ffill().to_numpy()  # forward only: a causal carry
        self.close = close
        self.open = np.where(known, market[f"{asset}_open"].to_numpy(np.float64), close)
        self.high = np.where(known, market[f"{asset}_high"].to_numpy(np.float64), close)
        self.low = np.where(known, market[f"{asset}_low"].to_numpy(np.float64), close)
        volume = np.where(known, market[f"{asset}_volume"].to_numpy(np.float64), 0.0)
        self.volume = np.where(np.isnan(close), np.nan, volume)
        self.log_close = np.log(close)
        self.index = market.index
        self.n_carried = int((~known & np.isfinite(close)).sum())

    def series(self, values: np.ndarray) -> pd.Series:
        return pd.Series(values, index=self.index)


# --------------------------------------------------------------------------------------------
# FFD order
# --------------------------------------------------------------------------------------------


def _resolve_ffd_d(cfg: FeaturesConfig, assets: list[str],
                   ffd_d: float | Mapping[str, float] | None) -> dict[str, float]:
    if ffd_d is None:
        if cfg.ffd_d == "auto":
            raise ValueError(
                "features.ffd_d is 'auto': the FFD order must be chosen on the segment's train "
                "rows with select_ffd_d(market, features_config, train_rows) and passed as "
                "build_features(..., ffd_d=...)")
        ffd_d = float(cfg.ffd_d)
    if isinstance(ffd_d, Mapping):
        missing = [a for a in assets if a not in ffd_d]
        if missing:
            raise ValueError(f"build_features: ffd_d has no order for asset(s) {missing} "
                             f"(given for {sorted(ffd_d)})")
        return {a: float(ffd_d[a]) for a in assets}
    return {a: float(ffd_d) for a in assets}


def select_ffd_d(market: pd.DataFrame, features_config: FeaturesConfig, train_rows: slice,
                 *, traded_asset: str | None = None) -> dict[str, float]:
    """Per asset, the minimum d on ffd_d_grid whose FFD of the log close (train rows only, NaN
    warm-up dropped) passes the ADF test at 1 - ffd_adf_pvalue (statsmodels adfuller, AIC lag)."""
    from statsmodels.tsa.stattools import adfuller

    cfg = features_config
    if not isinstance(train_rows, slice):
        raise TypeError(f"select_ffd_d: train_rows must be a slice, got {type(train_rows)}")
    _traded_asset(market, traded_asset)
    train = market.iloc[train_rows]
    if len(train) == 0:
        raise ValueError(f"select_ffd_d: train_rows {train_rows} select no rows of the "
                         f"{len(market)}-row market")
    grid = sorted(set(float(d) for d in cfg.ffd_d_grid))
    chosen = {}
    for asset in _feature_assets(market, cfg):
        log_close = _Bars(train, asset).log_close
        pick, p_pick = None, float("nan")
        for d in grid:
            values = ffd(pd.Series(log_close), d, cfg.ffd_threshold).to_numpy()
            values = values[np.isfinite(values)]
            if len(values) < 50:
                log.warning("select_ffd_d: %s d=%.2f leaves %d train values after the FFD "
                            "warm-up; skipped", asset, d, len(values))
                continue
            if np.ptp(values) == 0.0:
                continue
            with warnings.catch_warnings(), blas_single_thread():
                warnings.simplefilter("ignore")
                p_value = float(adfuller(values, autolag="AIC")[1])
            if p_value < cfg.ffd_adf_pvalue:
                pick, p_pick = d, p_value
                break
        if pick is None:
            pick = grid[-1]
            log.warning("select_ffd_d: no d on %s passes ADF at p < %g for %s on rows %s; "
                        "using the largest, d=%.2f", grid, cfg.ffd_adf_pvalue, asset, train_rows,
                        pick)
        else:
            log.info("select_ffd_d: %s d=%.2f (ADF p=%.3g on %d train rows)", asset, pick, p_pick,
                     len(train))
        chosen[asset] = pick
    return chosen


# --------------------------------------------------------------------------------------------
# Technical indicators (pandas-ta-classic; every one of them runs forward in time)
# --------------------------------------------------------------------------------------------


def _after_first_valid(values: np.ndarray, fill: float) -> np.ndarray:
    """Replace NaN that follow the first valid value (0/0 in flat markets) by `fill`."""
    valid = np.isfinite(values)
    if not valid.any():
        return values
    first = int(np.argmax(valid))
    out = values.copy()
    tail = out[first:]
    tail[~np.isfinite(tail)] = fill
    return out


def _column(frame: pd.DataFrame | None, prefix: str, n: int) -> np.ndarray:
    if frame is None:
        return np.full(n, np.nan)
    match = [c for c in frame.columns if str(c).startswith(prefix)]
    return frame[match[0]].to_numpy(dtype=np.float64)


def _ta_features(asset: str, bars: _Bars, cfg: FeaturesConfig) -> dict[str, np.ndarray]:
    import pandas_ta_classic as ta

    n = len(bars.close)
    close, high, low = bars.series(bars.close), bars.series(bars.high), bars.series(bars.low)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rsi = ta.rsi(close, length=cfg.rsi_length)
        out[f"{asset}_rsi_{cfg.rsi_length}"] = _after_first_valid(
            np.full(n, np.nan) if rsi is None else rsi.to_numpy(np.float64), 50.0)

        macd = ta.macd(close, fast=cfg.macd_fast, slow=cfg.macd_slow, signal=cfg.macd_signal)
        hist = _column(macd, "MACDh", n)
        # as a percentage of the close, so that the scale does not drift with the price level
        out[f"{asset}_macdh_{cfg.macd_fast}_{cfg.macd_slow}_{cfg.macd_signal}"] = (
            100.0 * hist / bars.close)

        atr = ta.atr(high, low, close, length=cfg.atr_length, percent=True)
        out[f"{asset}_atrpct_{cfg.atr_length}"] = _after_first_valid(
            np.full(n, np.nan) if atr is None else atr.to_numpy(np.float64), 0.0)

        adx = ta.adx(high, low, close, length=cfg.adx_length)
        out[f"{asset}_adx_{cfg.adx_length}"] = _after_first_valid(
            _column(adx, "ADX_", n), 0.0)

        bb = ta.bbands(close, length=cfg.bbands_length, std=cfg.bbands_std)
        pct_b, width = _column(bb, "BBP_", n), _column(bb, "BBB_", n)
    # a collapsed band (flat window): %B is mid-band, width 0
    _, std, flat = _rolling_moments(bars.close, cfg.bbands_length)
    width = np.where(flat & np.isfinite(std), 0.0, width)
    pct_b = np.where(flat & np.isfinite(std), 0.5, pct_b)
    out[f"{asset}_bbp_{cfg.bbands_length}"] = pct_b
    out[f"{asset}_bbw_{cfg.bbands_length}"] = width
    return out


# --------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------


def us_market_open(index: pd.DatetimeIndex) -> np.ndarray:
    """1.0 where the hour ending at the row's time overlaps the NYSE regular session
    (Mon-Fri 09:30-16:00 America/New_York, DST-aware; exchange holidays are not excluded)."""
    local = index.tz_convert("America/New_York")
    minute = local.hour.to_numpy() * 60 + local.minute.to_numpy()
    weekday = local.dayofweek.to_numpy() < 5
    # the hour (t - 60 min, t] overlaps [09:30, 16:00) iff 09:30 < t < 17:00
    overlaps = (minute > _US_OPEN_MIN) & (minute < _US_CLOSE_MIN + 60)
    return (weekday & overlaps).astype(np.float64)


def _calendar(index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("build_features: the market index must be a tz-aware (UTC) "
                         "DatetimeIndex of bar close times")
    utc = index.tz_convert("UTC")
    hour = utc.hour.to_numpy() + utc.minute.to_numpy() / 60.0
    dow = utc.dayofweek.to_numpy().astype(np.float64)
    return {
        "hour_sin": np.sin(2 * np.pi * hour / 24.0),
        "hour_cos": np.cos(2 * np.pi * hour / 24.0),
        "dow_sin": np.sin(2 * np.pi * dow / 7.0),
        "dow_cos": np.cos(2 * np.pi * dow / 7.0),
        "us_market_open": us_market_open(index),
    }


# --------------------------------------------------------------------------------------------
# The feature frame
# --------------------------------------------------------------------------------------------


def build_features(market: pd.DataFrame, features_config: FeaturesConfig, *,
                   ffd_d: float | Mapping[str, float] | None = None,
                   traded_asset: str | None = None, vol_window: int = 24,
                   vol_horizon_hours: int = 24) -> pd.DataFrame:
    """Causal feature frame on market.index (row t uses market rows <= t only).

    Column groups (each switchable in FeaturesConfig), per asset A of features.assets:
    `A_logret_<h>h`, `A_zclose_<w>`, `A_zvolume_<w>` (of log(1 + volume)), `A_ffd` (FFD of the
    log close; the name does not depend on d), `A_parkinson_<w>`, `A_gk_<w>`; for ta_assets:
    `A_rsi_<n>`, `A_macdh_<f>_<s>_<g>` (% of close), `A_atrpct_<n>`, `A_adx_<n>`, `A_bbp_<n>`,
    `A_bbw_<n>`; cross-asset: `corr_<T>_<E>_<w>` (1h log returns), `<R>_<T>_ratio_logret_1h`;
    calendar: `hour_sin/cos`, `dow_sin/cos`, `us_market_open`, `A_fresh`. Always present for
    the traded asset T: `T_logret_1h` and `T_rvol_<vol_window>`, the env's realised vol (pass
    cfg.env.vol_window / vol_horizon_hours), which the regime model reads by default.
    `ffd_d` overrides features.ffd_d (a float, or a dict per asset); it is required when the
    config says "auto" (choose it on train rows with `select_ffd_d`).
    """
    cfg = features_config
    traded = _traded_asset(market, traded_asset)
    assets = _feature_assets(market, cfg)
    d_by_asset = _resolve_ffd_d(cfg, assets, ffd_d) if cfg.ffd else {}
    for a, d in d_by_asset.items():
        if not 0.0 <= d <= 2.0:
            raise ValueError(f"build_features: ffd_d for {a} must be in [0, 2], got {d}")
    _check_window(vol_window, "build_features: vol_window")

    bars: dict[str, _Bars] = {}

    def get(asset: str, key: str) -> _Bars:
        if asset not in bars:
            if f"{asset}_close" not in market.columns:
                raise ValueError(f"features.{key}: asset '{asset}' has no column "
                                 f"'{asset}_close' in the market frame")
            bars[asset] = _Bars(market, asset)
        return bars[asset]

    columns: dict[str, np.ndarray] = {}
    for asset in assets:
        b = get(asset, "assets")
        if cfg.returns:
            for h in cfg.return_horizons:
                columns[f"{asset}_logret_{h}h"] = _lag_diff(b.log_close, h)
        if asset == traded:
            columns[f"{asset}_logret_1h"] = _lag_diff(b.log_close, 1)
            columns[f"{asset}_rvol_{vol_window}"] = realised_vol(
                _lag_diff(b.log_close, 1), vol_window, vol_horizon_hours)
        if cfg.zscore:
            columns[f"{asset}_zclose_{cfg.zscore_window}"] = rolling_zscore(b.close,
                                                                           cfg.zscore_window)
            columns[f"{asset}_zvolume_{cfg.zscore_window}"] = rolling_zscore(
                np.log1p(b.volume), cfg.zscore_window)
        if cfg.ffd:
            columns[f"{asset}_ffd"] = ffd(pd.Series(b.log_close), d_by_asset[asset],
                                          cfg.ffd_threshold).to_numpy()
        if cfg.range_vol:
            w = cfg.range_vol_window
            columns[f"{asset}_parkinson_{w}"] = parkinson_vol(b.high, b.low, w).to_numpy()
            columns[f"{asset}_gk_{w}"] = garman_klass_vol(b.open, b.high, b.low, b.close,
                                                          w).to_numpy()
    if traded not in assets:  # the env's and the regime model's inputs are always there
        b = get(traded, "data.traded_asset")
        columns[f"{traded}_logret_1h"] = _lag_diff(b.log_close, 1)
        columns[f"{traded}_rvol_{vol_window}"] = realised_vol(
            _lag_diff(b.log_close, 1), vol_window, vol_horizon_hours)

    if cfg.ta:
        for asset in cfg.ta_assets:
            columns.update(_ta_features(asset, get(asset, "ta_assets"), cfg))

    if cfg.cross_asset:
        t = get(traded, "data.traded_asset")
        r_traded = _lag_diff(t.log_close, 1)
        for key in ("equity_asset", "dollar_asset"):
            other = getattr(cfg, key)
            if other is None or other == traded:
                continue
            r_other = _lag_diff(get(other, key).log_close, 1)
            columns[f"corr_{traded}_{other}_{cfg.corr_window}"] = rolling_corr(
                r_traded, r_other, cfg.corr_window)
        if cfg.ratio_asset is not None and cfg.ratio_asset != traded:
            r = get(cfg.ratio_asset, "ratio_asset")
            columns[f"{cfg.ratio_asset}_{traded}_ratio_logret_1h"] = _lag_diff(
                r.log_close - t.log_close, 1)

    if cfg.calendar:
        columns.update(_calendar(market.index))
        for asset in assets:
            col = f"{asset}_fresh"
            if col not in market.columns:
                raise ValueError(f"build_features: market frame lacks column '{col}' "
                                 "(calendar features need the fresh flags)")
            columns[col] = market[col].fillna(0.0).to_numpy(dtype=np.float64)

    frame = pd.DataFrame(columns, index=market.index)
    frame.attrs.update({
        "traded_asset": traded,
        "assets": assets,
        "ffd_d": dict(d_by_asset),
        "realised_vol_column": f"{traded}_rvol_{vol_window}",
    })
    _check_finite_after_warmup(frame)
    for asset, b in bars.items():
        if b.n_carried:
            notice(log, "carried", asset,
                   "features: %s has %d stale/missing rows carried forward as flat bars",
                   asset, b.n_carried)
    return frame


def _check_finite_after_warmup(frame: pd.DataFrame) -> None:
    """NaN only in the leading warm-up: anything else is a bug, reported by column and row."""
    start = warmup_rows(frame)
    values = frame.to_numpy(dtype=np.float64)[start:]
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        raise RuntimeError(
            f"build_features: non-finite value in column '{frame.columns[col]}' at row "
            f"{start + row} ({frame.index[start + row]}) after the {start}-row warm-up")
