"""The paper sessions: replay recorded bars hour by hour, or follow live bars (`cryptorl paper`).

Both feed market snapshots to the same `PaperTrader.on_market`: replay the recorded market cut
after each hour in turn, live the market the feeds have just extended. A replay's book lives in
`<run>/paper_replay_seg<K>_<start>_<end>/` and the live book in `<run>/paper/` unless a book
directory is given; running the same command again continues the same book (after a kill too).
"""

from __future__ import annotations

import logging
import shutil
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import load_config
from cryptorl_jax.core.io import check_writable
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market import DataValidationError, load_market
from cryptorl_jax.paper.book import PaperBook
from cryptorl_jax.paper.engine import Booked, PaperTrader, SegmentAgent, ledger_frame
from cryptorl_jax.paper.feeds import CcxtFeed, Feed, FeedError
from cryptorl_jax.paper.status import paper_status
from cryptorl_jax.walkforward.evaluate import to_utc
from cryptorl_jax.walkforward.window import (
    WindowStart,
    nothing_traded_reason,
    resolve_start,
    run_figures,
    traded,
    window_figures,
)

log = logging.getLogger("cryptorl_jax.paper")
_HOUR = pd.Timedelta(hours=1)


@dataclass
class SessionResult:
    book: PaperBook
    ledger: pd.DataFrame
    booked: int  # hours booked by this call
    warnings: list[str]
    start: WindowStart | None = None  # a replay: how its book started (the run's or flat), why
    figures: dict[str, float] = field(default_factory=dict)  # a replay: its ledger's figures
    run_figures: dict[str, float] | None = None  # the run's own OOS rows of the same hours
    notes: list[str] = field(default_factory=list)  # a replay: why nothing traded


def _refresh_status(run_dir: Path, book: PaperBook) -> None:
    """status.json, equity.png and the report page's paper section after a live cycle (the
    backtest of the same hours is left to --status); a failure here never stops trading."""
    try:
        paper_status(run_dir, book.dir, backtest=False, update_report=True)
    except Exception as exc:  # noqa: BLE001 (reporting only)
        log.warning("paper: status not refreshed: %s", exc)


def _utc_clock(seconds: float) -> pd.Timestamp:
    return pd.Timestamp(float(seconds), unit="s", tz="UTC")


def _judge_clock(market: pd.DataFrame, now: pd.Timestamp, last: pd.Timestamp | None,
                 previous_now: pd.Timestamp | None, delay_s: float, traded: str
                 ) -> tuple[pd.DataFrame, list[str]]:
    """The market's rows closed by the clock `now`, and what to warn about: bars that close
    after the clock (a bar from the future or not yet closed: never booked, held until the clock
    passes their close), a clock that went back (since the previous cycle, or to before the
    book's `last` hour: nothing is booked until it passes that hour again), and a traded asset
    whose newest bar is more than an hour late (an outage: nothing is booked for the hours
    without a bar; they are booked in order when the feed answers again)."""
    out: list[str] = []
    if previous_now is not None and now < previous_now:
        out.append(f"the clock went back from {previous_now} to {now}: no hour is booked "
                   f"twice or before its close")
    if last is not None and now < last:
        out.append(f"the clock {now} is before the book's last hour {last} (did the clock go "
                   f"back?): nothing is booked until the clock passes it")
    index = market.index
    ahead = index > now
    if ahead.any():
        held = index[ahead] if last is None else index[ahead & (index > last)]
        if len(held):
            out.append(f"the {traded} bar closing at {held[0]} (opened {held[0] - _HOUR}) is "
                       f"after the clock {now}: a bar from the future or not yet closed; "
                       f"{len(held)} such hour(s) not booked until the clock passes their close")
        market = market.loc[~ahead]
    due = (now - pd.Timedelta(seconds=delay_s)).floor("h")
    if len(market) and market.index[-1] < due:
        late = int((due - market.index[-1]) / _HOUR)
        out.append(f"no new {traded} bar for {late} hour(s): the newest closes at "
                   f"{market.index[-1]}, the clock is {now} (an exchange outage or a late "
                   f"feed?); nothing is booked for the hours without a bar: they are booked in "
                   f"order when the feed answers again (an hour it never serves is a gap, "
                   f"filled and not traded)")
    return market, out


