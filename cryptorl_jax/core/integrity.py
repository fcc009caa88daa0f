"""Checksums of written files: what a DONE record or a training checkpoint vouches for.

A folder's `manifest` is {relative path: {"size": bytes, "sha256": hex}} of every file in it
(some sub-folders left out); `manifest_problem` names the first file that is missing, of
another size or of other contents. A record is `seal`ed by adding the sha256 of its own JSON
(`SEAL`), so a record damaged where no file's checksum is (a flipped bit in a number) is
caught too (`seal_problem`).

Nothing here imports JAX or anything of cryptorl_jax.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FILES = "files"  # the manifest's key in a sealed record
SEAL = "record_sha256"  # the sha256 of the record's JSON without this key


def file_record(path: Path) -> dict[str, Any]:
    """{"size", "sha256"} of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def manifest(folder: Path, skip: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Every file under `folder` by its relative POSIX path, except those named in `skip`
    (a top-level file or folder name: its whole subtree) and hidden temp files."""
    folder = Path(folder)
    skip = set(skip)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] in skip or p.name.startswith(".") or not p.is_file():
            continue
        out[rel.as_posix()] = file_record(p)
    return out


def manifest_problem(folder: Path, files: dict[str, Any]) -> str | None:
    """None when every file of the manifest is in `folder` as recorded; else what is wrong
    with the first that is not, naming it (a file added since is not a problem)."""
    folder = Path(folder)
    for rel, want in sorted(files.items()):
        p = folder / rel
        if not p.is_file():
            return f"{p} is missing"
        try:
            got = file_record(p)
        except OSError as exc:
            return f"{p} cannot be read ({exc})"
        if got["size"] != want.get("size"):
            return (f"{p} holds {got['size']} bytes where {want.get('size')} were written "
                    "(cut short or overwritten)")
        if got["sha256"] != want.get("sha256"):
            return f"{p} does not match the sha256 recorded when it was written"
    return None


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal(record: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    """The record with the manifest `files` and its own sha256 (`SEAL`). The record must be
    plain JSON (what json.loads gives back compares equal)."""
    out = {**record, FILES: files}
    return {**out, SEAL: _digest(out)}


def is_sealed(record: dict[str, Any]) -> bool:
    """Whether a record was written sealed (either key there: one of them may be damaged)."""
    return FILES in record or SEAL in record


def seal_problem(record: dict[str, Any]) -> str | None:
    """None when a sealed record is whole; else what is wrong with it."""
    if not isinstance(record.get(FILES), dict) or not isinstance(record.get(SEAL), str):
        return f"its '{FILES}' or '{SEAL}' entry is damaged"
    if _digest(record) != record[SEAL]:
        return "its contents do not match the sha256 recorded with them"
    return None


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object in `path`, None) or (None, why it cannot be read)."""
    try:
        record = json.loads(Path(path).read_bytes().decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"it is not a readable JSON record ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict):
        return None, f"it holds a JSON {type(record).__name__}, not a record"
    return record, None
