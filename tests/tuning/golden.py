"""Golden records of tuning studies (issue 26): what a study wrote before its code was
restructured, checked in, so that the restructured code can be held to the same trial records,
best.yaml and overfitting.json.

A study's outputs are normalised (`normalise`: the trial log without its wall-clock fields,
best.yaml with the study's directory replaced by <WORKDIR>, overfitting.json) and compared with
`tests/tuning/fixtures/<name>.json` by `check`. Numbers compare to a relative 1e-3:
the fixtures were written on one x86-64 CPU and XLA's CPU code may round differently on another
(CI's), which a few dozen training updates can amplify well past 1e-6; a change of behaviour
moves a validation Sharpe by far more. Every structural field (trial numbers, states, params,
overrides, the YAML's keys) compares exactly. To rewrite a fixture after a change that is MEANT
to change the numbers: CRYPTORL_WRITE_GOLDEN=1 pytest tests/tuning/test_tune.py
tests/test_cluster.py, and say so in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

FIXTURES = Path(__file__).parent / "fixtures"
WALL_CLOCK = ("datetime_start", "datetime_complete", "duration_s")
RTOL = 1e-3


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def normalise(workdir: Path, base: Any) -> dict[str, Any]:
    """A study directory's trial log, best.yaml and overfitting.json, free of wall-clock times
    and of the directory's own path. best.yaml is kept as the dotted keys where it differs from
    the study's base config `base` (a Config), so that a config key added later by another
    change does not touch the record."""
    workdir = Path(workdir)
    trials = []
    for line in (workdir / "trials.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            for k in WALL_CLOCK:
                r.pop(k, None)
            trials.append(r)
    best = workdir / "best.yaml"
    best_text = best.read_text().replace(str(workdir.absolute()), "<WORKDIR>") if (
        best.exists()) else None
    return {
        "trials": trials,
        "best_yaml_header": None if best_text is None else [
            line for line in best_text.splitlines() if line.startswith("#")],
        "best_yaml": None if best_text is None else _changed(yaml.safe_load(best_text), base),
        "overfitting": json.loads((workdir / "overfitting.json").read_text()),
    }


def _changed(best: dict[str, Any], base: Any) -> dict[str, Any]:
    flat_best = _flat(best)
    flat_base = _flat(json.loads(json.dumps(base.to_dict(), default=str)))
    return {k: v for k, v in sorted(flat_best.items())
            if k not in flat_base or json.dumps(flat_base[k], default=str) != json.dumps(v)}


def _diff(a: Any, b: Any, where: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            d = _diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
            return None if a == b else f"{where}: {a!r} != {b!r}"
        if math.isnan(a) and math.isnan(b):
            return None
        ok = math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)
        return None if ok else f"{where}: {a!r} != {b!r}"
    return None if a == b else f"{where}: {a!r} != {b!r}"


def check(name: str, workdir: Path, base: Any) -> None:
    """Compare the study in `workdir` (of base config `base`) with the fixture `name` (or write
    it, see the module)."""
    got = normalise(workdir, base)
    path = FIXTURES / f"{name}.json"
    if os.environ.get("CRYPTORL_WRITE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True, allow_nan=True) + "\n")
        return
    want = json.loads(path.read_text())
    d = _diff(json.loads(json.dumps(got, allow_nan=True)), want, name)
    assert d is None, (f"the study differs from the golden record {path} (written by the code "
                       f"before the tuning restructure): {d}")
