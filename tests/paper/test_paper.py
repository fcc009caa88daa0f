"""Paper trading: replay equals `cryptorl evaluate` (with and without a kill, kill -9 included),
live bars from a fake ccxt exchange (a gap, a duplicate, a malformed bar), the book's refusals
and the status. All offline: the exchange is an object with ccxt's fetch_ohlcv.

One tiny walk-forward run on a planted market read from files (module fixture, ~20 s) serves
every test.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config, with_overrides
from cryptorl_jax.core.names import BUNDLED_FILES
from cryptorl_jax.market import load_market
from cryptorl_jax.paper.book import PaperBook, PaperBookError
from cryptorl_jax.paper.feeds import CcxtFeed, FeedError, feeds_for, parse_sources
from cryptorl_jax.paper.session import live, replay
from cryptorl_jax.paper.status import format_status, paper_status
from cryptorl_jax.walkforward import driver
from cryptorl_jax.walkforward.evaluate import evaluate_window
from tests.walkforward.test_driver import TINY_WFO

ROOT = Path(__file__).resolve().parents[2]
HOUR = pd.Timedelta(hours=1)
HOUR_MS = 3_600_000
TOL = 1e-9


@pytest.fixture(scope="module")
def paper_run(tiny_planted_run):
    """The session's tiny run on a planted market read from files (tests/conftest.py)."""
    return tiny_planted_run


def _assert_equals_evaluate(run_dir, ledger, market, tmp_path, from_run_state=None):
    """The book's hours equal evaluate's over the same hours from the same start: a replay's
    (by default, inside the test window, the run's own book) or flat (a live book:
    `from_run_state=False`)."""
    ev = evaluate_window(run_dir, 0, str(ledger.index[0]), str(ledger.index[-1]),
                         market=market, out_dir=tmp_path / "eval", tearsheet=False,
                         from_run_state=from_run_state)
    oos = ev.oos
    np.testing.assert_array_equal(ledger.index, oos.index)
    for col in ("exposure", "strategy", "seed_0", "seed_1", "action_0", "action_1", "turnover",
                "cost", "financing", "leverage", "benchmark"):
        np.testing.assert_allclose(ledger[col].to_numpy(), oos[col].to_numpy(), rtol=0,
                                   atol=TOL, err_msg=col)
    np.testing.assert_allclose(ledger["nav"].to_numpy(),
                               np.cumprod(1.0 + oos["strategy"].to_numpy()), rtol=0, atol=TOL)
    assert (ledger["turnover"] > 0).any()  # the agents trade: the comparison is not vacuous
    return oos


def test_replay_equals_evaluate_and_is_not_booked_twice(paper_run, tmp_path):
    run_dir, _, market, test = paper_run
    start, end = test[3], test[27]
    res = replay(run_dir, str(start), str(end), market=market, book_dir=tmp_path / "book")
    assert res.booked == 25 and len(res.ledger) == 25
    _assert_equals_evaluate(run_dir, res.ledger, market, tmp_path)
    target = json.loads((tmp_path / "book" / "target.json").read_text())
    assert target["time"] == end.isoformat() and len(target["seed_exposures"]) == 2
    # running it again books nothing: every hour is already in the book
    again = replay(run_dir, str(start), str(end), market=market, book_dir=tmp_path / "book")
    assert again.booked == 0
    pd.testing.assert_frame_equal(again.ledger, res.ledger)
    # a longer replay into the same book continues it
    with pytest.raises(PaperBookError, match="another paper session"):
        replay(run_dir, str(test[4]), str(end), market=market, book_dir=tmp_path / "book")


def test_replay_killed_in_the_middle_continues_exactly(paper_run, tmp_path):
    run_dir, _, market, test = paper_run
    start, end = test[40], test[60]
    booked: list[pd.Timestamp] = []

    def kill_after_7(hour):
        booked.append(hour)
        if len(booked) == 7:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        replay(run_dir, str(start), str(end), market=market, book_dir=tmp_path / "b",
               after_hour=kill_after_7)
    assert len(PaperBook(tmp_path / "b").hours()) == 7
    res = replay(run_dir, str(start), str(end), market=market, book_dir=tmp_path / "b")
    assert res.booked == 21 - 7
    _assert_equals_evaluate(run_dir, res.ledger, market, tmp_path)


