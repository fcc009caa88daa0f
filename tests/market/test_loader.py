"""load_ohlcv refuses every kind of untrustworthy file; load_market aligns without look-ahead."""

from __future__ import annotations

import dataclasses
import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import AssetSpec, ConfigError, DataConfig, load_config
from cryptorl_jax.market import DataValidationError, load_market, load_ohlcv

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2020-01-01T00:00:00Z,100,101,99,100.5,10",
    "2020-01-01T01:00:00Z,100.5,102,100,101,11",
    "2020-01-01T02:00:00Z,101,101.5,100.2,100.8,12",
    "2020-01-01T03:00:00Z,100.8,101,99.5,100,13",
]


def write_csv(tmp_path, rows, name="X_1h.csv", header=HEADER):
    p = tmp_path / name
    text = header + "\n".join(rows) + "\n"
    if name.endswith(".gz"):
        with gzip.open(p, "wt") as fh:
            fh.write(text)
    else:
        p.write_text(text)
    return p


def with_row(i, row):
    rows = list(GOOD_ROWS)
    rows[i] = row
    return rows


def test_good_file_csv_gz_and_parquet(tmp_path):
    p = write_csv(tmp_path, GOOD_ROWS)
    frame = load_ohlcv(p)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert str(frame.index.tz) == "UTC" and len(frame) == 4
    assert all(frame.dtypes == np.float64)
    gz = write_csv(tmp_path, GOOD_ROWS, "X_1h.csv.gz")
    pd.testing.assert_frame_equal(load_ohlcv(gz), frame)
    pq = tmp_path / "X.parquet"
    frame.to_parquet(pq)
    pd.testing.assert_frame_equal(load_ohlcv(pq), frame, check_freq=False)


@pytest.mark.parametrize("rows, header, words", [
    ([], HEADER, "no data rows"),
    (GOOD_ROWS, "timestamp,open,high,low,volume\n", "missing column(s) ['close']"),
    (with_row(2, "2020-01-01T02:00:00Z,101,abc,100.2,100.8,12"), HEADER,
     "non-numeric value 'abc' in column 'high' at row 3 (timestamp 2020-01-01T02:00:00Z)"),
    (with_row(1, "2020-01-01T01:00:00Z,100.5,102,100,,11"), HEADER,
     "missing or non-finite value (NaN/inf) in column 'close' at row 2"),
    (with_row(1, "2020-01-01T01:00:00Z,100.5,102,100,NaN,11"), HEADER,
     "missing or non-finite value (NaN/inf) in column 'close' at row 2"),
    (with_row(3, "2020-01-01T03:00:00Z,100.8,101,99.5,inf,13"), HEADER, "non-finite"),
    (with_row(2, "2020-01-01T02:00:00Z,0,101.5,0,100.8,12"), HEADER,
     "non-positive price 0.0 in column 'open' at row 3"),
    (with_row(2, "2020-01-01T02:00:00Z,101,101.5,-1,100.8,12"), HEADER,
     "non-positive price -1.0 in column 'low' at row 3"),
    (with_row(1, "2020-01-01T01:00:00Z,100.5,102,100,101,-5"), HEADER, "negative volume"),
    (with_row(1, "2020-01-01T01:00:00Z,100.5,100.9,100,101,11"), HEADER,
     "OHLC inconsistency (high below max(open, close)) at row 2"),
    (with_row(1, "2020-01-01T01:00:00Z,100.5,102,100.7,101,11"), HEADER,
     "OHLC inconsistency (low above min(open, close)) at row 2"),
    (with_row(1, "not-a-time,100.5,102,100,101,11"), HEADER,
     "unparseable timestamp 'not-a-time' at row 2"),
    (with_row(2, "2020-01-01T01:00:00Z,101,101.5,100.2,100.8,12"), HEADER,
     "duplicate timestamp 2020-01-01T01:00:00+00:00 at rows 2 and 3"),
    (with_row(2, "2019-12-31T02:00:00Z,101,101.5,100.2,100.8,12"), HEADER,
     "timestamps not sorted: 2019-12-31T02:00:00+00:00 at row 3"),
])
def test_malformed_files_are_refused_with_file_row_and_rule(tmp_path, rows, header, words):
    p = write_csv(tmp_path, rows, header=header)
    with pytest.raises(DataValidationError) as err:
        load_ohlcv(p)
    msg = str(err.value)
    assert str(p) in msg
    assert words in msg


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(DataValidationError, match="file not found"):
        load_ohlcv(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match=r"empty\.csv: file is empty"):
        load_ohlcv(empty)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8b\x08this is not gzip")
    with pytest.raises(DataValidationError, match=r"broken\.csv\.gz: cannot read file"):
        load_ohlcv(broken)
    badpq = tmp_path / "bad.parquet"
    badpq.write_bytes(b"PAR1garbage")
    with pytest.raises(DataValidationError, match=r"bad\.parquet: cannot read file"):
        load_ohlcv(badpq)
    other = tmp_path / "x.xlsx"
    other.write_text("x")
    with pytest.raises(DataValidationError, match="unsupported file type"):
        load_ohlcv(other)
    assert issubclass(DataValidationError, ValueError)


