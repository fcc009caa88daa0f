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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import load_config
from cryptorl_jax.core.io import check_writable
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market import DataValidationError, load_market
from cryptorl_jax.paper.book import PaperBook
from cryptorl_jax.paper.engine import PaperTrader, SegmentAgent, ledger_frame
from cryptorl_jax.paper.feeds import Feed, FeedError
from cryptorl_jax.paper.status import paper_status
from cryptorl_jax.walkforward.evaluate import to_utc

log = logging.getLogger("cryptorl_jax.paper")


@dataclass
class SessionResult:
    book: PaperBook
    ledger: pd.DataFrame
    booked: int  # hours booked by this call
    warnings: list[str]


def _refresh_status(run_dir: Path, book: PaperBook) -> None:
    """status.json, equity.png and the report page's paper section after a live cycle (the
    backtest of the same hours is left to --status); a failure here never stops trading."""
    try:
        paper_status(run_dir, book.dir, backtest=False)
    except Exception as exc:  # noqa: BLE001 (reporting only)
        log.warning("paper: status not refreshed: %s", exc)


def replay_book_dir(run_dir: Path, segment: int, start: pd.Timestamp,
                    end: pd.Timestamp) -> Path:
    return run_dir / f"paper_replay_seg{segment}_{start:%Y%m%d%H}_{end:%Y%m%d%H}"


def replay(run_dir: str | Path, start: str, end: str, *, segment: int | None = None,
           book_dir: str | Path | None = None, market: pd.DataFrame | None = None,
           overrides: tuple[str, ...] = (),
           after_hour: Callable[[pd.Timestamp], None] | None = None) -> SessionResult:
    """Feed the recorded bars of [start, end] (UTC) one hour at a time through paper trading.

    The market is read as `cryptorl evaluate` reads it (the run's data files, `data.end`
    lifted) unless given; for every hour h from the one before `start` to `end`, the snapshot
    of rows up to h goes through `PaperTrader.on_market`, which rebuilds the features of that
    snapshot only: nothing after h is seen at h. An existing book continues where it stopped.
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
    book = PaperBook(book_dir if book_dir is not None
                     else replay_book_dir(run_dir, agent.index, first, last))
    check_writable(book.dir, "the paper book's directory")  # before the first hour
    trader = PaperTrader(agent, book, mode="replay", start=first)
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
    return SessionResult(book=book, ledger=ledger_frame(book), booked=booked,
                         warnings=warnings)


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
    """
    run_dir = Path(run_dir)
    agent = SegmentAgent(run_dir, segment, overrides)
    book = PaperBook(book_dir if book_dir is not None else run_dir / "paper")
    check_writable(book.dir, "the paper book's directory")  # before the first cycle
    trader: PaperTrader | None = None
    booked, warnings, cycles = 0, [], 0
    while True:
        cycles += 1
        try:
            for feed in feeds:
                feed.update()
            market = load_market(agent.cfg.data, end_on="traded")
            if trader is None:
                start = None if book.meta() else market.index[-1] + pd.Timedelta(hours=1)
                trader = PaperTrader(agent, book, mode="live", start=start)
            out = trader.on_market(market)
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
                log.info("paper: no new closed bar (last %s)", market.index[-1])
        except (FeedError, DataValidationError) as exc:
            if every_s is None:
                raise
            log.error("paper: nothing booked this cycle: %s", exc)
        if every_s is None or (max_cycles is not None and cycles >= max_cycles):
            break
        now = clock()
        wait = every_s - now % every_s + delay_s
        log.info("paper: next cycle in %.0f s", wait)
        sleep(wait)
    return SessionResult(book=book, ledger=ledger_frame(book), booked=booked,
                         warnings=warnings)