def test_replay_survives_kill_9(paper_run, tmp_path):
    run_dir, _, market, test = paper_run
    start, end = test[60], test[80]
    book = PaperBook(tmp_path / "k9")
    code = ("import sys; from cryptorl_jax.cli import main; sys.exit(main(['paper', '--run', "
            f"{str(run_dir)!r}, '--replay', {str(start)!r}, {str(end)!r}, '--book', "
            f"{str(book.dir)!r}]))")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            state = book.state() if book.exists() else None
            if state is not None and state.hours >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    held = len(book.hours())
    assert 3 <= held < 21
    res = replay(run_dir, str(start), str(end), market=market, book_dir=book.dir)
    assert res.booked == 21 - held
    _assert_equals_evaluate(run_dir, res.ledger, market, tmp_path)


# --------------------------------------------------------------------------------------------
# Live bars from a fake exchange
# --------------------------------------------------------------------------------------------


def _read_bars(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, compression="gzip")


def _write_bars(path: Path, frame: pd.DataFrame) -> None:
    with gzip.open(path, "wt") as f:
        frame.to_csv(f, index=False)


class FakeExchange:
    """ccxt's fetch_ohlcv over recorded bars, with a clock; `broken` maps an open time (ms) to
    a replacement row served instead of the true bar, `missing` bars are never served and
    `repeat` serves each page's first bar twice."""

    id = "fakeex"
    has = {"fetchOHLCV": True}
    timeframes = {"1h": "1h"}
    enableRateLimit = True
    rateLimit = 0

    def __init__(self, bars: dict[str, list[list[float]]], now_ms: int):
        self.bars, self.now_ms = bars, now_ms
        self.broken: dict[int, list[float]] = {}
        self.missing: set[int] = set()
        self.repeat = False

    def milliseconds(self) -> int:
        return self.now_ms

    def fetch_ohlcv(self, symbol, timeframe="1h", since=None, limit=None):
        if symbol not in self.bars:
            import ccxt

            raise ccxt.BadSymbol(f"fakeex does not have market symbol {symbol}")
        rows = [list(self.broken.get(b[0], b)) for b in self.bars[symbol]
                if since <= b[0] <= self.now_ms and b[0] not in self.missing]
        if self.repeat and rows:
            rows = [rows[0], *rows]
        return rows[:limit]


