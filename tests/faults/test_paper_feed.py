"""Paper trading's live feed at fault (issue 41): an exchange that serves a bar from the future,
bars out of order, a page that times out mid-download, a clock that jumps backwards and empty
pages for hours.

Each case drives `paper.session.live` in process with a fake clock and a fake ccxt exchange
(tests/paper's `FakeExchange`, with the faults added here) over tests/paper's tiny trained run
(its module fixtures, imported: one training for this module). Each checks what the user sees
(a warning naming the bar and the clock, or the feed and the page), that the book's hours
strictly increase with no hour booked twice, that the hours booked before the fault are left
exactly as they were, and that the ledger equals `cryptorl evaluate` over the booked hours.
"""

from __future__ import annotations

import logging
import shutil

import ccxt
import pandas as pd
import pytest

from cryptorl_jax.config import load_config, with_overrides
from cryptorl_jax.market import load_market
from cryptorl_jax.market.download import write_ohlcv_atomic
from cryptorl_jax.market.loader import load_ohlcv
from cryptorl_jax.paper.book import PaperBook
from cryptorl_jax.paper.engine import ledger_frame
from cryptorl_jax.paper.feeds import FeedError
from cryptorl_jax.paper.session import live
from tests.paper.test_paper import (  # noqa: F401 (paper_run, live_setup: fixtures)
    HOUR,
    HOUR_MS,
    FakeExchange,
    _assert_equals_evaluate,
    _read_bars,
    _write_bars,
    live_setup,
    paper_run,
)

SYMBOLS = ("BTC/USDT", "ETH/USDT")


class FaultyExchange(FakeExchange):
    """`FakeExchange` with a feed's faults, per call of fetch_ohlcv:
    `ahead`: bars opening up to that many hours after the exchange's clock are served too (bars
    from the future); `page`: at most that many bars a call (a paginated catch-up); `reverse`:
    each page in reverse time order; `old`: bars served on every page although they open before
    `since` (out of order across polls); `outage`: symbols answered with an empty page;
    `timeout_after[symbol]`: pages served before every later call raises ccxt.RequestTimeout;
    `transient[symbol]`: calls that raise RequestTimeout before the next one succeeds;
    `cut_page[symbol]`: the page (counted from 1) whose last bar is cut to three fields."""

    def __init__(self, base: FakeExchange):
        super().__init__(base.bars, base.now_ms)
        self.ahead, self.page, self.reverse = 0, None, False
        self.old: list[int] = []
        self.outage: set[str] = set()
        self.timeout_after: dict[str, int] = {}
        self.transient: dict[str, int] = {}
        self.cut_page: dict[str, int] = {}
        self.served: dict[str, int] = {}

    def fetch_ohlcv(self, symbol, timeframe="1h", since=None, limit=None):
        if self.transient.get(symbol, 0) > 0:
            self.transient[symbol] -= 1
            raise ccxt.RequestTimeout("fakeex GET /api/v3/klines: read timed out (transient)")
        served = self.served.get(symbol, 0)
        if symbol in self.timeout_after and served >= self.timeout_after[symbol]:
            raise ccxt.RequestTimeout("fakeex GET /api/v3/klines: read timed out")
        if symbol in self.outage:
            return []
        until = self.now_ms + self.ahead * HOUR_MS
        rows = [list(b) for b in self.bars[symbol]
                if since <= b[0] <= until and b[0] not in self.missing]
        rows = rows[:min(limit, self.page or limit)]
        if self.reverse:
            rows = rows[::-1]
        rows += [list(b) for b in self.bars[symbol] if b[0] in self.old]
        self.served[symbol] = served + 1
        if self.cut_page.get(symbol) == served + 1 and rows:
            rows[-1] = rows[-1][:3]
        return rows


@pytest.fixture
def feed(live_setup):  # noqa: F811 (the imported fixture)
    """The live setup with a `FaultyExchange` behind both feeds; the waits between a page's
    retries are recorded, not slept."""
    run_dir, live_dir, exchange, feeds, cut = live_setup
    ex = FaultyExchange(exchange)
    retry_waits: list[float] = []
    for f in feeds:
        f.client, f.sleep = ex, retry_waits.append
    return run_dir, live_dir, ex, feeds, cut, retry_waits


def _once(setup, book):
    run_dir, live_dir, ex, feeds, _, _ = setup
    return live(run_dir, feeds, book_dir=book, overrides=(f"data.data_dir={live_dir}",),
                clock=lambda: ex.now_ms / 1000.0)


