"""The regime plot writes a PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.regimes import plot_regimes


def test_plot_regimes_writes_png(tmp_path):
    index = pd.date_range("2024-01-01", periods=300, freq="h", tz="UTC")
    close = pd.Series(100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 300))),
                      index=index, name="BTC_close")
    proba = np.random.default_rng(1).dirichlet(np.ones(4), size=300)
    proba[:24] = np.nan  # the filter's warm-up
    path = plot_regimes(close, proba, tmp_path / "segment_0_regimes.png", title="segment 0",
                        test_start=200)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_regimes_checks_shape(tmp_path):
    close = pd.Series(np.ones(10))
    with pytest.raises(ValueError, match="proba must be"):
        plot_regimes(close, np.ones((9, 2)), tmp_path / "x.png")
    path = plot_regimes(close, np.full((10, 2), 0.5), tmp_path / "plain_index.png")
    assert path.is_file()
