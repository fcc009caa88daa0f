"""A tuning study's trial log as the report reads it (report/trials.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cryptorl_jax.report import trials


def test_trial_log_counts_completed_and_pruned_trials(tmp_path):
    log = tmp_path / "trials.jsonl"
    lines = [{"state": "COMPLETE", "sharpe": 1.0}, {"state": "COMPLETE", "sharpe": 3.0},
             {"state": "PRUNED", "value": None}, {"state": "FAIL", "value": None}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    n, var, source = trials.read_trial_log(str(log), tmp_path)
    assert n == 3 and source == str(log)
    assert var == pytest.approx(np.var([1 / math.sqrt(8760), 3 / math.sqrt(8760)], ddof=1))
    assert trials.read_trial_log(None, tmp_path)[0] == 1
    with pytest.raises(FileNotFoundError, match="wfo.trial_log"):
        trials.read_trial_log(str(tmp_path / "missing.jsonl"), tmp_path)
