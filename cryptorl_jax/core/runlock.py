"""Who is writing a run directory: one lock per segment a process computes, and one short lock
around the files every process of the run rewrites (config, run_info.json, the report).

    <run>/locks/segment_<k>.lock    held (flock) by the process computing segment k; it holds
                                    that process's record: pid, host, started, command,
                                    segments, config digest
    <run>/locks/run.lock            held for the moment a process rewrites the run's shared
                                    files (config.yaml, run_info.json, the aggregate report)

Processes given disjoint `--segments` share a run: each claims its own segments. A process
whose segments overlap a live holder's is refused at once (`RunLockedError`, naming the holder)
before it changes anything. The lock is the flock, not the file: the system drops it when its
process ends (a kill -9 too), so the file and record a dead process leaves behind block nothing
(the record is only informative). Without fcntl (not POSIX) nothing is locked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cryptorl_jax.core")

LOCK_DIR = "locks"
RUN_LOCK = "run.lock"


class RunLockedError(RuntimeError):
    """A run directory's segment held by another live process; the message names it."""


def segment_lock_path(run_dir: str | Path, index: int) -> Path:
    return Path(run_dir) / LOCK_DIR / f"segment_{index}.lock"


def holder_record(segments: Iterable[int], config_digest: str | None = None,
                  argv: list[str] | None = None) -> dict[str, Any]:
    """What a claim records about its process (read back only to name it)."""
    return {"pid": os.getpid(), "host": platform.node(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv if argv is None else argv),
            "segments": sorted(int(k) for k in segments), "config_digest": config_digest}


def describe_holder(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "a process whose record is unreadable"
    return (f"pid {rec.get('pid')} on {rec.get('host')}, started {rec.get('started')}, "
            f"segments {rec.get('segments')}, command: {rec.get('command')}")


def _read_record(f: IO[str]) -> dict[str, Any] | None:
    """The record in an open lock file (retried briefly: its holder may be writing it)."""
    for _ in range(20):
        f.seek(0)
        text = f.read()
        try:
            rec = json.loads(text)
            if isinstance(rec, dict):
                return rec
        except json.JSONDecodeError:
            pass
        time.sleep(0.05)
    return None


def _try_lock(f: IO[str]) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(f: IO[str]) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


class SegmentClaim:
    """The segments this process computes in a run directory, each held by a flock on
    locks/segment_<k>.lock for as long as the claim is open (a `with` block, or `release`)."""

    def __init__(self, run_dir: str | Path, segments: Iterable[int],
                 record: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.segments = sorted({int(k) for k in segments})
        self.record = record if record is not None else holder_record(self.segments)
        self._held: dict[int, IO[str]] = {}

    def acquire(self) -> SegmentClaim:
        """Take every segment's lock or none: RunLockedError naming the live holder of the
        first segment held by another process."""
        if self.segments:
            (self.run_dir / LOCK_DIR).mkdir(parents=True, exist_ok=True)
        try:
            for k in self.segments:
                f = open(segment_lock_path(self.run_dir, k), "a+")  # noqa: SIM115 (held)
                if not _try_lock(f):
                    holder = _read_record(f)
                    f.close()
                    mine = sorted(set(self.segments) & set((holder or {}).get("segments", [k])))
                    raise RunLockedError(
                        f"{self.run_dir}: segment {k} is being computed by another process "
                        f"({describe_holder(holder)}); this run's segments {self.segments} "
                        f"overlap it at {mine or [k]}. Wait for it to finish, or give the "
                        "processes disjoint --segments")
                self._held[k] = f
                f.seek(0)
                f.truncate()
                f.write(json.dumps(self.record) + "\n")
                f.flush()
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Drop the locks (the files and their records stay: a later claim overwrites them)."""
        for f in self._held.values():
            _unlock(f)
        self._held.clear()

    def __enter__(self) -> SegmentClaim:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def others(self) -> list[dict[str, Any]]:
        """The records of the live processes holding other segments of this run directory
        (not this claim's)."""
        folder = self.run_dir / LOCK_DIR
        out = []
        for path in sorted(folder.glob("segment_*.lock")) if folder.is_dir() else []:
            try:
                k = int(path.stem.split("_", 1)[1])
            except ValueError:
                continue
            if k in self._held:
                continue
            with open(path, "a+") as f:
                if _try_lock(f):  # nobody's: a dead process's record, or none
                    if fcntl is not None:
                        fcntl.flock(f, fcntl.LOCK_UN)
                    continue
                rec = _read_record(f) or {"segments": [k]}
            if rec not in out:
                out.append(rec)
        return out


@contextlib.contextmanager
def run_files_lock(run_dir: str | Path) -> Iterator[None]:
    """Held while this process rewrites the run's shared files (config.yaml, run_info.json,
    the aggregate report): another process of the same run waits for it (it is held for
    seconds, never during training); the wait is logged once."""
    folder = Path(run_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / RUN_LOCK, "a") as f:
        if fcntl is None:
            yield
            return
        if not _try_lock(f):
            log.info("%s: another process is writing the run's report or records; waiting",
                     run_dir)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
