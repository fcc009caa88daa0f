"""Atomic file writes: a temp file in the same folder, then os.replace (never half-written).

A write that fails (a full disk, a read-only folder) raises `WriteError` naming the file; the
temp file is removed and the file it would have replaced is as it was. `check_writable` says
before any work whether a folder can be written at all.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class WriteError(OSError):
    """A file or folder that could not be written (a full disk, a read-only folder, ...).
    str() is one line naming it; `errno` is the system's error number."""

    def __init__(self, code: int | None, message: str, path: str | Path | None = None):
        super().__init__(code, message)
        self.message = message
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return self.message


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def _write_error(path: Path, exc: OSError) -> WriteError:
    if isinstance(exc, WriteError):
        return exc
    kept = "the earlier file is unchanged" if path.exists() else "nothing was written there"
    return WriteError(exc.errno, f"could not write {path}: {_reason(exc)}; {kept}", path)


def _replace_via_temp(path: Path, write: Callable[[str], None], *, suffix: str = ".tmp",
                      verify: Callable[[str], None] | None = None) -> None:
    """Write through `write(tmp)` into a temp file beside `path`, run `verify(tmp)` (an
    exception there leaves `path` as it was), then rename it into place and fsync the folder.
    The file keeps the mode of the one it replaces (0644 for a new one). An OSError of the
    write itself (not of `verify`) is raised as a `WriteError` naming `path`, the temp file
    removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        try:
            write(tmp)
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp
        except OSError as exc:
            raise _write_error(path, exc) from exc
        if verify is not None:
            verify(tmp)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _write_error(path, exc) from exc
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (not POSIX)
        return False


def check_writable(folder: str | Path, what: str = "the output directory") -> None:
    """Raise `WriteError` naming `folder` unless files can be created in it (or, where it does
    not exist yet, in the nearest folder above it that does, where it would be created): the
    check a command makes before any work, so that a read-only output directory is found
    before hours of computing, not at their first write (a full disk is found at the write:
    `WriteError`). os.access is asked first, then a probe file is created and removed (what
    the system allows, whoever runs it)."""
    folder = Path(folder)
    probe_dir = folder.absolute()
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    where = "" if probe_dir == folder.absolute() else f" (it would be created in {probe_dir})"
    if not probe_dir.is_dir():
        raise WriteError(errno.ENOTDIR, f"{what} {folder} cannot be created{where}: "
                         f"{probe_dir} is not a directory; nothing was written", folder)
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(probe_dir) else errno.EACCES
        raise WriteError(code, f"{what} {folder} is not writable{where}: "
                         f"{os.strerror(code)} ({errno.errorcode[code]}); nothing was written",
                         folder)
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".cryptorl-write-probe.")
    except OSError as exc:
        raise WriteError(exc.errno, f"{what} {folder} is not writable{where}: "
                         f"{_reason(exc)}; nothing was written", folder) from exc
    os.close(fd)
    os.unlink(probe)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, *, suffix: str = ".tmp",
                 verify: Callable[[str], None] | None = None) -> None:
    """Write text or bytes, fsynced, then renamed into place (after `verify(tmp)`, if given:
    e.g. a re-read whose exception leaves the old file untouched). `suffix` names the temp
    file's ending, for a verifier that reads a file by its suffix."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())

    _replace_via_temp(path, write, suffix=suffix, verify=verify)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=_json_default))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    _replace_via_temp(path, frame.to_parquet)


def plain_json(obj: Any) -> Any:
    """`obj` as `write_json` writes it and json.loads reads it back (NumPy scalars and arrays
    as numbers and lists, tuples as lists, other objects as strings)."""
    return json.loads(json.dumps(obj, default=_json_default))
