"""The sections the data pipeline reads: input series, alignment, features, regimes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AssetSpec:
    """One input series. `kind` crypto trades 24/7; market (equity, index, FX) has sessions."""

    name: str
    file: str | None = None  # relative to data.data_dir; None when data.combined_file is used
    kind: Literal["crypto", "market"] = "crypto"
    timestamp_label: Literal["open", "close"] = "open"  # what the file's timestamp marks
    bar_hours: float = 1.0  # bar length: a bar labelled by its open is known at open + bar_hours
    invert: bool = False  # use 1/price (e.g. EURUSD as an inverted dollar proxy)
    # whole hours after its close before a bar may be used (a bar closing at C is placed on row
    # C + lag); e.g. 1 for a series whose clock is uncertain by +-1 h. The traded asset needs 0.
    availability_lag_hours: int = 0


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = "data"
    traded_asset: str = "BTC"
    assets: tuple[AssetSpec, ...] = (
        AssetSpec("BTC", "BTC_1h.csv.gz", "crypto"),
        AssetSpec("ETH", "ETH_1h.csv.gz", "crypto"),
        AssetSpec("SPY", "SPY_1h.csv.gz", "market"),
        AssetSpec("DXY", "DXY_1h.csv.gz", "market", availability_lag_hours=1),  # MT5 clock
    )
    combined_file: str | None = None  # one CSV/Parquet with <ASSET>_<field> columns
    start: str | None = None  # ISO date/time (UTC) to cut the aligned frame
    end: str | None = None
    max_fill_hours: int = 6  # traded asset: longest run of missing bars forward-filled
    max_stale_hours: int = 96  # context assets: forward-fill cap; older values become NaN
    cache_dir: str | None = ".cache/market"


@dataclass(frozen=True)
class FeaturesConfig:
    assets: tuple[str, ...] | None = None  # per-asset groups for these; None = all configured
    returns: bool = True
    return_horizons: tuple[int, ...] = (1, 24)
    zscore: bool = True
    zscore_window: int = 168
    ffd: bool = True
    ffd_d: float | Literal["auto"] = 0.4
    ffd_threshold: float = 1e-4
    ffd_d_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ffd_adf_pvalue: float = 0.05
    range_vol: bool = True
    range_vol_window: int = 24
    ta: bool = True
    ta_assets: tuple[str, ...] = ("BTC", "ETH")
    rsi_length: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_length: int = 14
    adx_length: int = 14
    bbands_length: int = 20
    bbands_std: float = 2.0
    cross_asset: bool = True
    corr_window: int = 168
    equity_asset: str | None = "SPY"  # rolling traded-asset/equity return correlation
    dollar_asset: str | None = "DXY"  # rolling traded-asset/dollar return correlation
    ratio_asset: str | None = "ETH"  # return of the <ratio_asset>/<traded_asset> price ratio
    calendar: bool = True
    scaler_clip: float = 5.0


@dataclass(frozen=True)
class RegimesConfig:
    enabled: bool = True
    n_states: int = 4
    columns: tuple[str, ...] | None = None  # None = traded asset's log return and realised vol
    covariance_type: Literal["full", "diag", "spherical", "tied"] = "full"
    n_iter: int = 200
    tol: float = 1e-4
    n_fits: int = 3  # random restarts; the best log-likelihood wins

