"""The paper book: what paper trading has booked, in one SQLite file that survives kill -9.

Why SQLite (the standard library's, no new dependency): every booked hour is ONE transaction
that inserts the hour's ledger row and the traded bar it used and replaces the book's state (the
seeds' books, the actions waiting for the next return). A process killed at any instruction
leaves either the hour booked completely or not at all; a restart reads the state and continues
with the next hour. Parquet or JSON files would need a hand-written two-phase commit for that.

Tables (`<run>/paper/book.sqlite`, or the book directory given):
    meta(key, value)   run directory, segment, first hour, mode, start state (flat or the run's
                       book: then also the seeds' start_navs); fixed when the book is created
    hours(time, ...)   one row per booked hour: the return realised over it (JSON per seed)
    bars(time, ...)    the traded asset's bar each booked hour used (audit)
    state(id = 0, ...) the book after the last booked hour and the actions chosen at its close

Floats go through JSON as Python reprs, which round-trip float64 exactly; the agents' float32
book is stored as float64 values of float32 numbers, also exact.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("cryptorl_jax.paper")

SCHEMA_VERSION = 1
BOOK_FILE = "book.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hours (
    time TEXT PRIMARY KEY, close REAL NOT NULL, prev_close REAL NOT NULL,
    tradable INTEGER NOT NULL, seeds TEXT NOT NULL, booked_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    time TEXT PRIMARY KEY, open REAL, high REAL, low REAL, close REAL, volume REAL,
    fresh REAL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), value TEXT NOT NULL);
"""

# the meta keys that identify a book, with the value a book written before the key had
IDENTITY: dict[str, Any] = {"run_digest": None, "segment": None, "start": None, "mode": None,
                            "start_state": "flat"}


class PaperBookError(RuntimeError):
    """A book that cannot be used as asked (another run or segment, a corrupt file)."""


