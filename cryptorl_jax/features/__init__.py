"""Causal features (returns, z-scores, FFD, range vols, TA, cross-asset, calendar), scaling,
and the stationarity report."""

from cryptorl_jax.features.engineering import (
    CALENDAR_COLUMNS,
    build_features,
    ffd,
    ffd_weights,
    garman_klass_vol,
    parkinson_vol,
    realised_vol,
    rolling_corr,
    rolling_zscore,
    select_ffd_d,
    us_market_open,
    warmup_rows,
)
from cryptorl_jax.features.scaling import RobustScaler
from cryptorl_jax.features.stationarity import adf_table

__all__ = [
    "CALENDAR_COLUMNS",
    "RobustScaler",
    "adf_table",
    "build_features",
    "ffd",
    "ffd_weights",
    "garman_klass_vol",
    "parkinson_vol",
    "realised_vol",
    "rolling_corr",
    "rolling_zscore",
    "select_ffd_d",
    "us_market_open",
    "warmup_rows",
]