def _hourly_rows(start, n, price=100.0, skip=()):
    rows = []
    t0 = pd.Timestamp(start, tz="UTC")
    for i in range(n):
        if i in skip:
            continue
        t = (t0 + pd.Timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        p = price + i * 0.1
        rows.append(f"{t},{p},{p + 1},{p - 1},{p + 0.05},{i + 1}")
    return rows


def _cfg(tmp_path, assets, **kw):
    return DataConfig(data_dir=str(tmp_path), traded_asset="BTC", assets=tuple(assets),
                      cache_dir=None, **kw)


def test_traded_gap_filled_and_flagged_large_gap_refused(tmp_path):
    write_csv(tmp_path, _hourly_rows("2020-01-01", 48, skip={10, 11, 12}), "BTC.csv")
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv")], max_fill_hours=3)
    frame = load_market(cfg)
    assert len(frame) == 48
    # bar opened 09:00 closes 10:00: the filled rows are the closes of bars 10, 11, 12
    gap_rows = frame.index[(frame["BTC_fresh"] == 0).to_numpy()]
    assert list(gap_rows.hour) == [11, 12, 13]
    filled = frame.loc[gap_rows]
    before_gap = frame.loc[pd.Timestamp("2020-01-01 10:00", tz="UTC"), "BTC_close"]
    assert (filled["BTC_close"] == before_gap).all()
    assert (filled["BTC_volume"] == 0).all()
    assert (filled["BTC_high"] == filled["BTC_low"]).all()
    cfg2 = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv")], max_fill_hours=2)
    with pytest.raises(DataValidationError, match=r"BTC\.csv: gap of 3 missing hourly bars"):
        load_market(cfg2)


def test_context_asset_placed_by_close_time_and_stale_capped(tmp_path):
    write_csv(tmp_path, _hourly_rows("2020-01-01", 24 * 6), "BTC.csv")
    # a market asset trading 14:00-20:00 (bars labelled by open) on days 1, 2 and 5 only
    spy = [r for i, r in enumerate(_hourly_rows("2020-01-01", 24 * 5, price=300.0))
           if 14 <= int(r[11:13]) <= 20 and not 48 <= i < 96]
    write_csv(tmp_path, spy, "SPY.csv")
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv"), AssetSpec("SPY", "SPY.csv", "market")],
               max_stale_hours=30)
    frame = load_market(cfg)
    spy_raw = load_ohlcv(tmp_path / "SPY.csv")
    # the window starts when the first SPY bar has closed (14:00 bar closes at 15:00)
    assert frame.index[0] == pd.Timestamp("2020-01-01 15:00", tz="UTC")
    # ... and ends with the last SPY bar's close (day 5, 20:00 bar closes at 21:00)
    assert frame.index[-1] == pd.Timestamp("2020-01-05 21:00", tz="UTC")
    for ts, row in frame.iterrows():
        if np.isnan(row["SPY_close"]):
            continue
        # the value shown is the close of the latest bar whose close time is <= ts
        closed = spy_raw[spy_raw.index + pd.Timedelta(hours=1) <= ts]
        assert row["SPY_close"] == closed["close"].iloc[-1]
        assert ts - (closed.index[-1] + pd.Timedelta(hours=1)) <= pd.Timedelta(hours=30)
    # day 2's last bar closes at 21:00; 30 h later the value is still shown, then it is stale
    last_close = pd.Timestamp("2020-01-02 21:00", tz="UTC")
    assert frame.loc[last_close, "SPY_fresh"] == 1.0
    assert frame.loc[last_close + pd.Timedelta(hours=1), "SPY_fresh"] == 0.0
    assert not np.isnan(frame.loc[last_close + pd.Timedelta(hours=30), "SPY_close"])
    assert np.isnan(frame.loc[last_close + pd.Timedelta(hours=31), "SPY_close"])
    assert frame.loc[pd.Timestamp("2020-01-05 15:00", tz="UTC"), "SPY_fresh"] == 1.0


