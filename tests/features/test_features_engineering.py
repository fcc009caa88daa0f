"""Feature engineering: formulas against plain loops, causality, NaN policy, FFD order."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller

from cryptorl_jax.config import FeaturesConfig, load_config
from cryptorl_jax.features import (
    build_features,
    ffd,
    ffd_weights,
    garman_klass_vol,
    parkinson_vol,
    select_ffd_d,
    us_market_open,
    warmup_rows,
)
from cryptorl_jax.features.stationarity import blas_single_thread
from cryptorl_jax.market.synthetic import make_market
from tests.reference import numpy_features as ref

REPO = Path(__file__).resolve().parents[2]
N_ROWS = 1400
CUT = 1000  # rows [0, CUT) are the "past" in the causality tests
FIELDS = ("open", "high", "low", "close", "volume")


def _with_hole(market: pd.DataFrame, asset: str, rows: slice) -> pd.DataFrame:
    """A context asset older than the staleness cap: NaN fields and fresh 0 (loader format)."""
    out = market.copy()
    out.attrs.update(market.attrs)
    for f in FIELDS:
        out.iloc[rows, out.columns.get_loc(f"{asset}_{f}")] = np.nan
    out.iloc[rows, out.columns.get_loc(f"{asset}_fresh")] = 0.0
    return out


def _alter_future(market: pd.DataFrame, cut: int, seed: int) -> pd.DataFrame:
    """Change every asset's rows from `cut` on (consistent OHLC), and open a stale hole there."""
    rng = np.random.default_rng(seed)
    out = market.copy()
    out.attrs.update(market.attrs)
    n = len(out) - cut
    for asset in market.attrs["assets"]:
        factor = np.exp(np.cumsum(rng.normal(0.0, 0.03, n)))
        for f in ("open", "high", "low", "close"):
            col = out.columns.get_loc(f"{asset}_{f}")
            out.iloc[cut:, col] = out.iloc[cut:, col].to_numpy() * factor
        col = out.columns.get_loc(f"{asset}_volume")
        out.iloc[cut:, col] = out.iloc[cut:, col].to_numpy() * rng.uniform(0.1, 10.0, n)
    return _with_hole(out, "SPY", slice(cut + 20, cut + 150))


def _assert_past_equal(a: pd.DataFrame, b: pd.DataFrame, n: int) -> None:
    assert list(a.columns) == list(b.columns)
    changed = [c for c in a.columns
               if not np.array_equal(a[c].to_numpy()[:n], b[c].to_numpy()[:n], equal_nan=True)]
    assert not changed, f"past values changed in {changed}"


@pytest.fixture(scope="module")
def cfg() -> FeaturesConfig:
    return load_config(REPO / "configs" / "quick.yaml").features


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    """Synthetic market with a 150-hour DXY stale hole inside the past."""
    return _with_hole(make_market(N_ROWS, seed=7), "DXY", slice(500, 650))


@pytest.fixture(scope="module")
def features(market, cfg) -> pd.DataFrame:
    return build_features(market, cfg)


# --------------------------------------------------------------------------------------------
# Formulas against tests/reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [0.0, 0.05, 0.3, 0.4, 0.75, 1.0, 1.5])
def test_ffd_weights_match_reference(d):
    np.testing.assert_allclose(ffd_weights(d, 1e-4), ref.ffd_weights_loop(d, 1e-4), rtol=1e-14)


def test_ffd_weights_known_values():
    np.testing.assert_array_equal(ffd_weights(0.0, 1e-4), [1.0])
    np.testing.assert_array_equal(ffd_weights(1.0, 1e-4), [1.0, -1.0])
    w = ffd_weights(0.4, 1e-4)
    np.testing.assert_allclose(w[:3], [1.0, -0.4, -0.4 * 0.6 / 2])
    assert np.all(np.abs(w) >= 1e-4) and abs(w[-1] * (0.4 - len(w) + 1) / len(w)) < 1e-4