def _lagging_feeds(updated: list[tuple[Feed, object]], market: pd.DataFrame,
                   traded: str) -> list[str]:
    """A crypto feed (24/7, ccxt) whose newest bar closes before the hour being booked: those
    hours are booked with its values forward-filled (`<ASSET>_fresh` 0, as the backtest reads
    any gap), and once its late bars arrive the backtest of those hours differs from the book
    (--status reports the tracking difference)."""
    out = []
    for feed, res in updated:
        last = getattr(res, "last", None)
        if not isinstance(feed, CcxtFeed) or last is None or not len(market):
            continue
        close = to_utc(last) + _HOUR
        if close < market.index[-1]:
            late = int((market.index[-1] - close) / _HOUR)
            out.append(f"feed {feed.name} ({feed.exchange} {feed.symbol}): its newest bar closes "
                       f"at {close}, {late} hour(s) before {traded}'s ({market.index[-1]}): "
                       f"those hours are booked with {feed.name} forward-filled (as the "
                       f"backtest reads a gap); once its bars arrive, the backtest of them on "
                       f"the new data differs from the book (--status: tracking)")
    return out


def replay_book_dir(run_dir: Path, segment: int, start: pd.Timestamp,
                    end: pd.Timestamp) -> Path:
    return run_dir / f"paper_replay_seg{segment}_{start:%Y%m%d%H}_{end:%Y%m%d%H}"


def replay(run_dir: str | Path, start: str, end: str, *, segment: int | None = None,
           book_dir: str | Path | None = None, market: pd.DataFrame | None = None,
           overrides: tuple[str, ...] = (),
           after_hour: Callable[[pd.Timestamp], None] | None = None,
           from_run_state: bool | None = None) -> SessionResult:
    """Feed the recorded bars of [start, end] (UTC) one hour at a time through paper trading.

    The market is read as `cryptorl evaluate` reads it (the run's data files, `data.end`
    lifted) unless given; for every hour h from the one before `start` to `end`, the snapshot
    of rows up to h goes through `PaperTrader.on_market`, which rebuilds the features of that
    snapshot only: nothing after h is seen at h. An existing book continues where it stopped.
    The book starts as `cryptorl evaluate`'s window does (`walkforward.window.resolve_start`;
    `from_run_state` as there): by default from the run's own books when `start` lies in the
    segment's test hours, so the booked hours equal the run's OOS rows. The result gives the
    start, the ledger's figures beside the run's own for the same hours, and why nothing
    traded.
    """
    run_dir = Path(run_dir)
    agent = SegmentAgent(run_dir, segment, overrides)
    if market is None:
        market = load_market(agent.cfg.data)
    index = market.index
    start_row = int(index.searchsorted(to_utc(start)))
    end_row = int(index.searchsorted(to_utc(end), side="right")) - 1
    if start_row >= len(index) or start_row < 1:
        raise ValueError(f"--replay start {start} is outside the data ({index[0]} .. "
                         f"{index[-1]})")
    if end_row <= start_row - 1:
        raise ValueError(f"--replay {start} .. {end} holds no hour of the data")
    first, last = index[start_row], index[end_row]
    begin = resolve_start(agent.index, agent.train_period, agent.test_period, first,
                          from_run_state)
    book = PaperBook(book_dir if book_dir is not None
                     else replay_book_dir(run_dir, agent.index, first, last))
    check_writable(book.dir, "the paper book's directory")  # before the first hour
    trader = PaperTrader(agent, book, mode="replay", start=first,
                         from_run_state=begin.from_run_state)
    state = book.state()
    booked, warnings = 0, []
    for h in range(start_row - 1, end_row + 1):
        if state is not None and index[h] <= state.time:
            continue  # booked before a restart
        out = trader.on_market(market.iloc[:h + 1], after_hour=after_hour)
        booked += len(out.hours)
        warnings += [w for w in out.warnings if w not in warnings]
        state = None
    log.info("paper replay: %s .. %s booked into %s (%d hours this call)", first, last,
             book.dir, booked)
    ledger = ledger_frame(book)
    res = SessionResult(book=book, ledger=ledger, booked=booked, warnings=warnings,
                        start=begin)
    if len(ledger):
        res.figures = window_figures(ledger)
        res.run_figures = run_figures(RunDir(run_dir), agent.index, ledger.index)
        if not traded(ledger):
            res.notes.append(nothing_traded_reason(ledger, agent.cfg.env.no_trade_band))
    return res