def test_inverted_asset(tmp_path):
    write_csv(tmp_path, _hourly_rows("2020-01-01", 10), "BTC.csv")
    write_csv(tmp_path, _hourly_rows("2020-01-01", 10, price=2.0), "EUR.csv")
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv"), AssetSpec("USD", "EUR.csv", "crypto",
                                                                  invert=True)])
    frame = load_market(cfg)
    raw = load_ohlcv(tmp_path / "EUR.csv")
    np.testing.assert_allclose(frame["USD_close"].to_numpy(), 1 / raw["close"].to_numpy())
    np.testing.assert_allclose(frame["USD_high"].to_numpy(), 1 / raw["low"].to_numpy())
    assert (frame["USD_high"] >= frame["USD_low"]).all()


def test_combined_file_matches_per_asset_files(tmp_path):
    write_csv(tmp_path, _hourly_rows("2020-01-01", 30), "BTC.csv")
    write_csv(tmp_path, _hourly_rows("2020-01-01", 30, price=50.0), "ETH.csv")
    a, b = load_ohlcv(tmp_path / "BTC.csv"), load_ohlcv(tmp_path / "ETH.csv")
    comb = pd.concat([a.add_prefix("BTC_"), b.add_prefix("ETH_")], axis=1)
    comb.index = comb.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    comb.index.name = "timestamp"
    comb.to_csv(tmp_path / "all.csv")
    assets = [AssetSpec("BTC", "BTC.csv"), AssetSpec("ETH", "ETH.csv")]
    per_file = load_market(_cfg(tmp_path, assets))
    combined = load_market(_cfg(tmp_path, [AssetSpec("BTC"), AssetSpec("ETH")],
                                combined_file="all.csv"))
    pd.testing.assert_frame_equal(per_file, combined)
    comb = comb.astype(str)
    comb.loc[comb.index[3], "ETH_close"] = "oops"
    comb.to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataValidationError, match=r"bad\.csv \[ETH\]: non-numeric value 'oops'"):
        load_market(_cfg(tmp_path, [AssetSpec("BTC"), AssetSpec("ETH")],
                         combined_file="bad.csv"))


def test_missing_file_named(tmp_path):
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "nothere.csv")])
    with pytest.raises(DataValidationError, match=r"nothere\.csv: file not found"):
        load_market(cfg)