@dataclass(frozen=True)
class SeedBooks:
    """The S seeds' books at the close of one hour, before the trade at that close.

    `agent_*`: the float32 book the policy observes (its previous action, drifted weight, NAV
    and peak NAV: `accounting.Book` as the OOS rollout steps it); `ledger_*`: the float64 book
    of the units-and-cash ledger (`backtest.simulate`'s), which the reported numbers come from.
    """

    agent_prev_action: np.ndarray
    agent_weight: np.ndarray
    agent_nav: np.ndarray
    agent_peak_nav: np.ndarray
    ledger_prev_action: np.ndarray
    ledger_weight: np.ndarray
    ledger_nav: np.ndarray
    ledger_peak_nav: np.ndarray

    def to_json(self) -> dict[str, list[float]]:
        return {k: [float(x) for x in np.asarray(v, np.float64)]
                for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict[str, list[float]]) -> SeedBooks:
        return cls(**{k: np.asarray(d[k], dtype=np.float32 if k.startswith("agent_")
                                    else np.float64) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BookState:
    """The book after the hour `time` was booked, and what was decided at its close."""

    time: pd.Timestamp  # the close at which `actions` were chosen
    close: float  # the traded asset's close at `time`
    books: SeedBooks
    actions: np.ndarray  # [S] float32: a_t of each seed, realised over the next hour
    target: dict[str, Any]  # the exposures traded at `time` (target.json)
    hours: int  # hours booked so far

    def to_json(self) -> str:
        return json.dumps({"time": self.time.isoformat(), "close": float(self.close),
                           "books": self.books.to_json(),
                           "actions": [float(a) for a in np.asarray(self.actions, np.float64)],
                           "target": self.target, "hours": self.hours})

    @classmethod
    def from_json(cls, text: str) -> BookState:
        d = json.loads(text)
        return cls(time=pd.Timestamp(d["time"]), close=float(d["close"]),
                   books=SeedBooks.from_json(d["books"]),
                   actions=np.asarray(d["actions"], dtype=np.float32), target=d["target"],
                   hours=int(d["hours"]))


class PaperBook:
    """The SQLite paper book of one run directory (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.path = self.dir / BOOK_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed hour survives a power cut
            conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.DatabaseError as exc:
            raise PaperBookError(f"{self.path}: {exc}") from exc
        finally:
            conn.close()

    # ---- meta ------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        if not self.exists():
            return {}
        with self._connect() as conn:
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        try:
            return {k: json.loads(v) for k, v in rows}
        except ValueError as exc:
            raise PaperBookError(
                f"{self.path}: the book's meta table is unreadable ({exc})") from None

    def create(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Fix the book's identity at its first use; later uses must agree on `meta`'s keys
        that identify the book (`IDENTITY`: run, segment, first hour, mode, start state)."""
        held = self.meta()
        if held:
            diff = {k: (held.get(k), v) for k, v in meta.items()
                    if k in IDENTITY and held.get(k, IDENTITY[k]) != v}
            if diff:
                what = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
                raise PaperBookError(f"{self.path} is the book of another paper session "
                                     f"({what}); choose another --book or delete {self.dir}")
            return held
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in
                              {**meta, "schema": SCHEMA_VERSION}.items()])
            conn.execute("COMMIT")
        return self.meta()

    # ---- state and hours -------------------------------------------------------------------

    def state(self) -> BookState | None:
        if not self.exists():
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM state WHERE id = 0").fetchone()
        if row is None:
            return None
        try:
            return BookState.from_json(row[0])
        except (ValueError, TypeError, KeyError) as exc:
            raise PaperBookError(f"{self.path}: the book's state is unreadable ({exc}); the book "
                                 "cannot continue from it") from None

    def commit_hour(self, state: BookState, hour: dict[str, Any] | None,
                    bar: dict[str, float] | None, expect_previous: pd.Timestamp | None,
                    meta: dict[str, Any] | None = None) -> None:
        """One transaction: the hour's ledger row and bar (None at the first decision), the
        new state and `meta` keys to add (the first decision's start NAVs). Refuses (and
        writes nothing) when the stored state is no longer the one the hour was computed
        from: a second process booking the same book, or a repeated hour."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT value FROM state WHERE id = 0").fetchone()
                held = None if row is None else pd.Timestamp(json.loads(row[0])["time"])
                if held != expect_previous:
                    raise PaperBookError(
                        f"{self.path}: the book's last hour is {held}, expected "
                        f"{expect_previous}: another process is booking it?")
                if hour is not None:
                    conn.execute("INSERT INTO hours VALUES (?, ?, ?, ?, ?, ?)",
                                 (hour["time"], hour["close"], hour["prev_close"],
                                  int(hour["tradable"]), json.dumps(hour["seeds"]),
                                  pd.Timestamp.now(tz="UTC").isoformat()))
                if bar is not None:
                    conn.execute("INSERT OR REPLACE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (bar["time"], bar["open"], bar["high"], bar["low"],
                                  bar["close"], bar["volume"], bar["fresh"]))
                conn.execute("INSERT OR REPLACE INTO state VALUES (0, ?)", (state.to_json(),))
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in (meta or {}).items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def hours(self) -> pd.DataFrame:
        """One row per booked hour (index: the hour's close time, UTC): close, prev_close,
        tradable and, per seed s, action_s (chosen at the previous close), exposure_s,
        weight_s, turnover_s, cost_s, financing_s, gross_s, returns_s, nav_s, leverage_s."""
        if not self.exists():
            return pd.DataFrame()
        with self._connect() as conn:
            rows = conn.execute("SELECT time, close, prev_close, tradable, seeds FROM hours "
                                "ORDER BY time").fetchall()
        records = []
        for time, close, prev_close, tradable, seeds in rows:
            rec: dict[str, Any] = {"time": pd.Timestamp(time), "close": close,
                                   "prev_close": prev_close, "tradable": bool(tradable)}
            try:
                for key, values in json.loads(seeds).items():
                    rec.update({f"{key}_{s}": float(v) for s, v in enumerate(values)})
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("%s, table hours, hour %s: the seeds' record is unreadable (%s); "
                            "skipped: the ledger read from the book misses this hour", self.path,
                            time, exc)
                continue
            records.append(rec)
        if not records:
            return pd.DataFrame()
        return pd.DataFrame.from_records(records).set_index("time")

    def bars(self) -> pd.DataFrame:
        if not self.exists():
            return pd.DataFrame()
        with self._connect() as conn:
            frame = pd.read_sql_query("SELECT * FROM bars ORDER BY time", conn)
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
        return frame.set_index("time")
