"""load_ohlcv refuses every kind of untrustworthy file; load_market aligns without look-ahead."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import AssetSpec, DataConfig, load_config
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
    for name in ("SPY", "DXY"):
        raw = load_ohlcv(repo_root / "data" / f"{name}_1h.csv.gz")
        close_time = (raw.index + pd.Timedelta(hours=1)).as_unit("ns")
        # for each row, the latest bar that had closed by then (as-of join on the close time)
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
