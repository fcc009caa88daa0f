"""Reading JSON-lines files (runs.jsonl, a study's trials.jsonl): one JSON object per line.

An append that was cut short (a kill, a full disk) leaves a line that is not JSON; a file edited
by hand can hold a line that is not a record. Such a line is reported once, naming the file and
the line number, and skipped; the records around it are kept. The standard library's `json`
reads each line; nothing here is specific to one file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("cryptorl_jax.io")


def read_json_lines(path: str | Path, check: Callable[[dict[str, Any]], str | None] | None = None,
                    *, skipped: str = "skipped", logger: logging.Logger | None = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, unreadable lines as they are in the file) of the JSON-lines file `path`.

    A line that is not JSON, not a JSON object, or that `check(record)` answers with a problem
    (a string) is logged as a warning, "<path>, line <i>: <problem>; <skipped>", and returned in
    the second list (on `logger`, default cryptorl_jax.io); blank lines are ignored. A missing
    file raises FileNotFoundError."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    bad: list[str] = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"not a JSON record ({exc.msg}; a truncated write?)"
        else:
            if not isinstance(rec, dict):
                problem = "not a record (a JSON object)"
            else:
                problem = check(rec) if check is not None else None
                if problem is None:
                    out.append(rec)
                    continue
        (logger or log).warning("%s, line %d: %s; %s", path, i, problem, skipped)
        bad.append(line)
    return out, bad