@pytest.fixture
def live_setup(paper_run, tmp_path):
    """The run's data cut at an hour inside the test window, the rest of BTC and ETH served by
    a fake exchange whose clock stands at the cut."""
    run_dir, data, market, test = paper_run
    cut = test[30]  # the last bar CLOSE in the files: its open is cut - 1h
    live_dir = tmp_path / "live_data"
    shutil.copytree(data, live_dir)
    served = {}
    for name, symbol in (("BTC", "BTC/USDT"), ("ETH", "ETH/USDT")):
        frame = _read_bars(live_dir / f"{name}_1h.csv.gz")
        opens = pd.to_datetime(frame["timestamp"], utc=True)
        _write_bars(live_dir / f"{name}_1h.csv.gz", frame[opens < cut])
        later = frame[opens >= cut]
        cols = ["timestamp", "open", "high", "low", "close", "volume"]
        served[symbol] = [[int(pd.Timestamp(t).value // 10**6), o, h, lo, c, v]
                          for t, o, h, lo, c, v in later[cols].itertuples(index=False)]
    for name in ("SPY", "DXY"):  # context assets without a live source: they go stale
        frame = _read_bars(live_dir / f"{name}_1h.csv.gz")
        _write_bars(live_dir / f"{name}_1h.csv.gz",
                    frame[pd.to_datetime(frame["timestamp"], utc=True) < cut])
    exchange = FakeExchange(served, now_ms=int(cut.value // 10**6))
    agent_cfg = with_overrides(load_config(run_dir / "config.yaml"),
                               [f"data.data_dir={live_dir}", "data.end=null"])
    feeds = feeds_for(agent_cfg, exchange="fakeex", client=exchange,
                      sources=parse_sources(["SPY=none", "DXY=none"]))
    return run_dir, live_dir, exchange, feeds, cut


def _cycle(run_dir, live_dir, feeds, book):
    return live(run_dir, feeds, book_dir=book, overrides=(f"data.data_dir={live_dir}",))


def test_live_bars_with_a_gap_a_duplicate_and_a_malformed_bar(live_setup, tmp_path):
    run_dir, live_dir, exchange, feeds, cut = live_setup
    assert [f.name for f in feeds] == ["BTC", "ETH"]
    book = tmp_path / "book"
    first = _cycle(run_dir, live_dir, feeds, book)
    assert first.booked == 0 and PaperBook(book).state().time == cut  # first decision
    assert PaperBook(book).meta()["start"] == (cut + HOUR).isoformat()
    # an hour later: one bar closes, served twice in the page
    exchange.repeat = True
    exchange.now_ms += HOUR_MS
    assert _cycle(run_dir, live_dir, feeds, book).booked == 1
    exchange.repeat = False
    # the same clock again: nothing new, nothing booked twice
    assert _cycle(run_dir, live_dir, feeds, book).booked == 0
    # a malformed bar (high below low) is refused, naming the source and the bar; nothing booked
    bad_open = int((cut + HOUR).value // 10**6)
    good = next(b for b in exchange.bars["BTC/USDT"] if b[0] == bad_open)
    exchange.broken[bad_open] = [bad_open, good[1], good[3] * 0.9, good[3], good[4], good[5]]
    exchange.now_ms += HOUR_MS
    before = (live_dir / "BTC_1h.csv.gz").read_bytes()
    stamp = pd.Timestamp(bad_open, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(FeedError, match=rf"feed BTC .*high below.* at row \d+ \(timestamp "
                                        rf"{stamp}\).*the file is unchanged"):
        _cycle(run_dir, live_dir, feeds, book)
    assert (live_dir / "BTC_1h.csv.gz").read_bytes() == before
    assert len(PaperBook(book).hours()) == 1
    # the exchange corrects it; one BTC bar never comes (a gap), the clock moves 3 more hours
    del exchange.broken[bad_open]
    gap_open = bad_open + 2 * HOUR_MS
    exchange.missing.add(gap_open)
    exchange.now_ms += 3 * HOUR_MS
    res = _cycle(run_dir, live_dir, feeds, book)
    assert res.booked == 4  # caught up: every closed hour, in order, the gap hour filled
    ledger = res.ledger
    gap_close = pd.Timestamp(gap_open, unit="ms", tz="UTC") + HOUR
    # the filled bar cannot trade: the position decided at its close is the drifted one
    assert not ledger.loc[gap_close + HOUR, "tradable"]
    assert ledger.loc[gap_close + HOUR, "turnover"] == 0.0
    # live equals the backtest of the same hours on the same bars
    market = load_market(with_overrides(load_config(run_dir / "config.yaml"),
                                        [f"data.data_dir={live_dir}", "data.end=null",
                                         "data.cache_dir=null"]).data, end_on="traded")
    _assert_equals_evaluate(run_dir, ledger, market, tmp_path, from_run_state=False)
    # each live cycle refreshed status.json (without the backtest, left to --status)
    cycle = json.loads((book / "status.json").read_text())
    assert cycle["hours"] == 5 and "tracking" not in cycle
    # status: position, NAV, P&L, costs and the tracking against the backtest
    status = paper_status(run_dir, book, market=market)
    assert status["hours"] == 5 and abs(status["tracking"]["nav_difference"]) < TOL
    assert status["nav"] == pytest.approx(ledger["nav"].iloc[-1], abs=0)
    text = format_status(status)
    assert "exposure" in text and "backtest of the same 5 hours" in text
    assert (book / "equity.png").is_file() and (book / "status.json").is_file()


def test_live_book_and_feed_refusals(paper_run, live_setup, tmp_path):
    run_dir, live_dir, exchange, feeds, cut = live_setup
    with pytest.raises(ValueError, match="NAME=ccxt:SYMBOL"):
        parse_sources(["SPY"])
    cfg = load_config(run_dir / "config.yaml")
    with pytest.raises(ValueError, match="QQQ"):
        feeds_for(cfg, sources={"QQQ": "none"})
    _cycle(run_dir, live_dir, feeds, tmp_path / "b")
    # another segment or start into the same book is refused, naming both
    with pytest.raises(PaperBookError, match="start"):
        replay(run_dir, str(cut - 10 * HOUR), str(cut), book_dir=tmp_path / "b",
               overrides=(f"data.data_dir={live_dir}",))
    # a feed that fails books nothing and says which feed
    failing = CcxtFeed("BTC", live_dir / "BTC_1h.csv.gz", "NOPE/USDT", "fakeex", exchange)
    exchange.now_ms += HOUR_MS
    with pytest.raises(FeedError, match="NOPE/USDT.*BadSymbol"):
        _cycle(run_dir, live_dir, [failing], tmp_path / "b")
    assert len(PaperBook(tmp_path / "b").hours()) == 0


def test_cli_status_and_report_section(paper_run, tmp_path, capsys):
    from cryptorl_jax.cli import main

    run_dir, _, market, test = paper_run
    # a copy of the run (the session's run is shared: its report.html stays as written)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("paper*"))
    run_dir = copy
    # a live book in <run>/paper, made by replaying into it
    replay(run_dir, str(test[10]), str(test[14]), market=market, book_dir=run_dir / "paper")
    page = (run_dir / "report.html").read_text()
    assert main(["paper", "--run", str(run_dir), "--status"]) == 0
    out = capsys.readouterr().out
    assert "5 hours booked" in out and "backtest of the same 5 hours" in out
    # reading the status changes neither the run's report nor its book
    assert (run_dir / "report.html").read_text() == page
    assert not (run_dir / "paper" / "status.json").exists()
    assert (run_dir.parent / "run-eval" / "paper-status" / "status.json").is_file()
    # --update-report opts in: the book gets the status and the report its paper section
    assert main(["paper", "--run", str(run_dir), "--status", "--update-report"]) == 0
    assert (run_dir / "paper" / "status.json").is_file()
    html = (run_dir / "report.html").read_text()
    assert "Paper trading (segment 0" in html
    assert main(["paper", "--run", str(tmp_path / "nope"), "--status"]) == 2
    with pytest.raises(SystemExit):
        main(["paper", "--run", str(run_dir), "--every", "1x"])


def test_every_hour_loop_and_a_feed_error_mid_loop(live_setup, tmp_path):
    """--every: one cycle per bar close (+ delay); a cycle whose feed fails books nothing and
    the loop goes on; the next cycle catches the missed hour up."""
    run_dir, live_dir, exchange, feeds, cut = live_setup
    waits: list[float] = []
    bad_open = int((cut + 2 * HOUR).value // 10**6)

    def sleep(seconds):
        waits.append(seconds)
        exchange.now_ms += HOUR_MS
        if len(waits) == 2:  # the bar that closes in cycle 3 arrives broken
            good = next(b for b in exchange.bars["BTC/USDT"] if b[0] == bad_open)
            exchange.broken[bad_open] = [bad_open, -1.0, *good[2:]]
        elif len(waits) == 3:
            exchange.broken.clear()

    res = live(run_dir, feeds, book_dir=tmp_path / "b", overrides=(f"data.data_dir={live_dir}",),
               every_s=3600.0, delay_s=60.0, max_cycles=4,
               clock=lambda: exchange.now_ms / 1000.0, sleep=sleep)
    # the clock stands at a bar close: each wait is one hour plus the delay
    assert waits == [3660.0] * 3
    # cycle 1 decides, cycle 2 books one hour, cycle 3 books nothing, cycle 4 catches up two
    assert res.booked == 3
    assert list(res.ledger.index) == [cut + HOUR, cut + 2 * HOUR, cut + 3 * HOUR]


def test_warnings_for_an_old_agent_and_unseen_feature_ranges(paper_run, tmp_path):
    run_dir, _, market, test = paper_run
    after = test[-1] + 200 * HOUR
    res = replay(run_dir, str(after), str(after + 2 * HOUR), market=market,
                 book_dir=tmp_path / "old")
    assert res.booked == 3
    assert any("retrain" in w and "segment 0" in w for w in res.warnings)
    assert any("outside the ranges seen in segment 0's train rows" in w for w in res.warnings)


def test_live_bars_extend_copies_of_the_runs_data(paper_run, tmp_path):
    """By default the live feeds write into <book>/data/, copies of the run's files, never into
    the files the run was trained on; an explicit --data-dir is used in place."""
    from cryptorl_jax.paper.session import live_data_dir

    run_dir, data, _, _ = paper_run
    d = live_data_dir(run_dir, tmp_path / "book")
    assert d == tmp_path / "book" / "data"
    assert sorted(p.name for p in d.iterdir()) == sorted(BUNDLED_FILES.values())
    assert (d / "BTC_1h.csv.gz").read_bytes() == (data / "BTC_1h.csv.gz").read_bytes()
    (d / "BTC_1h.csv.gz").write_bytes(b"extended")  # a later call keeps the extended copy
    assert live_data_dir(run_dir, tmp_path / "book") == d
    assert (d / "BTC_1h.csv.gz").read_bytes() == b"extended"
    assert live_data_dir(run_dir, tmp_path / "other", tmp_path / "mine") == tmp_path / "mine"


def test_cli_once_books_live_bars_into_the_run(live_setup, monkeypatch, capsys):
    """`cryptorl paper --once` end to end: feeds from the run's config (the exchange object
    stands in for ccxt's), the run's data copied into <book>/data and extended there, a first
    decision, then one booked hour; the files the run was trained on are left alone."""
    from cryptorl_jax.cli import main
    from cryptorl_jax.market import download

    run_dir, _, exchange, _, _ = live_setup
    monkeypatch.setattr(download, "make_exchange", lambda exchange_id="binance": exchange)
    trained = Path(load_config(run_dir / "config.yaml").data.data_dir)
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    book = run_dir / "paper_cli"
    args = ["paper", "--run", str(run_dir), "--book", str(book), "--once", "--exchange",
            "fakeex", "--source", "SPY=none", "--source", "DXY=none"]
    exchange.now_ms = 2**62  # no bar after the copied files' last one yet
    assert main(args) == 0
    state = PaperBook(book).state()
    assert state is not None and len(PaperBook(book).hours()) == 0
    assert PaperBook(book).meta()["data_dir"] == str((book / "data").resolve())
    # the bar that opens at the book's last close arrives for both crypto assets
    open_ms = int(state.time.value // 10**6)
    exchange.bars = {sym: [[open_ms, *bars[0][1:]]] for sym, bars in exchange.bars.items()}
    exchange.now_ms = open_ms + HOUR_MS
    assert main(args) == 0
    assert "1 hour(s) booked" in capsys.readouterr().out
    assert list(PaperBook(book).hours().index) == [state.time + HOUR]
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "random", "pretrained-finetune"])
def test_replay_equals_evaluate_for_every_encoder_mode(mode, paper_run, tmp_path):
    """The other encoder modes' agents (their own walk-forward run) replay as evaluate."""
    _, data, market, _ = paper_run
    cfg = load_config(None, [*TINY_WFO, "run_name=paper", "wfo.max_segments=1",
                             f"data.data_dir={data}", "data.cache_dir=null",
                             "output.plots=false", f"encoder.mode={mode}"])
    run_dir = tmp_path / "run"
    driver.run(cfg, run_dir)
    test = pd.read_parquet(run_dir / "segment_0" / "oos.parquet").index
    res = replay(run_dir, str(test[5]), str(test[16]), market=market, book_dir=tmp_path / "b")
    assert res.booked == 12
    _assert_equals_evaluate(run_dir, res.ledger, market, tmp_path)
