"""Downloaders, offline: a fake ccxt exchange and a fake yfinance.Ticker serve recorded bars.

The fixtures are real bars from the bundled files in each API's response shape
(fixtures/README.md). Nothing here opens a connection: conftest.py blocks sockets, and the only
real ccxt object (make_exchange) is built and never asked for data.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.market import download
from cryptorl_jax.market.download import (
    DownloadError,
    download_ccxt,
    download_yfinance,
    make_exchange,
    timeframe_ms,
    to_utc_ms,
    write_ohlcv_atomic,
)
from cryptorl_jax.market.loader import FIELDS, load_ohlcv

FIXTURES = Path(__file__).parent / "fixtures"
HOUR_MS = 3_600_000
BARS = json.loads((FIXTURES / "binance_btcusdt_1h.json").read_text())  # 19 bars, 34h gap inside
FIRST = "2018-02-07T14:00:00Z"
NOW_END = to_utc_ms("2018-02-09T17:30:00Z")  # the 17:00 bar (the last one) is still forming


class FakeExchange:
    """The slice of the ccxt Exchange API the downloader uses, with Binance's since/limit rules."""

    id = "fakebinance"
    has = {"fetchOHLCV": True}
    timeframes = {"1m": "1m", "1h": "1h", "1d": "1d"}

    def __init__(self, bars=BARS, now_ms=NOW_END, *, rate_limit=50, enable_rate_limit=False,
                 failures=(), overlap=0):
        self.bars = [list(b) for b in bars]
        self.now_ms = now_ms
        self.rateLimit = rate_limit
        self.enableRateLimit = enable_rate_limit
        self.failures = list(failures)  # what the next calls raise, in order (None: succeed)
        self.overlap = overlap  # bars served from before `since`, as some exchanges do
        self.calls: list[tuple] = []

    def milliseconds(self) -> int:
        return self.now_ms

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
        self.calls.append((symbol, timeframe, since, limit))
        if self.failures:
            exc = self.failures.pop(0)
            if exc is not None:
                raise exc
        assert (symbol, timeframe) == ("BTC/USDT", "1h")
        lo = since - self.overlap * HOUR_MS
        served = [list(b) for b in self.bars if lo <= b[0] <= self.now_ms]  # incl. forming bar
        return served[:limit]


