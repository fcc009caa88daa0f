"""A run's paper book as its report page shows it, read from the book's own status.json and
equity.png (`cryptorl paper` writes both: cryptorl_jax/paper/status.py, which takes these file
names from here). The report reads the files itself and imports nothing from the paper package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOK_DIR = "paper"  # a run's live paper book: <run>/paper/
STATUS_FILE = "status.json"  # in the book: the figures `cryptorl paper --status` prints
EQUITY_PNG = "equity.png"  # in the book: its NAV against the backtest of the same hours


@dataclass(frozen=True)
class PaperStatus:
    """The figures of a run's paper book (its status.json) as (label, text) rows."""

    segment: Any  # the segment whose agents trade the book
    rows: list[tuple[str, str]]
    equity_png: Path | None  # None: the book has no plot yet


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def read_paper_status(run_dir: str | Path) -> PaperStatus | None:
    """The run's paper book (<run>/paper/status.json); None without one."""
    book = Path(run_dir) / BOOK_DIR
    status = book / STATUS_FILE
    if not status.is_file():
        return None
    s = json.loads(status.read_text())
    rows = [("hours booked", s.get("hours")), ("first hour", s.get("start")),
            ("last hour", s.get("last_hour")), ("NAV", s.get("nav")),
            ("P&L since start", s.get("pnl_since_start")), ("costs", s.get("costs")),
            ("financing", s.get("financing")),
            ("exposure now", (s.get("position") or {}).get("exposure"))]
    tr = s.get("tracking") or {}
    rows += [("backtest NAV, same hours", tr.get("backtest_nav")),
             ("NAV difference", tr.get("nav_difference")),
             ("max exposure difference", tr.get("max_exposure_difference"))]
    png = book / EQUITY_PNG
    return PaperStatus(segment=s.get("segment"), rows=[(k, _fmt(v)) for k, v in rows],
                       equity_png=png if png.is_file() else None)
