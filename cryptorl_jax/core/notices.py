"""Notices about the data window (bars dropped to the common window, hours forward-filled, stale
context rows): useful once, noise when every segment, tuning trial or paper cycle repeats them.

`notice(log, kind, subject, msg, *args)` logs at DEBUG, once per (kind, subject) in a process
(subject: the asset or its file); the commands' -v/--verbose shows DEBUG lines of cryptorl_jax
(`set_verbose`).
"""

from __future__ import annotations

import logging

_SEEN: set[tuple[str, str]] = set()
PACKAGE_LOGGER = "cryptorl_jax"


def notice(log: logging.Logger, kind: str, subject: str, msg: str, *args: object) -> None:
    """Log msg % args at DEBUG unless this (kind, subject) was noticed before in this process."""
    key = (kind, str(subject))
    if key in _SEEN:
        return
    _SEEN.add(key)
    log.debug(msg, *args)


def forget() -> None:
    """Every notice may be logged again (tests)."""
    _SEEN.clear()


def set_verbose(on: bool) -> None:
    """-v: the package's DEBUG lines (the notices) reach the handlers; off: its level is left to
    the root logger's (INFO in the commands)."""
    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.DEBUG if on else logging.NOTSET)