def test_cache_roundtrip_and_invalidation(tmp_path, caplog):
    write_csv(tmp_path, _hourly_rows("2020-01-01", 30), "BTC.csv")
    cfg = DataConfig(data_dir=str(tmp_path), assets=(AssetSpec("BTC", "BTC.csv"),),
                     cache_dir=str(tmp_path / "cache"))
    first = load_market(cfg)
    assert len(list((tmp_path / "cache").glob("market_*.parquet"))) == 1
    with caplog.at_level(logging.INFO, logger="cryptorl_jax.market.loader"):
        second = load_market(cfg)
    assert "from cache" in caplog.text
    pd.testing.assert_frame_equal(first, second)
    assert second.attrs["traded_asset"] == "BTC"
    # a changed input file gives a new key, never the stale cached frame
    write_csv(tmp_path, _hourly_rows("2020-01-01", 31), "BTC.csv")
    assert len(load_market(cfg)) == 31


def test_real_bundled_market_has_no_lookahead(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = load_config(repo_root / "configs" / "quick.yaml")
    frame = load_market(cfg.data)
    assert frame.index.is_monotonic_increasing and frame.index.freq == "h"
    assert str(frame.index.tz) == "UTC"
    assert not frame["BTC_close"].isna().any()
    lags = {a.name: a.availability_lag_hours for a in cfg.data.assets}
    assert lags["DXY"] == 1 and lags["SPY"] == 0
    for name in ("SPY", "DXY"):
        raw = load_ohlcv(repo_root / "data" / f"{name}_1h.csv.gz")
        # a bar is usable `availability_lag_hours` after its close (the bars open on the hour)
        close_time = (raw.index + pd.Timedelta(hours=1 + lags[name])).as_unit("ns")
        # for each row, the latest bar usable by then (as-of join on close time + lag)
        pos = np.searchsorted(close_time.asi8, frame.index.asi8, side="right") - 1
        shown = frame[f"{name}_close"].to_numpy()
        ok = ~np.isnan(shown)
        assert (pos[ok] >= 0).all()
        np.testing.assert_array_equal(shown[ok], raw["close"].to_numpy()[pos[ok]])
        # fresh rows show a bar that closed within the last hour, never one still open
        fresh = frame[f"{name}_fresh"].to_numpy() == 1
        age = frame.index.asi8[fresh] - close_time.asi8[pos[fresh]]
        assert (age >= 0).all() and (age < 3600 * 10**9).all()
    start, end = pd.Timestamp(cfg.data.start, tz="UTC"), pd.Timestamp(cfg.data.end, tz="UTC")
    assert frame.index[0] >= start and frame.index[-1] <= end


# --------------------------------------------------------------------------------------------
# availability_lag_hours
# --------------------------------------------------------------------------------------------


def _dxy_rows(n_days=8):
    """A market asset with a daily 21:00-24:00 break and a 58 h hole (longer than the stale cap
    used below), so forward-fill, staleness and `_fresh` all matter."""
    return [r for i, r in enumerate(_hourly_rows("2020-01-01", 24 * n_days, price=95.0))
            if int(r[11:13]) not in (21, 22, 23) and not 72 <= i < 130]


def _lag_cfg(tmp_path, lag, cache_dir=None, **kw):
    assets = (AssetSpec("BTC", "BTC.csv"),
              AssetSpec("DXY", "DXY.csv", "market", availability_lag_hours=lag))
    return DataConfig(data_dir=str(tmp_path), traded_asset="BTC", assets=assets,
                      max_stale_hours=30, cache_dir=cache_dir, **kw)


def _dxy_cols(frame):
    return [c for c in frame.columns if c.startswith("DXY_")]


def test_lag_shifts_the_context_series_by_exactly_that_many_rows(tmp_path):
    write_csv(tmp_path, _hourly_rows("2019-12-31", 24 * 11), "BTC.csv")
    write_csv(tmp_path, _dxy_rows(), "DXY.csv")
    lag0 = load_market(_lag_cfg(tmp_path, 0))
    lag1 = load_market(_lag_cfg(tmp_path, 1))
    one = pd.Timedelta(hours=1)
    # the window follows DXY's bars: it starts and ends an hour later
    assert lag1.index[0] == lag0.index[0] + one and lag1.index[-1] == lag0.index[-1] + one
    assert lag0["DXY_close"].isna().any() and (lag0["DXY_fresh"] == 0).any()
    cols = _dxy_cols(lag0)
    assert len(cols) == 6
    # row t of the lag-1 frame is row t-1 of the lag-0 frame, NaN (stale) rows included
    for c in cols:
        np.testing.assert_array_equal(lag1[c].to_numpy(), lag0[c].to_numpy(), err_msg=c)
    # ... stated row by row where the lag-0 value at t-1 was fresh
    fresh_rows = lag0.index[(lag0["DXY_fresh"] == 1).to_numpy()]
    assert len(fresh_rows) > 100
    for t_minus_1 in fresh_rows:
        t = t_minus_1 + one
        for c in cols:
            assert lag1.loc[t, c] == lag0.loc[t_minus_1, c], (t, c)
    # the traded asset is untouched on the rows both frames hold
    common = lag0.index.intersection(lag1.index)
    pd.testing.assert_frame_equal(lag1.loc[common, ["BTC_close", "BTC_fresh"]],
                                  lag0.loc[common, ["BTC_close", "BTC_fresh"]])
    # on one fixed grid (data.start/end) the lag-1 columns are the lag-0 columns shifted by one
    kw = {"start": "2020-01-02 05:00", "end": "2020-01-07 12:00"}
    fix0, fix1 = load_market(_lag_cfg(tmp_path, 0, **kw)), load_market(_lag_cfg(tmp_path, 1, **kw))
    assert fix0.index.equals(fix1.index)
    pd.testing.assert_frame_equal(fix1[cols].iloc[1:], fix0[cols].shift(1).iloc[1:])


def _bar(t, price, vol=1.0):
    return f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{price},{price + 2},{price - 1},{price + 0.9},{vol}"


@pytest.mark.parametrize("lag", [1, 2])
@pytest.mark.parametrize("change", ["alter", "fill_hole", "append"])
def test_a_context_bar_never_changes_rows_before_its_close_plus_lag(tmp_path, lag, change):
    write_csv(tmp_path, _hourly_rows("2019-12-31", 24 * 11), "BTC.csv")
    rows = _dxy_rows()
    write_csv(tmp_path, rows, "DXY.csv")
    base = load_market(_lag_cfg(tmp_path, lag))
    if change == "alter":  # a bar in the middle gets other prices and volume
        k = 40
        opened = pd.Timestamp(rows[k][:19], tz="UTC")
        rows[k] = _bar(opened, 150.0, 999.0)
    elif change == "fill_hole":  # a bar appears inside the 58 h hole
        opened = pd.Timestamp("2020-01-05 03:00", tz="UTC")
        k = next(i for i, r in enumerate(rows) if pd.Timestamp(r[:19], tz="UTC") > opened)
        rows.insert(k, _bar(opened, 150.0))
    else:  # a new bar after the last one
        opened = pd.Timestamp(rows[-1][:19], tz="UTC") + pd.Timedelta(hours=4)
        rows.append(_bar(opened, 150.0))
    write_csv(tmp_path, rows, "DXY.csv")
    new = load_market(_lag_cfg(tmp_path, lag))
    close = opened + pd.Timedelta(hours=1)
    usable = close + pd.Timedelta(hours=lag)
    before_base = base[base.index < usable]
    assert len(before_base) > 24 and before_base.index.isin(new.index).all()
    pd.testing.assert_frame_equal(new.loc[before_base.index], before_base, check_freq=False)
    # rows the change added to the window (an appended bar moves its end) show only older bars
    added = new.index[(new.index < usable) & ~new.index.isin(base.index)]
    assert change == "append" or len(added) == 0
    assert (new.loc[added, "DXY_fresh"] == 0).all() and (new.loc[added, "DXY_close"] != 150.9).all()
    # ... and the bar does show, on row C + lag exactly
    assert new.loc[usable, "DXY_close"] == 150.9 and new.loc[usable, "DXY_fresh"] == 1.0


def test_loader_refuses_a_negative_lag_or_one_on_the_traded_asset(tmp_path):
    write_csv(tmp_path, _hourly_rows("2019-12-31", 24 * 11), "BTC.csv")
    write_csv(tmp_path, _dxy_rows(), "DXY.csv")
    with pytest.raises(ConfigError, match=r"'data\.assets\[1\]\.availability_lag_hours'.*>= 0"):
        load_market(_lag_cfg(tmp_path, -1))
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv", availability_lag_hours=1),
                          AssetSpec("DXY", "DXY.csv", "market")])
    with pytest.raises(ConfigError,
                       match=r"'data\.assets\[0\]\.availability_lag_hours'.*traded asset BTC"):
        load_market(cfg)