def _loop(setup, book, events):
    """`--every 1h` for len(events) + 1 cycles; after cycle i the clock and the exchange are
    moved by events[i](exchange). Returns the session, the waits slept and the hours the book
    held after each cycle."""
    run_dir, live_dir, ex, feeds, _, _ = setup
    waits, held = [], []

    def sleep(seconds):
        waits.append(seconds)
        held.append(list(PaperBook(book).hours().index))
        events[len(waits) - 1](ex)

    res = live(run_dir, feeds, book_dir=book, overrides=(f"data.data_dir={live_dir}",),
               every_s=3600.0, delay_s=60.0, max_cycles=len(events) + 1,
               clock=lambda: ex.now_ms / 1000.0, sleep=sleep)
    held.append(list(PaperBook(book).hours().index))
    return res, waits, held


def _market(run_dir, live_dir):
    cfg = with_overrides(load_config(run_dir / "config.yaml"),
                         [f"data.data_dir={live_dir}", "data.end=null", "data.cache_dir=null"])
    return load_market(cfg.data, end_on="traded")


def _ms(t: pd.Timestamp) -> int:
    return int(t.value // 10**6)


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_book(setup, book, hours, before, tmp_path):
    """The book holds exactly `hours` (strictly increasing, each once), the rows of `before`
    (the hours booked before the fault) unchanged, and equals evaluate on today's files."""
    run_dir, live_dir = setup[0], setup[1]
    booked = PaperBook(book).hours()
    assert list(booked.index) == hours
    assert booked.index.is_monotonic_increasing and booked.index.is_unique
    pd.testing.assert_frame_equal(booked.loc[before.index], before)
    ledger = ledger_frame(PaperBook(book))
    _assert_equals_evaluate(run_dir, ledger, _market(run_dir, live_dir), tmp_path,
                            from_run_state=False)
    return ledger


# --------------------------------------------------------------------------------------------
# a bar from the future
# --------------------------------------------------------------------------------------------


def test_a_bar_from_the_future_is_never_booked(feed, tmp_path, caplog):
    """An exchange serving bars past its clock: they are not stored (a warning names the first
    one and the clock). A bar in the data file that has not closed by the clock (an updater of
    one's own wrote the forming bar): not booked, a warning names its close and the clock, and
    it is booked in order once the clock passes its close."""
    run_dir, live_dir, ex, feeds, cut, _ = feed
    book = tmp_path / "book"
    assert _once(feed, book).booked == 0  # the first decision, at the close `cut`
    ex.ahead = 3
    ex.now_ms += 2 * HOUR_MS
    with caplog.at_level(logging.WARNING):
        res = _once(feed, book)
    assert res.booked == 2
    future = [r.getMessage() for r in caplog.records if "stamped after the clock" in r.message]
    assert len(future) == 2  # one per symbol
    now = cut + 2 * HOUR
    assert f"the first opens at {_iso(now + HOUR)}, the clock is {_iso(now)}" in future[0]
    for name in ("BTC", "ETH"):  # the still-forming bar (open = now) and the future ones: out
        assert load_ohlcv(live_dir / f"{name}_1h.csv.gz").index[-1] == now - HOUR
    before = PaperBook(book).hours()

    # the forming bar (opened at the clock, closes an hour later) written into the files
    for name, sym in (("BTC", "BTC/USDT"), ("ETH", "ETH/USDT")):
        path = live_dir / f"{name}_1h.csv.gz"
        bar = next(b for b in ex.bars[sym] if b[0] == _ms(now))
        frame = load_ohlcv(path)
        frame.loc[now] = bar[1:6]
        write_ohlcv_atomic(frame, path)
    res = _once(feed, book)
    assert res.booked == 0
    said = (f"the BTC bar closing at {now + HOUR} (opened {now}) is after the clock {now}: a "
            f"bar from the future or not yet closed; 1 such hour(s) not booked until the clock "
            f"passes their close")
    assert said in res.warnings
    assert len(PaperBook(book).hours()) == 2

    # the clock passes its close and the next one: both booked, in order
    ex.ahead = 0
    ex.now_ms += 2 * HOUR_MS
    res = _once(feed, book)
    assert res.booked == 2 and not any("after the clock" in w for w in res.warnings)
    _check_book(feed, book, [cut + k * HOUR for k in range(1, 5)], before, tmp_path)


# --------------------------------------------------------------------------------------------
# bars out of order
# --------------------------------------------------------------------------------------------


def test_bars_out_of_order_are_booked_once_in_time_order(feed, tmp_path):
    """Pages served newest first are stored and booked in time order; a bar withheld and then
    served late, before the poll's start, is not stored (the files are only appended from their
    last bar): its hour was booked as a gap (filled, not traded) and stays so, as the backtest
    on the same files has it. A data file whose rows are out of order is refused, naming it."""
    run_dir, live_dir, ex, feeds, cut, _ = feed
    book = tmp_path / "book"
    _once(feed, book)
    ex.page, ex.reverse = 2, True
    late = cut + HOUR  # opens at cut + 1h, closes at cut + 2h
    ex.missing.add(_ms(late))
    ex.now_ms += 4 * HOUR_MS
    assert _once(feed, book).booked == 4
    before = PaperBook(book).hours()
    assert not before.loc[late + 2 * HOUR, "tradable"]  # the gap's bar was filled: no trade
    # the withheld bar is now served on every page, out of order (before the poll's start)
    ex.missing.clear()
    ex.old = [_ms(late)]
    ex.now_ms += 2 * HOUR_MS
    assert _once(feed, book).booked == 2
    btc = load_ohlcv(live_dir / "BTC_1h.csv.gz")
    assert late not in btc.index and btc.index.is_monotonic_increasing
    ledger = _check_book(feed, book, [cut + k * HOUR for k in range(1, 7)], before, tmp_path)
    assert ledger.loc[late + 2 * HOUR, "turnover"] == 0.0
    # a file whose last two rows were swapped (an updater of one's own) is refused, unchanged
    path = live_dir / "ETH_1h.csv.gz"
    good = path.read_bytes()
    frame = _read_bars(path)
    _write_bars(path, frame.iloc[[*range(len(frame) - 2), len(frame) - 1, len(frame) - 2]])
    swapped = path.read_bytes()
    ex.now_ms += HOUR_MS
    with pytest.raises(FeedError, match=rf"feed ETH .*{path}.*timestamps not sorted"):
        _once(feed, book)
    assert path.read_bytes() == swapped and len(PaperBook(book).hours()) == 6
    path.write_bytes(good)


# --------------------------------------------------------------------------------------------
# a page that times out mid-download
# --------------------------------------------------------------------------------------------


def test_a_page_timing_out_mid_download_books_nothing_until_it_arrives(feed, tmp_path, caplog):
    """A catch-up of two-bar pages whose second page times out (every retry): the whole bars
    fetched before are saved, nothing is booked that cycle, the error names the feed, the page
    and the retries; next cycle a page cut short (a bar of three fields) does the same for ETH,
    while a single timeout is retried within the cycle; the cycle after books every hour in
    order, exactly as if the pages had arrived late."""
    run_dir, live_dir, ex, feeds, cut, retry_waits = feed
    book = tmp_path / "book"
    seen = {}

    def one_hour(e):
        e.now_ms += HOUR_MS

    def time_out(e):
        seen["before"] = PaperBook(book).hours()
        e.now_ms += 4 * HOUR_MS
        e.page = 2
        e.timeout_after = {"BTC/USDT": e.served.get("BTC/USDT", 0) + 1}

    def cut_short(e):
        seen["btc"] = load_ohlcv(live_dir / "BTC_1h.csv.gz").index[-1]
        seen["eth"] = load_ohlcv(live_dir / "ETH_1h.csv.gz").index[-1]
        e.now_ms += HOUR_MS
        e.timeout_after = {}
        e.transient = {"BTC/USDT": 1}
        e.cut_page = {"ETH/USDT": e.served.get("ETH/USDT", 0) + 2}

    def recover(e):
        seen["eth2"] = load_ohlcv(live_dir / "ETH_1h.csv.gz").index[-1]
        e.now_ms += HOUR_MS
        e.cut_page = {}

    with caplog.at_level(logging.WARNING):
        res, waits, held = _loop(feed, book, [one_hour, time_out, cut_short, recover])
    hours = [cut + k * HOUR for k in range(1, 8)]
    assert [len(h) for h in held] == [0, 1, 1, 1, 7] and res.booked == 7
    # the failed cycles saved whole bars only, and only the traded feed's first page ...
    assert seen["btc"] == cut + 2 * HOUR and seen["eth"] == cut
    assert seen["eth2"] == cut + 2 * HOUR  # ... then ETH's page before the one cut short
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert ("nothing booked this cycle: feed BTC (fakeex BTC/USDT): ccxt fakeex fetch_ohlcv("
            f"BTC/USDT, 1h, since={_iso(cut + 3 * HOUR)}) failed after 5 attempts: "
            "RequestTimeout") in errors[0]
    assert "The 2 bars fetched before the failure were saved" in errors[0]
    assert "feed ETH (fakeex ETH/USDT)" in errors[1] and "malformed bar" in errors[1]
    assert retry_waits == [1.0, 2.0, 4.0, 8.0, 1.0]  # the backoff, then the single timeout
    assert all(0 < w <= 3660.0 for w in waits)
    _check_book(feed, book, hours, seen["before"], tmp_path)


# --------------------------------------------------------------------------------------------
# a clock that jumps backwards
# --------------------------------------------------------------------------------------------


def test_a_clock_that_jumps_backwards_books_no_hour_twice(feed, tmp_path):
    """The clock goes back two hours after three were booked: a warning names both clocks and
    the book's last hour, nothing is booked (no hour twice, none before its close), every wait
    stays positive, and once the clock passes the book's last hour the next hours are booked in
    order."""
    run_dir, live_dir, ex, feeds, cut, _ = feed
    book = tmp_path / "book"
    seen = {}

    def to(k):
        def move(e):
            if k == 1:
                seen["before"] = PaperBook(book).hours()
            e.now_ms = _ms(cut + k * HOUR)
        return move

    res, waits, held = _loop(feed, book, [to(3), to(1), to(2), to(5)])
    assert [len(h) for h in held] == [0, 3, 3, 3, 5] and res.booked == 5
    assert all(0 < w <= 3660.0 for w in waits)
    back, behind = cut + HOUR, cut + 3 * HOUR
    assert (f"the clock went back from {behind} to {back}: no hour is booked twice or before "
            f"its close") in res.warnings
    assert (f"the clock {back} is before the book's last hour {behind} (did the clock go "
            f"back?): nothing is booked until the clock passes it") in res.warnings
    assert any(f"the clock {cut + 2 * HOUR} is before the book's last hour" in w
               for w in res.warnings)
    _check_book(feed, book, [cut + k * HOUR for k in range(1, 6)], seen["before"], tmp_path)


# --------------------------------------------------------------------------------------------
# empty pages for hours
# --------------------------------------------------------------------------------------------


def test_empty_pages_for_hours_book_nothing_then_every_hour_in_order(feed, tmp_path):
    """The exchange answers empty pages for three hours: nothing is booked (no bar is
    invented), a warning counts the hours whose bar is overdue (closed more than the delay
    before the clock, which stands on the hour here: from the second one on); when it answers
    again every missing hour is booked in order, traded as the backtest trades it. When only a
    context asset's feed stays empty, the traded asset's hours are booked with it forward-filled
    and a warning names the feed: the book then equals the backtest on the data as they stood."""
    run_dir, live_dir, ex, feeds, cut, _ = feed
    book = tmp_path / "book"
    seen = {}

    def one_hour(e):
        e.now_ms += HOUR_MS

    def outage(e):
        seen["before"] = PaperBook(book).hours()
        e.outage = set(SYMBOLS)
        one_hour(e)

    def answers(e):
        e.outage = set()
        one_hour(e)

    def eth_only(e):
        e.outage = {"ETH/USDT"}
        one_hour(e)

    def back(e):
        seen["stood"] = tmp_path / "stood"
        shutil.copytree(live_dir, seen["stood"])  # the files as the ETH-less hour was booked
        seen["ledger"] = ledger_frame(PaperBook(book))
        e.outage = set()
        one_hour(e)

    res, _, held = _loop(feed, book,
                         [one_hour, outage, one_hour, one_hour, answers, eth_only, back])
    assert [len(h) for h in held] == [0, 1, 1, 1, 1, 5, 6, 7]
    assert [w for w in res.warnings if w.startswith("no new BTC bar")] == [
        f"no new BTC bar for {k} hour(s): the newest closes at {cut + HOUR}, the clock is "
        f"{cut + (k + 2) * HOUR} (an exchange outage or a late feed?); nothing is booked for "
        f"the hours without a bar: they are booked in order when the feed answers again (an "
        f"hour it never serves is a gap, filled and not traded)" for k in (1, 2)]
    ledger = ledger_frame(PaperBook(book))
    assert ledger.loc[cut + 2 * HOUR:cut + 5 * HOUR, "tradable"].all()  # real bars, not filled
    # the hour booked while ETH's feed stayed empty
    assert any(w.startswith(f"feed ETH (fakeex ETH/USDT): its newest bar closes at {cut + 5 * HOUR}"
                            f", 1 hour(s) before BTC's ({cut + 6 * HOUR})") for w in res.warnings)
    run_dir = feed[0]
    pd.testing.assert_frame_equal(ledger.iloc[:len(seen["ledger"])], seen["ledger"])
    pd.testing.assert_frame_equal(PaperBook(book).hours().loc[seen["before"].index],
                                  seen["before"])
    _assert_equals_evaluate(run_dir, seen["ledger"], _market(run_dir, seen["stood"]),
                            tmp_path / "stood_eval", from_run_state=False)
    assert list(ledger.index) == [cut + k * HOUR for k in range(1, 8)]
