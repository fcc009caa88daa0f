"""The bundled real BTC history, as the tests that measure on it load it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryptorl_jax.config import AssetSpec, DataConfig
from cryptorl_jax.market import load_market

DATA = Path(__file__).resolve().parents[1] / "data"


def bundled_btc(cache_dir, start: str = "2019-12-01",
                end: str = "2025-07-31") -> tuple[np.ndarray, np.ndarray]:
    """(close, tradable) of the bundled BTC over [start, end] through `load_market`."""
    cfg = DataConfig(data_dir=str(DATA), traded_asset="BTC",
                     assets=(AssetSpec("BTC", "BTC_1h.csv.gz", "crypto"),),
                     start=start, end=end, cache_dir=str(cache_dir))
    frame = load_market(cfg)
    return frame["BTC_close"].to_numpy(np.float64), frame["BTC_fresh"].to_numpy() > 0