def test_cache_never_serves_a_frame_built_with_another_lag(tmp_path, caplog):
    write_csv(tmp_path, _hourly_rows("2019-12-31", 24 * 11), "BTC.csv")
    write_csv(tmp_path, _dxy_rows(), "DXY.csv")
    cache = str(tmp_path / "cache")
    uncached = {lag: load_market(_lag_cfg(tmp_path, lag)) for lag in (0, 1)}
    first = load_market(_lag_cfg(tmp_path, 0, cache_dir=cache))
    pd.testing.assert_frame_equal(first, uncached[0])
    # same files, same everything but the lag: a new key, a freshly built frame
    with caplog.at_level(logging.INFO, logger="cryptorl_jax.market.loader"):
        lagged = load_market(_lag_cfg(tmp_path, 1, cache_dir=cache))
    assert "from cache" not in caplog.text
    pd.testing.assert_frame_equal(lagged, uncached[1])
    assert len(list((tmp_path / "cache").glob("market_*.parquet"))) == 2
    # each lag is then served its own cached frame
    for lag in (0, 1):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="cryptorl_jax.market.loader"):
            again = load_market(_lag_cfg(tmp_path, lag, cache_dir=cache))
        assert "from cache" in caplog.text
        pd.testing.assert_frame_equal(again, uncached[lag])