@pytest.mark.parametrize("d,threshold", [(0.4, 1e-4), (0.1, 1e-3), (0.7, 1e-5), (1.0, 1e-4)])
def test_ffd_matches_reference(d, threshold):
    rng = np.random.default_rng(0)
    x = np.log(100.0) + np.cumsum(rng.normal(0.0, 0.01, 700))
    got = ffd(pd.Series(x), d, threshold).to_numpy()
    want = ref.ffd_loop(x, d, threshold)
    width = len(ref.ffd_weights_loop(d, threshold))
    assert np.isnan(got[:width - 1]).all() and np.isfinite(got[width - 1:]).all()
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_ffd_d0_is_identity():
    x = pd.Series(np.random.default_rng(1).normal(size=300).cumsum(), name="x")
    out = ffd(x, 0.0, 1e-4)
    np.testing.assert_array_equal(out.to_numpy(), x.to_numpy())
    assert out.index.equals(x.index) and out.name == "x"


def test_ffd_short_series_is_all_nan_and_bad_args_raise():
    assert ffd(pd.Series(np.ones(10)), 0.4, 1e-4).isna().all()
    with pytest.raises(ValueError, match="d must be"):
        ffd_weights(-0.1, 1e-4)
    with pytest.raises(ValueError, match="threshold"):
        ffd_weights(0.4, 0.0)


def test_range_vols_match_reference(market):
    o, h, lo, c = (market[f"BTC_{f}"].to_numpy() for f in ("open", "high", "low", "close"))
    for window in (5, 24):
        np.testing.assert_allclose(parkinson_vol(h, lo, window).to_numpy(),
                                   ref.parkinson_loop(h, lo, window), rtol=1e-12)
        np.testing.assert_allclose(garman_klass_vol(o, h, lo, c, window).to_numpy(),
                                   ref.garman_klass_loop(o, h, lo, c, window), rtol=1e-12)


def test_garman_klass_clamps_negative_mean_at_zero():
    ones = np.ones(30)
    close = np.full(30, 1.1)  # inconsistent bars: |ln(C/O)| > ln(H/L) = 0
    out = garman_klass_vol(ones, ones, ones, close, 10).to_numpy()
    assert np.isnan(out[:9]).all()
    np.testing.assert_array_equal(out[9:], 0.0)


