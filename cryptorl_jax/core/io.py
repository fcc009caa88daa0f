"""Atomic file writes: a temp file in the same folder, then os.replace (never half-written)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _replace_via_temp(path: Path, write: Callable[[str], None], *, suffix: str = ".tmp",
                      verify: Callable[[str], None] | None = None) -> None:
    """Write through `write(tmp)` into a temp file beside `path`, run `verify(tmp)` (an
    exception there leaves `path` as it was), then rename it into place and fsync the folder.
    The file keeps the mode of the one it replaces (0644 for a new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp: 0600
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
