"""The sections the data pipeline reads: input series, alignment, features, regimes.

Each field's docstring is its description in docs/config.md (scripts/config_reference.py): the
text up to its first blank line, on one line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptorl_jax.core.names import BUNDLED_FILES


@dataclass(frozen=True)
class AssetSpec:
    """One input series. `kind` crypto trades 24/7; market (equity, index, FX) has sessions."""

    name: str
    """The asset's name: letters and digits without '_' (columns are `<name>_<field>`)."""
    file: str | None = None
    """Its OHLCV file, relative to data.data_dir; null when data.combined_file is used."""
    kind: Literal["crypto", "market"] = "crypto"
    """crypto (trades 24/7) or market (equity, index, FX: trading sessions); paper trading's
    default live feed follows it."""
    timestamp_label: Literal["open", "close"] = "open"
    """What the file's timestamp marks: the bar's open or its close."""
    bar_hours: float = 1.0
    """Bar length: a bar labelled by its open is known at open + bar_hours."""
    invert: bool = False
    """Use 1/price (e.g. EURUSD as an inverted dollar proxy); not for the traded asset."""
    availability_lag_hours: int = 0
    """Whole hours after its close before a bar may be used (a bar closing at C is placed on
    row C + lag); e.g. 1 for a series whose clock is uncertain by +-1 h. The traded asset
    needs 0."""


@dataclass(frozen=True)
class DataConfig:
    """The market data: which series, where their files are, and how they are aligned on the
    traded asset's hourly close-time grid (`market.loader`)."""

    data_dir: str = "data"
    """Folder of the data files (relative paths are relative to the working directory)."""
    traded_asset: str = "BTC"
    """The asset the agent trades: one of data.assets; the others are context."""
    assets: tuple[AssetSpec, ...] = (
        AssetSpec("BTC", BUNDLED_FILES["BTC"], "crypto"),
        AssetSpec("ETH", BUNDLED_FILES["ETH"], "crypto"),
        AssetSpec("SPY", BUNDLED_FILES["SPY"], "market"),
        AssetSpec("DXY", BUNDLED_FILES["DXY"], "market", availability_lag_hours=1),  # MT5 clock
    )
    """The input series, the traded asset among them (each entry's keys: data.assets[])."""
    combined_file: str | None = None
    """One CSV/Parquet with `<ASSET>_<field>` columns instead of a file per asset; null: none."""
    start: str | None = None
    """ISO date/time (UTC) where the aligned frame starts at the earliest; null: the data's."""
    end: str | None = None
    """ISO date/time (UTC) where the aligned frame ends at the latest; null: the data's."""
    max_fill_hours: int = 6
    """Traded asset: the longest run of missing bars forward-filled (a longer gap is an error)."""
    max_stale_hours: int = 96
    """Context assets: forward-fill cap in hours; older values become NaN."""
    cache_dir: str | None = "auto"
    """Folder of the aligned frames cached as Parquet (keyed on the data section and the files'
    bytes); auto: the user's cache directory ($XDG_CACHE_HOME/cryptorl_jax/market, else
    ~/.cache/cryptorl_jax/market); null: no cache. Not part of a run's identity."""


@dataclass(frozen=True)
class FeaturesConfig:
    """The causal feature frame (`features.engineering.build_features`): per-asset groups,
    technical indicators, cross-asset and calendar columns, then a robust scaler fitted on each
    segment's train rows."""

    assets: tuple[str, ...] | None = None
    """Assets that get the per-asset groups (returns, z-scores, FFD, range vol); null: all of
    data.assets."""
    returns: bool = True
    """Log returns over features.return_horizons (`<A>_logret_<h>h`)."""
    return_horizons: tuple[int, ...] = (1, 24)
    """Horizons h (hours) of the log-return columns."""
    zscore: bool = True
    """Rolling z-scores of the close and of log(1 + volume) (`<A>_zclose_<w>`,
    `<A>_zvolume_<w>`)."""
    zscore_window: int = 168
    """Trailing window (hours) of the z-scores."""
    ffd: bool = True
    """Fractionally differentiated log close (`<A>_ffd`, AFML ch. 5 fixed-width window)."""
    ffd_d: float | Literal["auto"] = 0.4
    """FFD order d in [0, 2]; 'auto': per asset and segment, the smallest d on
    features.ffd_d_grid whose FFD passes the ADF test on the train rows."""
    ffd_threshold: float = 1e-4
    """FFD weights are kept while |w_k| >= this (fixes the window width and the warm-up)."""
    ffd_d_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    """Orders tried, smallest first, when features.ffd_d is 'auto'."""
    ffd_adf_pvalue: float = 0.05
    """ADF p-value an FFD must fall below for 'auto' to choose its d."""
    range_vol: bool = True
    """Parkinson and Garman-Klass range volatilities (`<A>_parkinson_<w>`, `<A>_gk_<w>`)."""
    range_vol_window: int = 24
    """Window (hours) of the range vols and of the traded asset's realised vol column (an HMM
    input)."""
    ta: bool = True
    """Technical indicators (RSI, MACD histogram, ATR %, ADX, Bollinger %B and width) for
    features.ta_assets."""
    ta_assets: tuple[str, ...] = ("BTC", "ETH")
    """Assets that get the technical indicators."""
    rsi_length: int = 14
    """RSI length (hours)."""
    macd_fast: int = 12
    """MACD fast EMA length (hours); below features.macd_slow."""
    macd_slow: int = 26
    """MACD slow EMA length (hours)."""
    macd_signal: int = 9
    """MACD signal EMA length (hours)."""
    atr_length: int = 14
    """ATR length (hours); the ATR is read as a percentage of the close."""
    adx_length: int = 14
    """ADX length (hours)."""
    bbands_length: int = 20
    """Bollinger band length (hours)."""
    bbands_std: float = 2.0
    """Bollinger band width in standard deviations."""
    cross_asset: bool = True
    """Cross-asset columns: rolling return correlations and the ratio return below."""
    corr_window: int = 168
    """Window (hours) of the rolling return correlations."""
    equity_asset: str | None = "SPY"
    """Rolling traded-asset/equity 1 h return correlation with this asset; null: none."""
    dollar_asset: str | None = "DXY"
    """Rolling traded-asset/dollar 1 h return correlation with this asset; null: none."""
    ratio_asset: str | None = "ETH"
    """1 h log return of the `<ratio_asset>/<traded_asset>` price ratio; null: none."""
    calendar: bool = True
    """Hour and weekday sin/cos, the NYSE-session flag and each asset's `<A>_fresh` flag."""
    scaler_clip: float = 5.0
    """The robust (median/IQR) scaler clips every scaled column to +-this."""


@dataclass(frozen=True)
class RegimesConfig:
    """The Gaussian HMM whose forward-filtered state probabilities (`Prob_*`) are appended to
    the features; fitted on each segment's train rows (`regimes.hmm.RegimeModel`)."""

    enabled: bool = True
    """Fit the HMM and append its state probabilities; false: no regime columns."""
    n_states: int = 4
    """Hidden states K (ordered calm -> turbulent)."""
    columns: tuple[str, ...] | None = None
    """Feature columns the HMM reads; null: the traded asset's 1 h log return and realised vol."""
    covariance_type: Literal["full", "diag", "spherical", "tied"] = "full"
    """hmmlearn covariance type of the states' Gaussians."""
    n_iter: int = 200
    """Maximum EM iterations of one fit."""
    tol: float = 1e-4
    """EM convergence tolerance on the log-likelihood."""
    n_fits: int = 3
    """Random restarts; the best log-likelihood wins."""
