"""The policy's declared memory (backtest/memory.py): its parts from the config, and that no
feature column reads a return older than its declared lookback (up to the FFD's level loading
and the exponential filters' tolerance, which the declaration states)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import memory
from cryptorl_jax.config import Config, FeaturesConfig, load_config
from cryptorl_jax.features.engineering import build_features, ffd_weights
from cryptorl_jax.market.synthetic import make_market


def test_the_defaults_declare_481_hours():
    """M = max(W - 1 + F, V + 1): the env's 480-h vol (the book state's weight) dominates the
    defaults; F = the FFD's 282 weights at d = 0.4, threshold 1e-4."""
    cfg = Config()
    parts = memory.memory_parts(cfg)
    assert parts == {"observation_row": 282, "window": 63, "book_state": 481}
    assert memory.policy_memory_hours(cfg) == 481
    feats = memory.feature_memory(cfg.features)
    assert feats["ffd"] == len(ffd_weights(0.4, 1e-4)) == 282
    assert feats["zscore"] == feats["correlation"] == 168
    # Wilder's RSI: 0.5 ** ... (13/14)^j < 1e-4 from j = 125; the ADX smooths twice
    assert memory.geometric_hours(1 / 14, 1e-4) == 125 and feats["rsi"] == 126
    assert feats["adx"] == 1 + 2 * 125
    assert memory.regime_memory(cfg.regimes, cfg.features) == 24 + memory.HMM_FILTER_HOURS


def test_the_memory_follows_the_config():
    cfg = load_config(None, ["env.vol_window=100", "env.window=200",
                             "features.ffd_d=auto", "features.zscore_window=400"])
    # 'auto': the widest FFD over the grid (d = 0.1: 503 weights)
    assert memory.feature_memory(cfg.features)["ffd"] == len(ffd_weights(0.1, 1e-4)) == 503
    assert memory.policy_memory_hours(cfg) == 199 + 503
    off = load_config(None, ["features.ffd=false", "features.ta=false", "regimes.enabled=false",
                             "env.vol_window=24"])
    assert memory.observation_memory(off) == 168  # the z-scores and correlations
    assert memory.policy_memory_hours(off) == 63 + 168
    assert memory.regime_memory(off.regimes, off.features) == 0
    custom = load_config(None, ["regimes.columns=[BTC_ffd]"])
    assert memory.regime_memory(custom.regimes, custom.features) == 282 + 72
    cfg = Config()
    assert memory.baseline_memory_hours(cfg, "momentum") == 720
    assert memory.baseline_memory_hours(cfg, "crossover") == 720
    # ridge: one observation row (282) plus its 24-h EMA at 1e-4 (24 log2(1e4) = 319 h)
    assert memory.baseline_memory_hours(cfg, "ridge") == 282 + 319
    assert memory.baseline_memory_hours(cfg, "other") == 481
    with pytest.raises(ValueError):
        memory.geometric_hours(0.0, 1e-4)


def _perturbed(market: pd.DataFrame, row: int, factor: float) -> pd.DataFrame:
    """The market with BTC's return into `row` scaled: every BTC price from `row` on times
    `factor` (the bars after it keep their own returns)."""
    out = market.copy()
    for field in ("open", "high", "low", "close"):
        col = out[f"BTC_{field}"].to_numpy().copy()
        col[row:] *= factor
        if field == "open":
            col[row] /= factor  # the bar into `row` opens at the unscaled close before it
        out[f"BTC_{field}"] = col
    out.attrs = dict(market.attrs)
    return out


def test_no_feature_reads_a_return_beyond_its_declared_memory():
    """Change one BTC return (at row s) and rebuild the features: every column is unchanged
    from row s + its declared memory on, except the FFD, which moves there by exactly its
    weights' sum (0.07 at d = 0.4) times the log change: its loading on the price level, which
    the declaration leaves out (docs/methods.md), and the exponential filters, which move by
    less than the tolerance. Columns read only BTC; ETH, SPY, DXY are unchanged."""
    cfg = dataclasses.replace(FeaturesConfig(), ffd_threshold=1e-3)
    market = make_market(2500, seed=3)
    base = build_features(market, cfg, vol_window=24)
    parts = memory.feature_memory(cfg)
    s, factor = 900, 1.03
    moved = build_features(_perturbed(market, s, factor), cfg, vol_window=24)
    group = {"ratio": "ratio", "logret": "returns", "rvol": "realised_vol", "zclose": "zscore",
             "zvolume": "zscore", "ffd": "ffd", "parkinson": "range_vol", "gk": "range_vol",
             "rsi": "rsi", "macdh": "macd", "atrpct": "atr", "adx": "adx", "bbp": "bbands",
             "bbw": "bbands", "corr": "correlation"}
    checked = set()
    for col in base.columns:
        key = next((g for k, g in group.items() if k in col), None)
        if key is None or not (col.startswith("BTC") or col.startswith("corr")
                               or "ratio" in col):
            np.testing.assert_array_equal(base[col].to_numpy(), moved[col].to_numpy(),
                                          err_msg=col)
            continue
        after = slice(s + parts[key], None)
        a, b = base[col].to_numpy()[after], moved[col].to_numpy()[after]
        if key == "ffd":
            level = math.log(factor) * ffd_weights(0.4, 1e-3).sum()
            np.testing.assert_allclose(b - a, level, rtol=1e-9)
        elif key in ("rsi", "macd", "atr", "adx"):
            scale = max(np.nanstd(base[col].to_numpy()), 1e-12)
            assert np.nanmax(np.abs(b - a)) < 10 * cfg.ffd_threshold * scale, col
        else:
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=col)
        # and the change reached the column before its memory ran out (the volume's and the
        # high-low range's do not read the close-to-close return)
        early = slice(s, s + parts[key])
        if "zvolume" not in col and "parkinson" not in col:
            assert not np.array_equal(base[col].to_numpy()[early],
                                      moved[col].to_numpy()[early], equal_nan=True), col
        checked.add(key)
    assert checked == set(group.values())