def test_rolling_columns_match_reference(market, features, cfg):
    close = market["BTC_close"].to_numpy()
    np.testing.assert_allclose(features["BTC_rvol_24"].to_numpy(),
                               ref.realised_vol_loop(close, 24, 24), rtol=1e-10)
    w = cfg.zscore_window
    np.testing.assert_allclose(features[f"BTC_zclose_{w}"].to_numpy(),
                               ref.zscore_loop(close, w), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(features[f"ETH_zvolume_{w}"].to_numpy(),
                               ref.zscore_loop(np.log1p(market["ETH_volume"].to_numpy()), w),
                               rtol=1e-8, atol=1e-10)
    r_btc = np.diff(np.log(close), prepend=np.nan)
    r_spy = np.diff(np.log(market["SPY_close"].to_numpy()), prepend=np.nan)
    np.testing.assert_allclose(features[f"corr_BTC_SPY_{cfg.corr_window}"].to_numpy(),
                               ref.corr_loop(r_btc, r_spy, cfg.corr_window), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(features["BTC_logret_24h"].to_numpy()[24:],
                               np.log(close[24:] / close[:-24]), rtol=1e-9, atol=1e-14)
    eth = market["ETH_close"].to_numpy()
    np.testing.assert_allclose(features["ETH_BTC_ratio_logret_1h"].to_numpy()[1:],
                               np.diff(np.log(eth / close)), rtol=1e-9, atol=1e-15)


def test_ta_columns_come_from_pandas_ta(market, features, cfg):
    import pandas_ta_classic as ta

    close = market["BTC_close"]
    rsi = ta.rsi(close, length=cfg.rsi_length).to_numpy()
    np.testing.assert_allclose(features["BTC_rsi_14"].to_numpy(), rsi, equal_nan=True)
    macd = ta.macd(close, fast=12, slow=26, signal=9)
    np.testing.assert_allclose(features["BTC_macdh_12_26_9"].to_numpy(),
                               100 * macd["MACDh_12_26_9"].to_numpy() / close.to_numpy())
    after = features.iloc[warmup_rows(features):]
    assert after["BTC_rsi_14"].between(0, 100).all() and after["ETH_adx_14"].between(0, 100).all()
    assert (after["BTC_atrpct_14"] > 0).all() and (after["BTC_bbw_20"] > 0).all()


# --------------------------------------------------------------------------------------------
# Columns, NaN policy
# --------------------------------------------------------------------------------------------


def test_columns_for_quick_config(features):
    expected = {"BTC_logret_1h", "BTC_logret_24h", "BTC_zclose_168", "BTC_zvolume_168",
                "BTC_ffd", "BTC_parkinson_24", "BTC_gk_24", "BTC_rvol_24", "BTC_rsi_14",
                "BTC_macdh_12_26_9", "BTC_atrpct_14", "BTC_adx_14", "BTC_bbp_20", "BTC_bbw_20",
                "ETH_rsi_14", "SPY_ffd", "DXY_gk_24", "corr_BTC_SPY_168", "corr_BTC_DXY_168",
                "ETH_BTC_ratio_logret_1h", "hour_sin", "hour_cos", "dow_sin", "dow_cos",
                "us_market_open", "SPY_fresh", "DXY_fresh", "BTC_fresh"}
    assert expected <= set(features.columns)
    assert len(set(features.columns)) == len(features.columns)
    assert "SPY_rsi_14" not in features.columns and "SPY_rvol_24" not in features.columns
    assert features.index.equals(features.index) and features.attrs["traded_asset"] == "BTC"


def test_nan_only_in_warmup_and_holes_neutralised(market, features):
    start = warmup_rows(features)
    assert 168 < start < 400  # the longest window: FFD(d=0.4) needs 282 rows
    assert features.iloc[start - 1].isna().any()
    assert np.isfinite(features.iloc[start:].to_numpy()).all()
    hole = slice(501, 650)  # DXY NaN in the market; the first hole row's return is still 0
    np.testing.assert_array_equal(features["DXY_logret_1h"].iloc[hole], 0.0)
    np.testing.assert_array_equal(features["DXY_fresh"].iloc[hole], 0.0)
    np.testing.assert_array_equal(features["DXY_parkinson_24"].iloc[hole][30:], 0.0)
    # the first return after the hole spans it, from the last known close (a causal carry)
    last_known = market["DXY_close"].iloc[499]
    np.testing.assert_allclose(features["DXY_logret_1h"].iloc[650],
                               np.log(market["DXY_close"].iloc[650] / last_known))


def test_zero_variance_windows_give_zero():
    market = make_market(700, seed=2)
    flat = slice(300, 600)
    price = market["BTC_close"].iloc[299]
    for f in ("open", "high", "low", "close"):
        market.iloc[flat, market.columns.get_loc(f"BTC_{f}")] = price
    market.iloc[flat, market.columns.get_loc("BTC_volume")] = 0.0
    cfg = FeaturesConfig(ffd_d=0.6)
    feats = build_features(market, cfg)
    rows = slice(500, 600)  # the 168-hour windows ending here are entirely flat
    for col in ("BTC_zclose_168", "BTC_zvolume_168", "corr_BTC_SPY_168", "corr_BTC_DXY_168",
                "BTC_rvol_24", "BTC_parkinson_24", "BTC_gk_24", "BTC_bbw_20"):
        np.testing.assert_array_equal(feats[col].iloc[rows], 0.0, err_msg=col)
    np.testing.assert_array_equal(feats["BTC_bbp_20"].iloc[rows], 0.5)
    assert np.isfinite(feats.iloc[warmup_rows(feats):].to_numpy()).all()


def test_warmup_rows():
    frame = pd.DataFrame({"a": [np.nan, 1.0, 2.0, 3.0], "b": [np.nan, np.nan, 1.0, 2.0]})
    assert warmup_rows(frame) == 2
    assert warmup_rows(frame.iloc[2:]) == 0
    assert warmup_rows(frame.iloc[:1]) == 1


def test_calendar_columns():
    stamps = pd.DatetimeIndex(["2024-07-01 13:00", "2024-07-01 14:00", "2024-07-01 20:00",
                               "2024-07-01 21:00", "2024-01-02 14:00", "2024-01-02 15:00",
                               "2024-01-02 21:00", "2024-01-02 22:00", "2024-07-06 15:00"],
                              tz="UTC")
    # EDT (UTC-4) in July, EST (UTC-5) in January; 2024-07-06 is a Saturday
    np.testing.assert_array_equal(us_market_open(stamps), [0, 1, 1, 0, 0, 1, 1, 0, 0])
    market = make_market(60, seed=0)
    feats = build_features(market, FeaturesConfig(ffd=False, zscore=False, ta=False,
                                                  cross_asset=False, range_vol=False))
    hours = market.index.hour.to_numpy()
    np.testing.assert_allclose(feats["hour_sin"], np.sin(2 * np.pi * hours / 24))
    np.testing.assert_allclose(feats["dow_cos"], np.cos(2 * np.pi * market.index.dayofweek / 7))
    np.testing.assert_array_equal(feats["SPY_fresh"], market["SPY_fresh"])


def test_groups_switch_off():
    market = make_market(400, seed=0)
    cfg = FeaturesConfig(returns=False, zscore=False, ffd=False, range_vol=False, ta=False,
                         cross_asset=False, calendar=False)
    feats = build_features(market, cfg)
    assert list(feats.columns) == ["BTC_logret_1h", "BTC_rvol_24"]  # the env's inputs stay
    feats = build_features(market, dataclasses.replace(cfg, calendar=True, equity_asset=None),
                           vol_window=12)
    assert "BTC_rvol_12" in feats.columns and "us_market_open" in feats.columns


# --------------------------------------------------------------------------------------------
# Causality: appending or changing future rows never changes a past value
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [300, 777, CUT])
def test_features_causal_when_rows_are_appended(market, features, cfg, cut):
    past = build_features(market.iloc[:cut], cfg)
    _assert_past_equal(past, features, cut)


def test_features_causal_when_future_rows_change(market, features, cfg):
    altered = build_features(_alter_future(market, CUT, seed=3), cfg)
    _assert_past_equal(altered, features, CUT)
    changed = [c for c in features.columns
               if not np.array_equal(altered[c].to_numpy()[CUT:], features[c].to_numpy()[CUT:],
                                     equal_nan=True)]
    calendar = {"hour_sin", "hour_cos", "dow_sin", "dow_cos", "us_market_open", "BTC_fresh",
                "ETH_fresh", "DXY_fresh"}
    assert set(features.columns) - set(changed) <= calendar  # the change did reach the future


def test_auto_ffd_features_causal(market, cfg):
    auto = dataclasses.replace(cfg, ffd_d="auto", ffd_d_grid=(0.2, 0.4, 0.6, 0.8, 1.0))
    with pytest.raises(ValueError, match="select_ffd_d"):
        build_features(market, auto)
    d = select_ffd_d(market, auto, slice(0, 700))
    assert set(d) == {"BTC", "ETH", "SPY", "DXY"} and set(d.values()) <= set(auto.ffd_d_grid)
    full = build_features(market, auto, ffd_d=d)
    past = build_features(_alter_future(market, CUT, seed=4), auto, ffd_d=d)
    _assert_past_equal(past, full, CUT)


# --------------------------------------------------------------------------------------------
# FFD order
# --------------------------------------------------------------------------------------------


def _adf_p(x: pd.Series) -> float:
    x = x.to_numpy()
    with warnings.catch_warnings(), blas_single_thread():
        warnings.simplefilter("ignore")
        return float(adfuller(x[np.isfinite(x)], autolag="AIC")[1])


def test_select_ffd_d_takes_the_minimum_passing_d(market, cfg):
    grid = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    sel_cfg = dataclasses.replace(cfg, assets=("BTC", "ETH"), ffd_d_grid=grid)
    train = slice(100, 900)
    chosen = select_ffd_d(market, sel_cfg, train)
    for asset, d in chosen.items():
        log_close = pd.Series(np.log(market[f"{asset}_close"].to_numpy()[train]))
        assert _adf_p(ffd(log_close, d, cfg.ffd_threshold)) < cfg.ffd_adf_pvalue
        for lower in [g for g in grid if g < d]:
            assert _adf_p(ffd(log_close, lower, cfg.ffd_threshold)) >= cfg.ffd_adf_pvalue
    # only the train rows matter
    altered = _alter_future(market, 900, seed=5)
    altered.iloc[:100, :] = altered.iloc[:100, :].to_numpy() * 1.7
    assert select_ffd_d(altered, sel_cfg, train) == chosen


def test_select_ffd_d_falls_back_to_the_largest_with_a_warning(caplog):
    rng = np.random.default_rng(0)
    market = make_market(600, seed=1)
    walk = 5.0 + np.cumsum(rng.normal(0.0, 0.01, 600)) + np.linspace(0, 0.5, 600)
    for f in ("open", "high", "low", "close"):
        market[f"BTC_{f}"] = np.exp(walk)
    cfg = FeaturesConfig(assets=("BTC",), ffd_d_grid=(0.0, 0.05))
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.features.engineering"):
        assert select_ffd_d(market, cfg, slice(0, 600)) == {"BTC": 0.05}
    assert "no d on" in caplog.text


def test_ffd_d_overrides(market, cfg):
    by_dict = build_features(market.iloc[:600], cfg, ffd_d={"BTC": 1.0, "ETH": 0.4, "SPY": 0.4,
                                                              "DXY": 0.4})
    close = np.log(market["BTC_close"].to_numpy()[:600])
    np.testing.assert_allclose(by_dict["BTC_ffd"].to_numpy()[1:], np.diff(close))
    with pytest.raises(ValueError, match="no order for asset"):
        build_features(market.iloc[:600], cfg, ffd_d={"BTC": 0.4})


def test_bad_inputs_raise_clear_errors(market, cfg):
    no_attrs = pd.DataFrame(market)
    no_attrs.attrs = {}
    with pytest.raises(ValueError, match="traded_asset"):
        build_features(no_attrs, cfg)
    with pytest.raises(ValueError, match="ta_assets.*XRP"):
        build_features(market, dataclasses.replace(cfg, ta_assets=("XRP",)))
    with pytest.raises(ValueError, match="lacks column"):
        build_features(market.drop(columns=["ETH_low"]), cfg)


# --------------------------------------------------------------------------------------------
# Real bundled data
# --------------------------------------------------------------------------------------------


def test_build_features_on_real_quick_data(monkeypatch):
    quick = load_config(REPO / "configs" / "quick.yaml")
    if not (REPO / quick.data.data_dir / "BTC_1h.csv.gz").is_file():
        pytest.skip("bundled data not present")
    from cryptorl_jax.market import load_market

    monkeypatch.chdir(REPO)  # data_dir and the market cache are relative to the repo root
    market = load_market(quick.data)
    feats = build_features(market, quick.features)
    start = warmup_rows(feats)
    assert feats.index.equals(market.index) and start < 400
    assert np.isfinite(feats.iloc[start:].to_numpy()).all()
    assert feats["DXY_fresh"].eq(0).any() and feats["corr_BTC_SPY_168"].iloc[start:].abs().max() < 1
    _assert_past_equal(build_features(market.iloc[:6000], quick.features), feats, 6000)
