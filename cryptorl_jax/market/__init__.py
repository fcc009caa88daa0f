"""Market data: validated OHLCV files, multi-asset alignment, downloaders, a synthetic market."""

from cryptorl_jax.market.loader import (
    FIELDS,
    DataValidationError,
    align_assets,
    load_market,
    load_ohlcv,
    validate_ohlcv,
)

__all__ = ["FIELDS", "DataValidationError", "align_assets", "load_market", "load_ohlcv",
           "validate_ohlcv"]