def test_end_on_traded_keeps_the_traded_assets_newest_bars(tmp_path):
    """Live bars (paper trading): a context market closed for the weekend must not stop the
    grid at its last bar; `end_on="traded"` ends at the traded asset's last bar with the context
    forward-filled up to max_stale_hours and NaN beyond. The rows both share are identical."""
    write_csv(tmp_path, _hourly_rows("2020-01-01", 72), "BTC.csv")
    write_csv(tmp_path, _hourly_rows("2020-01-01", 30, price=300.0), "SPY.csv")
    cfg = _cfg(tmp_path, [AssetSpec("BTC", "BTC.csv"), AssetSpec("SPY", "SPY.csv", "market")],
               max_stale_hours=24)
    common = load_market(cfg)
    live = load_market(cfg, end_on="traded")
    assert common.index[-1] == pd.Timestamp("2020-01-02 06:00", tz="UTC")  # SPY's last close
    assert live.index[-1] == pd.Timestamp("2020-01-04 00:00", tz="UTC")  # BTC's last close
    pd.testing.assert_frame_equal(live.loc[:common.index[-1]], common, check_freq=False)
    after = live.loc[common.index[-1] + pd.Timedelta(hours=1):]
    assert (after["SPY_fresh"] == 0).all() and (after["BTC_fresh"] == 1).all()
    assert not after["SPY_close"].iloc[:24].isna().any()
    assert after["SPY_close"].iloc[24:].isna().all()
    with pytest.raises(ValueError, match="end_on"):
        load_market(cfg, end_on="newest")
    # the two frames never share a cache file
    cached = dataclasses.replace(cfg, cache_dir=str(tmp_path / "cache"))
    assert len(load_market(cached)) == len(common)
    assert len(load_market(cached, end_on="traded")) == len(live)
    assert len(load_market(cached)) == len(common)