def live_data_dir(run_dir: str | Path, book_dir: str | Path | None = None,
                  data_dir: str | Path | None = None) -> Path:
    """Where the live feeds extend the data files: `data_dir` if given (in place), else the
    book's (its meta records it), else `<book>/data/`, first filled with copies of the run's
    data files, so that live bars never touch the files the run was trained and backtested on
    (the bundled data, for quick.yaml)."""
    run_dir = Path(run_dir)
    book = PaperBook(book_dir if book_dir is not None else run_dir / "paper")
    if data_dir is not None:
        return Path(data_dir)
    held = book.meta().get("data_dir")
    if held:
        return Path(held)
    target = book.dir / "data"
    cfg = load_config(RunDir(run_dir).config).data
    files = ([cfg.combined_file] if cfg.combined_file is not None
             else [str(a.file) for a in cfg.assets])
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
        src = Path(name) if Path(name).is_absolute() else Path(cfg.data_dir) / name
        dst = target / Path(name).name
        if not dst.exists():
            if not src.is_file():
                raise FileNotFoundError(f"{src}: a data file of the run (data.data_dir="
                                        f"{cfg.data_dir}); pass --data-dir")
            shutil.copy2(src, dst)
    log.info("paper: live bars extend copies of the run's data files in %s", target)
    return target


def live(run_dir: str | Path, feeds: Sequence[Feed], *, segment: int | None = None,
         book_dir: str | Path | None = None, overrides: tuple[str, ...] = (),
         every_s: float | None = None, delay_s: float = 60.0, max_cycles: int | None = None,
         clock: Callable[[], float] = _time.time,
         sleep: Callable[[float], None] = _time.sleep) -> SessionResult:
    """Update the data with `feeds`, then book every new closed hour; with `every_s`, repeat
    `delay_s` seconds after each bar closes until interrupted (or `max_cycles`).

    A feed or validation error books nothing in that cycle: it is raised when running once,
    logged and retried next cycle otherwise. A new live book starts at the hour after the
    newest bar of its first cycle (the first decision is taken at that bar's close).
    `clock` (UTC seconds) also judges the bars (`_judge_clock`): an hour whose bar closes after
    it is never booked (held, with a warning, until the clock passes its close); a clock that
    went back and a traded asset more than an hour late (an outage) are warned about.
    """
    run_dir = Path(run_dir)
    agent = SegmentAgent(run_dir, segment, overrides)
    book = PaperBook(book_dir if book_dir is not None else run_dir / "paper")
    check_writable(book.dir, "the paper book's directory")  # before the first cycle
    trader: PaperTrader | None = None
    booked, warnings, cycles = 0, [], 0
    previous_now: pd.Timestamp | None = None
    while True:
        cycles += 1
        try:
            updated = [(feed, feed.update()) for feed in feeds]
            market = load_market(agent.cfg.data, end_on="traded")
            now = _utc_clock(clock())
            state = book.state()
            market, said = _judge_clock(market, now, None if state is None else state.time,
                                        previous_now, delay_s, agent.cfg.data.traded_asset)
            previous_now = now
            said += _lagging_feeds(updated, market, agent.cfg.data.traded_asset)
            for msg in said:
                log.warning("paper: %s", msg)
            warnings += [w for w in said if w not in warnings]
            if trader is None and len(market):
                start = None if book.meta() else market.index[-1] + pd.Timedelta(hours=1)
                trader = PaperTrader(agent, book, mode="live", start=start)
            out = trader.on_market(market) if trader is not None and len(market) else Booked()
            booked += len(out.hours)
            warnings += [w for w in out.warnings if w not in warnings]
            if out.hours or out.first_decision is not None:
                _refresh_status(run_dir, book)
            if out.hours:
                t = book.state().target  # type: ignore[union-attr]
                log.info("paper: booked %d hour(s) up to %s; target exposure %.4f of NAV %.6f",
                         len(out.hours), out.hours[-1], t["exposure"], t["nav"])
            elif out.first_decision is not None:
                log.info("paper: book started; first decision at the close of %s",
                         out.first_decision)
            else:
                log.info("paper: no new closed bar (last %s)",
                         market.index[-1] if len(market) else None)
        except (FeedError, DataValidationError) as exc:
            if every_s is None:
                raise
            log.error("paper: nothing booked this cycle: %s", exc)
        if every_s is None or (max_cycles is not None and cycles >= max_cycles):
            break
        wait = every_s - clock() % every_s + delay_s
        log.info("paper: next cycle in %.0f s", wait)
        sleep(wait)
    return SessionResult(book=book, ledger=ledger_frame(book), booked=booked,
                         warnings=warnings)
