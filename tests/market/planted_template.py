"""The real BTC's bar log returns on a planted market's full hourly grid (what
`market.planted.write_planted_files` feeds the generator), for the planted-market tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryptorl_jax.core.names import BUNDLED_FILES
from cryptorl_jax.market import planted as P

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SPAN = ("2021-01-01", "2023-12-31")  # three years of the template: Sharpe SE ~0.6


def template_returns() -> tuple[np.ndarray, pd.DatetimeIndex]:
    """(log returns per grid bar, NaN where the template has none; the bars' close times)."""
    btc = P._cut(P._read_template(DATA / BUNDLED_FILES["BTC"]), pd.Timestamp(SPAN[0], tz="UTC"),
                 pd.Timestamp(SPAN[1], tz="UTC"))
    first = btc["ts"].iloc[0]
    n = int((btc["ts"].iloc[-1] - first) / pd.Timedelta(hours=1)) + 1
    pos = ((btc["ts"] - first) / pd.Timedelta(hours=1)).to_numpy().astype(int)
    real = np.full(n, np.nan)
    real[pos] = np.log(btc["close"].astype(float).to_numpy()
                       / btc["open"].astype(float).to_numpy())
    index = pd.date_range(first, periods=n, freq="h", tz="UTC") + pd.Timedelta(hours=1)
    return real, index
