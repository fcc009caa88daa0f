"""Records cut short by a crash while they were written (issue 41): the run registry
(runs.jsonl), a tuning study's trial log (trials.jsonl) and the paper book (SQLite). Each is
read back, the bad line reported with its file and line (or hour) and skipped; nothing that was
written whole is lost."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.core.rundir import REGISTRY
from cryptorl_jax.paper.book import BookState, PaperBook, PaperBookError, SeedBooks
from cryptorl_jax.report import registry, trials


def _rec(digest: str, sr: float) -> dict:
    return {"config_digest": digest, "run_name": digest, "market": "m",
            "oos_start": "2024-01-01 00:00:00+00:00", "oos_end": "2024-03-01 00:00:00+00:00",
            "sharpe_per_period": sr, "sharpe": sr * math.sqrt(8760), "flat": False}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------------
# runs.jsonl
# --------------------------------------------------------------------------------------------


def test_a_truncated_registry_line_is_reported_skipped_and_kept(tmp_path, caplog):
    path = tmp_path / REGISTRY
    whole = "".join(json.dumps(_rec(d, sr)) + "\n" for d, sr in (("a", 0.01), ("b", 0.03)))
    torn = json.dumps(_rec("c", 0.02))[:57]  # the third record cut mid-write, no newline
    path.write_text(whole + torn)
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.report"):
        records = registry.read_registry(path)
    assert [r["config_digest"] for r in records] == ["a", "b"]
    msg, = _warnings(caplog)
    assert f"{path}, line 3: not a JSON record" in msg and "skipped" in msg
    # the next report adds its run; the torn line stays in the file as it was
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.report"):
        records = registry.register_run(path, _rec("d", 0.0))
    assert [r["config_digest"] for r in records] == ["a", "b", "d"]
    assert len(_warnings(caplog)) == 1
    text = path.read_text()
    assert text.startswith(whole) and text.endswith(torn + "\n")
    window = registry.runs_over_window(records, records[0]["oos_start"], records[0]["oos_end"])
    assert window.n_runs == 3


def test_a_registry_record_without_its_keys_is_reported_and_skipped(tmp_path, caplog):
    path = tmp_path / REGISTRY
    path.write_text(json.dumps(_rec("a", 0.01)) + '\n{"config_digest": "b"}\n[1, 2]\n')
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.report"):
        records = registry.read_registry(path)
    assert [r["config_digest"] for r in records] == ["a"]
    first, second = _warnings(caplog)
    assert "line 2: the record lacks ['oos_start', 'oos_end', 'sharpe_per_period']" in first
    assert "line 3: not a record (a JSON object)" in second


# --------------------------------------------------------------------------------------------
# trials.jsonl
# --------------------------------------------------------------------------------------------


def test_a_truncated_trial_log_line_is_reported_and_skipped(tmp_path, caplog):
    log = tmp_path / "trials.jsonl"
    lines = [{"number": 0, "state": "COMPLETE", "sharpe": 1.0},
             {"number": 1, "state": "COMPLETE", "sharpe": 3.0},
             {"number": 2, "state": "PRUNED", "value": None}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines)
                   + json.dumps({"number": 3, "state": "COMPLETE", "sharpe": 2.0})[:20])
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.report"):
        n, var, source = trials.read_trial_log(str(log), tmp_path)
    assert n == 3 and source == str(log)
    assert var == pytest.approx(np.var([1 / math.sqrt(8760), 3 / math.sqrt(8760)], ddof=1))
    msg, = _warnings(caplog)
    assert f"{log}, line 4: not a JSON record" in msg and "skipped" in msg


# --------------------------------------------------------------------------------------------
# The paper book
# --------------------------------------------------------------------------------------------

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def _state(i: int) -> BookState:
    one = np.ones(1)
    books = SeedBooks(*(one.astype(np.float32) * (1 + i),) * 4, *(one * (1 + i),) * 4)
    return BookState(time=T0 + i * HOUR, close=100.0 + i, books=books,
                     actions=np.full(1, 0.5, np.float32), target={"exposure": 0.5}, hours=i)


def _book(directory, n_hours: int) -> PaperBook:
    """A book with its first decision and n_hours booked hours after it."""
    book = PaperBook(directory)
    book.create({"run_digest": "r", "segment": 0, "start": str(T0 + HOUR), "mode": "replay"})
    book.commit_hour(_state(0), None, None, expect_previous=None)
    _book_hours(book, 1, n_hours)
    return book


def _book_hours(book: PaperBook, first: int, last: int) -> None:
    for i in range(first, last + 1):
        hour = {"time": (T0 + i * HOUR).isoformat(), "close": 100.0 + i,
                "prev_close": 99.0 + i, "tradable": True,
                "seeds": {"returns": [0.001 * i], "nav": [1.0 + 0.001 * i]}}
        bar = {"time": (T0 + i * HOUR).isoformat(), "open": 1.0, "high": 1.0, "low": 1.0,
               "close": 100.0 + i, "volume": 1.0, "fresh": 1.0}
        book.commit_hour(_state(i), hour, bar, expect_previous=T0 + (i - 1) * HOUR)


def test_an_hour_torn_while_it_was_committed_is_not_booked(tmp_path):
    """A crash inside the fourth hour's commit leaves a torn last frame in the write-ahead log:
    SQLite drops that transaction whole, so the book reads three hours and the state after the
    third, from which it continues; nothing committed before is lost."""
    live = _book(tmp_path / "live", 0)
    holder = sqlite3.connect(live.path, isolation_level=None)
    holder.execute("BEGIN")  # a reader's open snapshot: the log is not checkpointed under it
    holder.execute("SELECT count(*) FROM meta").fetchall()
    try:
        _book_hours(live, 1, 4)
        wal = live.path.with_name(live.path.name + "-wal")
        assert wal.stat().st_size > 0
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        shutil.copy(live.path, crashed / live.path.name)
        shutil.copy(wal, crashed / wal.name)
        whole = tmp_path / "whole"  # the same copy, not torn: the fourth hour is in its log
        shutil.copytree(crashed, whole)
    finally:
        holder.close()
    assert list(PaperBook(whole).hours().index)[-1] == T0 + 4 * HOUR
    torn = crashed / wal.name
    with open(torn, "r+b") as f:
        f.truncate(torn.stat().st_size - 100)  # the last frame (the commit) cut short
    book = PaperBook(crashed)
    hours = book.hours()
    assert list(hours.index) == [T0 + i * HOUR for i in (1, 2, 3)]
    np.testing.assert_array_equal(hours["returns_0"], [0.001, 0.002, 0.003])
    assert book.state().time == T0 + 3 * HOUR and book.state().hours == 3


def test_a_malformed_hour_row_is_reported_and_skipped(tmp_path, caplog):
    book = _book(tmp_path / "b", 3)
    with sqlite3.connect(book.path) as conn:
        conn.execute("UPDATE hours SET seeds = ? WHERE time = ?",
                     ('{"returns": [0.003], "na', (T0 + 3 * HOUR).isoformat()))
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.paper"):
        hours = book.hours()
    assert list(hours.index) == [T0 + HOUR, T0 + 2 * HOUR]
    msg, = _warnings(caplog)
    assert f"{book.path}, table hours, hour {(T0 + 3 * HOUR).isoformat()}" in msg
    assert "skipped" in msg


def test_a_damaged_book_state_or_file_is_refused_naming_the_file(tmp_path):
    book = _book(tmp_path / "b", 2)
    with sqlite3.connect(book.path) as conn:
        conn.execute("UPDATE state SET value = ? WHERE id = 0", ('{"time": "2024-01-0',))
    with pytest.raises(PaperBookError, match=r"book\.sqlite: the book's state is unreadable"):
        book.state()
    cut = _book(tmp_path / "c", 2)
    size = cut.path.stat().st_size
    with open(cut.path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(PaperBookError, match=str(cut.path)):
        cut.hours()
