"""A tuning study's records as the report reads them: its trial log (trials.jsonl, named by
wfo.trial_log) and the overfitting.json beside it (`tuning` writes both)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cryptorl_jax.core.jsonlines import read_json_lines
from cryptorl_jax.core.units import HOURS_PER_YEAR

log = logging.getLogger("cryptorl_jax.report")


def read_trial_log(path: str | None, workdir: Path) -> tuple[int, float, str]:
    """(n_trials, variance of per-period trial Sharpes, source) of a tuning trial log; a line
    that is not a trial record is reported (file and line) and skipped.

    The WFO report no longer deflates the OOS Sharpe with these (the trials were scored on
    short validation windows, not on the OOS series; see `report.registry`); it cites the
    study's own overfitting figures instead (`tuning_overfitting`).
    """
    if not path:
        return 1, 0.0, "no tuning trial log (wfo.trial_log unset): one configuration tried"
    p = _trial_log_path(path, workdir)
    values = []
    n = 0
    records, _ = read_json_lines(p, skipped="skipped (not counted)", logger=log)
    for rec in records:
        if rec.get("state", "COMPLETE") not in ("COMPLETE", "PRUNED"):
            continue
        n += 1
        # tuning writes "sharpe" (annualised) whatever tune.metric the value is
        v = rec["sharpe"] if "sharpe" in rec else rec.get("value")
        if v is not None and rec.get("state", "COMPLETE") == "COMPLETE" and math.isfinite(v):
            values.append(float(v) / math.sqrt(HOURS_PER_YEAR))  # annualised -> per period
    var = float(np.var(values, ddof=1)) if len(values) > 1 else 0.0
    return max(n, 1), var, str(p)


def _trial_log_path(path: str, workdir: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = Path(workdir) / p
    if not p.is_file():
        raise FileNotFoundError(f"wfo.trial_log: {p} does not exist")
    return p


def tuning_overfitting(path: str | None, workdir: Path) -> dict[str, Any] | None:
    """The tuning study's overfitting.json (beside its trial log), or None without a study."""
    if not path:
        return None
    f = _trial_log_path(path, workdir).with_name("overfitting.json")
    if not f.is_file():
        return {"note": f"{f} does not exist (a study from before PBO was recorded)"}
    return json.loads(f.read_text())