class Sleeps(list):
    """Records sleep requests instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def expected_frame(bars) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime([b[0] for b in bars], unit="ms", utc=True))
    return pd.DataFrame(np.array([b[1:] for b in bars], dtype=np.float64), index=index,
                        columns=list(FIELDS))


def assert_same_bars(path: Path, bars) -> None:
    got = load_ohlcv(path)
    want = expected_frame(bars)
    assert [t.value for t in got.index] == [t.value for t in want.index]
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())  # exact: repr round-trips


def no_temp_files(folder: Path) -> bool:
    return [p.name for p in folder.iterdir() if ".part." in p.name] == []


def fetch(out, ex, **kw):
    kw.setdefault("start", FIRST)
    return download_ccxt(out, client=ex, symbol="BTC/USDT", timeframe="1h", sleep=Sleeps(), **kw)


# --------------------------------------------------------------------------------------------
# ccxt
# --------------------------------------------------------------------------------------------


def test_pagination_crosses_gap_rate_limits_and_drops_forming_bar(tmp_path):
    out = tmp_path / "BTC_1h.csv.gz"
    ex, sleeps = FakeExchange(), Sleeps()
    result = download_ccxt(out, client=ex, start=FIRST, limit=4, sleep=sleeps)
    assert_same_bars(out, BARS[:-1])  # the 17:00 bar closes at 18:00 > now: dropped
    assert (result.n_existing, result.n_new) == (0, 18)
    assert result.last == pd.Timestamp("2018-02-09T16:00:00Z")
    # since = previous page's last open + 1h; the third page jumps over the 34h outage
    sinces = [c[2] for c in ex.calls]
    assert sinces == [to_utc_ms(t) for t in ("2018-02-07T14:00Z", "2018-02-07T18:00Z",
                                             "2018-02-07T22:00Z", "2018-02-09T11:00Z",
                                             "2018-02-09T15:00Z")]
    assert all(c[3] == 4 for c in ex.calls)
    assert sleeps == [0.05] * 4  # rateLimit ms between calls, none before the first
    assert no_temp_files(tmp_path)


def test_no_manual_sleep_when_ccxt_limiter_is_on(tmp_path):
    ex, sleeps = FakeExchange(enable_rate_limit=True), Sleeps()
    download_ccxt(tmp_path / "b.csv", client=ex, start=FIRST, limit=4, sleep=sleeps)
    assert len(ex.calls) == 5 and sleeps == []


def test_end_is_exclusive_and_start_inclusive(tmp_path):
    out = tmp_path / "b.csv"
    fetch(out, FakeExchange(), start="2018-02-07T15:00Z", end="2018-02-08T00:00Z", limit=3)
    assert_same_bars(out, BARS[1:10])  # 15:00 .. 23:00


def test_resume_appends_after_last_bar_without_duplicates(tmp_path):
    out = tmp_path / "BTC_1h.csv.gz"
    fetch(out, FakeExchange(now_ms=to_utc_ms("2018-02-07T20:30Z")), limit=4)
    assert_same_bars(out, BARS[:6])  # 14:00 .. 19:00; 20:00 was forming
    before = load_ohlcv(out)
    ex = FakeExchange(overlap=3)  # the exchange also re-sends 3 stored bars
    result = fetch(out, ex, start="2017-01-01", limit=5)  # an older start cannot rewind a file
    assert ex.calls[0][2] == to_utc_ms("2018-02-07T20:00Z")
    assert (result.n_existing, result.n_new) == (6, 12)
    assert_same_bars(out, BARS[:-1])
    pd.testing.assert_frame_equal(load_ohlcv(out).iloc[:6], before)
    # nothing new: the file is left as it is
    data = out.read_bytes()
    again = fetch(out, FakeExchange())
    assert again.n_new == 0 and out.read_bytes() == data


def test_transient_errors_are_retried_with_backoff(tmp_path):
    out = tmp_path / "b.csv"
    ex = FakeExchange(enable_rate_limit=True,
                      failures=[ccxt.RequestTimeout("timed out"), None,
                                ccxt.ExchangeNotAvailable("502"), ccxt.NetworkError("reset")])
    sleeps = Sleeps()
    download_ccxt(out, client=ex, start=FIRST, limit=8, backoff_s=0.5, sleep=sleeps)
    assert_same_bars(out, BARS[:-1])
    assert sleeps == [0.5, 0.5, 1.0]  # backoff doubles within one request, restarts per request
    assert len(ex.calls) == 3 + 3


def test_persistent_network_error_is_a_clear_error_and_keeps_the_file(tmp_path):
    out = tmp_path / "b.csv.gz"
    fetch(out, FakeExchange(now_ms=to_utc_ms("2018-02-07T20:30Z")))
    data = out.read_bytes()
    ex = FakeExchange(failures=[ccxt.RequestTimeout("timed out")] * 10)
    with pytest.raises(DownloadError, match=r"fakebinance fetch_ohlcv\(BTC/USDT, 1h, "
                       r"since=2018-02-07T20:00:00Z\) failed after 3 attempts: RequestTimeout"):
        fetch(out, ex, attempts=3)
    assert len(ex.calls) == 3
    assert out.read_bytes() == data and no_temp_files(tmp_path)


def test_failure_part_way_saves_progress_and_rerun_resumes(tmp_path):
    out = tmp_path / "b.csv"
    ex = FakeExchange(failures=[None, None] + [ccxt.ExchangeNotAvailable("down")] * 3)
    with pytest.raises(DownloadError, match="8 bars fetched before the failure were saved"):
        fetch(out, ex, limit=4, attempts=3)
    assert_same_bars(out, BARS[:8])
    result = fetch(out, FakeExchange(), limit=4)
    assert result.n_new == 10
    assert_same_bars(out, BARS[:-1])


def test_non_network_exchange_error_fails_at_once(tmp_path):
    ex = FakeExchange(failures=[ccxt.BadSymbol("binance does not have market symbol BTC/USDT")])
    with pytest.raises(DownloadError, match="BadSymbol: binance does not have market"):
        fetch(tmp_path / "b.csv", ex)
    assert len(ex.calls) == 1 and not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize(("field", "value", "rule"), [
    (4, math.nan, "non-finite value"),  # NaN close
    (1, 0.0, "non-positive price"),  # zero open
    (3, -5.0, "non-positive price"),  # negative low
    (5, None, "non-finite value"),  # missing volume
    (2, "abc", "non-numeric value"),  # garbage high
])
def test_malformed_page_never_overwrites_good_data(tmp_path, field, value, rule):
    out = tmp_path / "BTC_1h.csv.gz"
    fetch(out, FakeExchange(now_ms=to_utc_ms("2018-02-07T20:30Z")))
    data = out.read_bytes()
    bars = [list(b) for b in BARS]
    bars[12][field] = value  # 2018-02-09T11:00Z
    with pytest.raises(DownloadError, match=f"refusing to write .*{rule}.*2018-02-09T11:00:00Z"):
        fetch(out, FakeExchange(bars=bars))
    assert out.read_bytes() == data and no_temp_files(tmp_path)


def test_malformed_row_shape_is_refused(tmp_path):
    bars = [list(b) for b in BARS]
    bars[3] = [bars[3][0], 1.0, 2.0]
    with pytest.raises(DownloadError, match="malformed bar"):
        fetch(tmp_path / "b.csv", FakeExchange(bars=bars))


@pytest.mark.parametrize("broken", ["fsync", "replace", "truncated"])
def test_write_failure_mid_way_leaves_the_old_file_intact(tmp_path, monkeypatch, broken):
    out = tmp_path / "BTC_1h.csv.gz"
    fetch(out, FakeExchange(now_ms=to_utc_ms("2018-02-07T20:30Z")))
    data = out.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if broken == "truncated":  # the bytes reach the disk cut short: the re-read catches it
        real = download.gzip.compress
        monkeypatch.setattr(download.gzip, "compress", lambda b, **kw: real(b[: len(b) // 2],
                                                                            **kw)[:-9])
    else:
        monkeypatch.setattr(os, broken, fail)
    with pytest.raises((OSError, DownloadError)):
        fetch(out, FakeExchange())
    monkeypatch.undo()
    assert out.read_bytes() == data and no_temp_files(tmp_path)
    assert_same_bars(out, BARS[:6])


def test_untrustworthy_existing_file_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "b.csv"
    out.write_text("timestamp,open,high,low,close,volume\n"
                   "2018-02-07T14:00:00Z,1,2,0.5,1.5,3\n2018-02-07T14:00:00Z,1,2,0.5,1.5,3\n")
    data = out.read_bytes()
    ex = FakeExchange()
    with pytest.raises(DownloadError, match="cannot be resumed.*duplicate timestamp"):
        fetch(out, ex)
    assert ex.calls == [] and out.read_bytes() == data


def test_output_format_matches_the_bundled_files(tmp_path):
    out = tmp_path / "b.csv"
    fetch(out, FakeExchange(), end="2018-02-07T16:00Z")
    assert out.read_text().splitlines() == [
        "timestamp,open,high,low,close,volume",
        "2018-02-07T14:00:00Z,8190.03,8360.0,8050.0,8200.12,3301.780861",
        "2018-02-07T15:00:00Z,8209.98,8330.0,8052.0,8169.0,2092.564393",
    ]
    gz1, gz2 = tmp_path / "1.csv.gz", tmp_path / "2.csv.gz"
    write_ohlcv_atomic(load_ohlcv(out), gz1)
    write_ohlcv_atomic(load_ohlcv(out), gz2)
    assert gz1.read_bytes() == gz2.read_bytes()  # deterministic gzip (no mtime)


def test_make_exchange_reads_keys_from_the_environment_only(monkeypatch, caplog):
    monkeypatch.setenv(download.API_KEY_ENV, "key-0123456789")
    monkeypatch.setenv(download.SECRET_ENV, "secret-9876543210")
    with caplog.at_level(logging.DEBUG):
        ex = make_exchange("binance")  # built, never asked for data
    assert ex.apiKey == "key-0123456789" and ex.secret == "secret-9876543210"
    assert ex.enableRateLimit is True and ex.rateLimit > 0
    assert "key-0123456789" not in caplog.text and "secret-9876543210" not in caplog.text
    monkeypatch.delenv(download.API_KEY_ENV)
    monkeypatch.delenv(download.SECRET_ENV)
    assert not make_exchange("binance").apiKey
    with pytest.raises(DownloadError, match="not a ccxt exchange id"):
        make_exchange("no_such_exchange")


def test_unsupported_timeframe_and_bad_inputs(tmp_path):
    assert timeframe_ms("1h") == HOUR_MS and timeframe_ms("15m") == 900_000
    assert timeframe_ms("1d") == 24 * HOUR_MS
    with pytest.raises(DownloadError, match="timeframe 'hourly'"):
        timeframe_ms("hourly")
    with pytest.raises(DownloadError, match="offers"):
        download_ccxt(tmp_path / "b.csv", client=FakeExchange(), timeframe="4h", start=FIRST)
    with pytest.raises(DownloadError, match="start: cannot parse 'yesterday-ish'"):
        download_ccxt(tmp_path / "b.csv", client=FakeExchange(), start="yesterday-ish")
    with pytest.raises(DownloadError, match=".csv or .csv.gz"):
        download_ccxt(tmp_path / "b.parquet", client=FakeExchange())
    assert to_utc_ms("2018-02-07T15:00+01:00") == to_utc_ms("2018-02-07T14:00Z")


# --------------------------------------------------------------------------------------------
# yfinance
# --------------------------------------------------------------------------------------------


def yahoo_frame() -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "yfinance_history_1h.csv", index_col="Datetime")
    frame.index = pd.to_datetime(frame.index, utc=True).tz_convert("America/New_York")
    frame.index.name = "Datetime"
    return frame


class FakeTicker:
    """Stands in for yfinance.Ticker: serves the fixture between whole days, like Yahoo."""

    frame = None
    calls: list = []
    failures: list = []

    def __init__(self, ticker):
        self.ticker = ticker

    def history(self, **kwargs):
        FakeTicker.calls.append((self.ticker, kwargs))
        if FakeTicker.failures:
            raise FakeTicker.failures.pop(0)
        start = pd.Timestamp(kwargs["start"]).tz_convert("America/New_York").normalize()
        end = pd.Timestamp(kwargs["end"])
        frame = FakeTicker.frame
        if frame.index.tz is None:  # a broken response: served as it is
            return frame
        return frame[(frame.index >= start) & (frame.index < end)]


@pytest.fixture
def fake_yahoo(monkeypatch):
    import yfinance

    FakeTicker.frame, FakeTicker.calls, FakeTicker.failures = yahoo_frame(), [], []
    monkeypatch.setattr(yfinance, "Ticker", FakeTicker)
    return FakeTicker


NDX = FIXTURES.parent.parent.parent / "data" / "NDX_1h_2024_2026.csv.gz"


def test_yfinance_bars_become_utc_bar_open_times(tmp_path, fake_yahoo):
    out = tmp_path / "IXIC_1h_yahoo.csv.gz"
    result = download_yfinance(out, ticker="^IXIC", start="2024-03-07", now="2024-03-13T00:00Z",
                               sleep=Sleeps())
    got = load_ohlcv(out)
    # the fixture was cut from the bundled NDX file (UTC bar opens) and shifted to New York time
    want = load_ohlcv(NDX).loc["2024-03-07":"2024-03-12 23:00"]
    pd.testing.assert_frame_equal(got, want, check_freq=False, check_index_type=False)
    assert pd.Timestamp("2024-03-08T14:30Z") in got.index  # 09:30 EST
    assert pd.Timestamp("2024-03-11T13:30Z") in got.index  # 09:30 EDT, after the DST change
    assert result.n_new == 28
    ticker, kwargs = fake_yahoo.calls[0]
    assert ticker == "^IXIC" and kwargs["interval"] == "1h"
    assert kwargs["auto_adjust"] is False and kwargs["actions"] is False


def test_yfinance_warns_and_clamps_a_start_older_than_730_days(tmp_path, fake_yahoo):
    with pytest.warns(UserWarning, match="only about the last 730 days"):
        download_yfinance(tmp_path / "x.csv", ticker="^IXIC", start="2020-01-01",
                          now="2024-03-13T00:00Z", sleep=Sleeps())
    start = pd.Timestamp(fake_yahoo.calls[0][1]["start"])
    assert start >= pd.Timestamp("2024-03-13T00:00Z") - pd.Timedelta(days=730)


def test_yfinance_resume_drops_forming_bar_then_appends_without_duplicates(tmp_path, fake_yahoo):
    out = tmp_path / "x.csv"
    # at 16:00Z the 15:30Z bar (10:30 EST) is still forming
    download_yfinance(out, ticker="^IXIC", start="2024-03-07", now="2024-03-08T16:00Z",
                      sleep=Sleeps())
    first = load_ohlcv(out)
    assert first.index[-1] == pd.Timestamp("2024-03-08T14:30Z") and len(first) == 8
    result = download_yfinance(out, ticker="^IXIC", now="2024-03-13T00:00Z", sleep=Sleeps())
    assert pd.Timestamp(fake_yahoo.calls[1][1]["start"]) == pd.Timestamp("2024-03-08T15:30Z")
    assert (result.n_existing, result.n_new) == (8, 20)  # Yahoo re-sent 03-08's first bar
    got = load_ohlcv(out)
    assert got.index.is_unique and got.index.is_monotonic_increasing and len(got) == 28
    pd.testing.assert_frame_equal(got.iloc[:8], first)


def test_yfinance_refuses_bad_or_empty_responses(tmp_path, fake_yahoo):
    out = tmp_path / "x.csv"
    fake_yahoo.frame = yahoo_frame().iloc[:0]
    with pytest.raises(DownloadError, match="Yahoo returned no bars"):
        download_yfinance(out, ticker="^IXIC", now="2024-03-13T00:00Z", sleep=Sleeps())
    assert not out.exists()
    frame = yahoo_frame()
    frame.iloc[5, frame.columns.get_loc("Close")] = np.nan  # one price missing: refused whole
    fake_yahoo.frame = frame
    with pytest.raises(DownloadError, match="refusing to write.*non-finite.*2024-03-07T19:30"):
        download_yfinance(out, ticker="^IXIC", now="2024-03-13T00:00Z", sleep=Sleeps())
    assert not out.exists() and no_temp_files(tmp_path)
    frame = yahoo_frame()
    frame.iloc[5, :4] = np.nan  # a placeholder row with no prices at all: dropped, logged
    fake_yahoo.frame = frame
    result = download_yfinance(out, ticker="^IXIC", now="2024-03-13T00:00Z", sleep=Sleeps())
    assert result.n_new == 27
    fake_yahoo.frame = yahoo_frame().tz_localize(None)
    with pytest.raises(DownloadError, match="timezone-aware"):
        download_yfinance(tmp_path / "y.csv", ticker="^IXIC", now="2024-03-13T00:00Z",
                          sleep=Sleeps())


def test_yfinance_retries_connection_errors(tmp_path, fake_yahoo):
    fake_yahoo.failures = [ConnectionError("reset by peer")]
    sleeps = Sleeps()
    download_yfinance(tmp_path / "x.csv", ticker="^IXIC", now="2024-03-13T00:00Z",
                      backoff_s=0.25, sleep=sleeps)
    assert sleeps == [0.25] and len(fake_yahoo.calls) == 2
    fake_yahoo.failures = [ConnectionError("down")] * 2
    with pytest.raises(DownloadError, match="failed after 2 attempts: ConnectionError"):
        download_yfinance(tmp_path / "z.csv", ticker="^IXIC", now="2024-03-13T00:00Z",
                          attempts=2, sleep=Sleeps())


def test_default_yfinance_filenames_do_not_clash_with_bundled_files():
    names = [download.default_yfinance_filename(t) for t in download.YFINANCE_TICKERS]
    assert names == ["GSPC_1h_yahoo.csv.gz", "DX_Y_NYB_1h_yahoo.csv.gz", "IXIC_1h_yahoo.csv.gz"]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cli():
    path = Path(__file__).resolve().parents[2] / "scripts" / "download_data.py"
    spec = importlib.util.spec_from_file_location("download_data_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_ccxt_downloads_and_reports(tmp_path, cli, monkeypatch, capsys):
    ids = []
    monkeypatch.setattr(download, "make_exchange",
                        lambda exchange_id: ids.append(exchange_id)
                        or FakeExchange(enable_rate_limit=True))
    out = tmp_path / "BTC_1h.csv.gz"
    code = cli.main(["ccxt", "--out", str(out), "--exchange", "binance", "--symbol", "BTC/USDT",
                     "--start", "2018-02-07T14:00Z", "--limit", "6"])
    assert code == 0 and ids == ["binance"]
    assert "18 new bars" in capsys.readouterr().out
    assert_same_bars(out, BARS[:-1])


def test_cli_failure_exits_non_zero_with_a_message(tmp_path, cli, capsys):
    code = cli.main(["ccxt", "--out", str(tmp_path / "b.csv"), "--exchange", "nosuchexchange"])
    assert code == 1
    assert "error: --exchange 'nosuchexchange': not a ccxt exchange id" in capsys.readouterr().err


def test_cli_yfinance_help_states_the_730_day_limit(cli, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main(["yfinance", "--help"])
    assert info.value.code == 0
    assert "730" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as info:
        cli.main(["yfinance", "--ticker", "^GSPC", "--ticker", "^IXIC", "--out",
                  str(tmp_path / "x.csv")])
    assert info.value.code == 2


def test_cli_yfinance_writes_one_file_per_ticker(tmp_path, cli, fake_yahoo, monkeypatch, capsys):
    real = download.download_yfinance
    monkeypatch.setattr(download, "download_yfinance",
                        lambda out, **kw: real(out, now="2024-03-13T00:00Z", sleep=Sleeps(), **kw))
    code = cli.main(["yfinance", "--out-dir", str(tmp_path), "--ticker", "^GSPC",
                     "--ticker", "^IXIC", "--start", "2024-03-11"])
    assert code == 0
    assert [c[0] for c in fake_yahoo.calls] == ["^GSPC", "^IXIC"]
    assert len(load_ohlcv(tmp_path / "GSPC_1h_yahoo.csv.gz")) == 14
    assert len(load_ohlcv(tmp_path / "IXIC_1h_yahoo.csv.gz")) == 14


def test_a_bar_served_twice_or_out_of_order_is_stored_once(tmp_path):
    """A page holding a bar twice (the same values) or bars out of order is stored once and in
    order; two different bars with one timestamp are refused, naming it, the file unchanged."""

    class Repeating(FakeExchange):
        def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
            page = super().fetch_ohlcv(symbol, timeframe, since, limit)
            return [page[1], page[0], *page] if len(page) > 1 else page

    out = tmp_path / "b.csv"
    fetch(out, Repeating(), limit=5)
    assert_same_bars(out, BARS[:-1])

    class Conflicting(FakeExchange):
        def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None):
            page = super().fetch_ohlcv(symbol, timeframe, since, limit)
            if not page:
                return page
            other = list(page[0])
            other[4] = other[4] * 1.01 if other[4] * 1.01 <= other[2] else other[3]
            return [page[0], other, *page[1:]]

    data = out.read_bytes()
    new = tmp_path / "c.csv"
    with pytest.raises(DownloadError, match=r"duplicate timestamp 2018-02-07T14:00"):
        fetch(new, Conflicting(), limit=5)
    assert not new.exists() and out.read_bytes() == data
