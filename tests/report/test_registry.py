"""The run registry behind the OOS Deflated Sharpe's N, and the deflation it gives a run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest.metrics import expected_max_sharpe
from cryptorl_jax.core.rundir import REGISTRY
from cryptorl_jax.report import registry


def _rec(digest, sr, start="2024-01-01 00:00:00+00:00", end="2024-03-01 00:00:00+00:00"):
    return {"config_digest": digest, "run_name": digest, "oos_start": start, "oos_end": end,
            "sharpe_per_period": sr, "sharpe": sr * math.sqrt(8760)}


def test_one_record_per_configuration_and_window_counting(tmp_path):
    path = tmp_path / REGISTRY
    registry.register_run(path, _rec("a", 0.01))
    registry.register_run(path, _rec("b", 0.03))
    registry.register_run(path, _rec("c", 0.02, end="2024-02-01 00:00:00+00:00"))
    records = registry.register_run(path, _rec("a", 0.02))  # a re-report replaces its record
    assert sorted(r["config_digest"] for r in records) == ["a", "b", "c"]
    assert registry.read_registry(path) == records
    window = registry.runs_over_window(records, "2024-01-01 00:00:00+00:00",
                                       "2024-03-01 00:00:00+00:00")
    assert window.n_runs == 2
    assert window.sr_variance == pytest.approx(np.var([0.02, 0.03], ddof=1))
    alone = registry.runs_over_window(records, "2024-01-01 00:00:00+00:00",
                                      "2024-02-01 00:00:00+00:00")
    assert alone.n_runs == 1 and math.isnan(alone.sr_variance)
    assert "c (c, Sharpe" in alone.describe()


def test_runs_on_another_market_are_not_trials(tmp_path):
    """A planted market's run over the same hours is another experiment: counted apart; a
    record from before markets were recorded counts on every market."""
    from cryptorl_jax.config import DataConfig

    real = registry.market_key(DataConfig(data_dir="data"))
    planted = registry.market_key(DataConfig(data_dir=str(tmp_path / "trend-s4-r0")))
    assert real != planted and real.endswith(":BTC")
    path = tmp_path / REGISTRY
    registry.register_run(path, {**_rec("a", 0.01), "market": real})
    registry.register_run(path, {**_rec("b", 0.03), "market": planted})
    records = registry.register_run(path, {**_rec("c", 0.02), "market": planted})
    start, end = "2024-01-01 00:00:00+00:00", "2024-03-01 00:00:00+00:00"
    assert registry.runs_over_window(records, start, end, real).n_runs == 1
    assert registry.runs_over_window(records, start, end, planted).n_runs == 2
    assert registry.runs_over_window(records, start, end).n_runs == 3
    records = registry.register_run(path, _rec("old", 0.0))  # no market: counted everywhere
    assert registry.runs_over_window(records, start, end, real).n_runs == 2


def test_a_malformed_registry_line_is_named_skipped_and_kept(tmp_path, caplog):
    """A line that is not a record is reported (file and line) and skipped, never dropped: the
    next registration keeps it in the file as it was (tests/faults/test_torn_lines.py)."""
    path = tmp_path / REGISTRY
    good = ('{"config_digest": "a", "oos_start": "x", "oos_end": "y", '
            '"sharpe_per_period": 0.1}\n')
    path.write_text(good + "not json\n")
    with caplog.at_level("WARNING", logger="cryptorl_jax.report"):
        assert [r["config_digest"] for r in registry.read_registry(path)] == ["a"]
    assert "runs.jsonl, line 2: not a JSON record" in caplog.text
    path.write_text('{"config_digest": "a"}\n')
    with caplog.at_level("WARNING", logger="cryptorl_jax.report"):
        records = registry.register_run(path, _rec("b", 0.1))
    assert "line 1: the record lacks ['oos_start'" in caplog.text
    assert [r["config_digest"] for r in records] == ["b"]
    assert path.read_text().endswith('{"config_digest": "a"}\n')  # nothing lost


def _record(name, start, end, sr, market="m", digest=None):
    return {"config_digest": digest or name, "run_name": name, "market": market,
            "oos_start": start, "oos_end": end, "n_hours": 100, "sharpe_per_period": sr}


def test_the_oos_deflation_counts_runs_over_the_same_window_and_market():
    a = _record("a", "2024-01-01", "2024-02-01", 0.02)
    records = [a, _record("b", "2024-01-01", "2024-02-01", -0.01),
               _record("c", "2024-01-01", "2024-03-01", 0.5),  # another window
               _record("d", "2024-01-01", "2024-02-01", 0.7, market="planted")]
    d = registry.deflation_of(records, a)
    assert d.n_runs == 2
    var = float(np.var([0.02, -0.01], ddof=1))
    assert d.sr_variance == pytest.approx(var)
    assert d.expected_max_sharpe == pytest.approx(expected_max_sharpe(2, var))
    alone = registry.deflation_of([a], a)
    assert alone.n_runs == 1 and alone.expected_max_sharpe == 0.0


def test_oos_record_holds_the_per_period_and_annual_sharpe(tmp_path):
    idx = pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC")
    r = np.random.default_rng(0).normal(0.001, 0.01, 50)
    rec = registry.oos_record(pd.DataFrame({"strategy": r}, index=idx), "abc", "x", tmp_path,
                            [0, 1], market="m")
    per = r.mean() / r.std(ddof=1)
    assert rec["sharpe_per_period"] == pytest.approx(per)
    assert rec["sharpe"] == pytest.approx(per * math.sqrt(8760))
    assert (rec["oos_start"], rec["n_hours"], rec["segments"]) == (str(idx[0]), 50, [0, 1])
    assert rec["flat"] is False
    flat = registry.oos_record(pd.DataFrame({"strategy": np.zeros(50)}, index=idx), "f", "x",
                               tmp_path, [0], market="m")
    assert (flat["sharpe"], flat["sharpe_per_period"], flat["flat"]) == (0.0, 0.0, True)


def test_a_flat_run_counts_in_n_with_sharpe_0():
    """A flat book (no variance; or a record written with a null Sharpe) is a configuration
    tried on the window: it counts in N and enters the variance as 0 (docs/methods.md)."""
    a = _record("a", "2024-01-01", "2024-02-01", 0.02)
    flat = {**_record("f", "2024-01-01", "2024-02-01", 0.0), "flat": True, "sharpe": 0.0}
    legacy = {**_record("n", "2024-01-01", "2024-02-01", None), "sharpe": None}
    window = registry.runs_over_window([a, flat, legacy], "2024-01-01", "2024-02-01", "m")
    assert window.n_runs == 3
    assert window.sr_variance == pytest.approx(np.var([0.02, 0.0, 0.0], ddof=1))
    text = window.describe()
    assert "f (f, Sharpe undefined, flat book: counted as 0)" in text
    assert "n (n, Sharpe undefined: counted as 0)" in text
    assert f"a (a, Sharpe {0.02 * math.sqrt(8760):.2f})" in text
