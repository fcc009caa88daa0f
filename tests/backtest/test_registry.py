"""The run registry behind the OOS Deflated Sharpe's N."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryptorl_jax.backtest import registry


def _rec(digest, sr, start="2024-01-01 00:00:00+00:00", end="2024-03-01 00:00:00+00:00"):
    return {"config_digest": digest, "run_name": digest, "oos_start": start, "oos_end": end,
            "sharpe_per_period": sr, "sharpe": sr * math.sqrt(8760)}


def test_one_record_per_configuration_and_window_counting(tmp_path):
    path = tmp_path / registry.REGISTRY
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
    path = tmp_path / registry.REGISTRY
    registry.register_run(path, {**_rec("a", 0.01), "market": real})
    registry.register_run(path, {**_rec("b", 0.03), "market": planted})
    records = registry.register_run(path, {**_rec("c", 0.02), "market": planted})
    start, end = "2024-01-01 00:00:00+00:00", "2024-03-01 00:00:00+00:00"
    assert registry.runs_over_window(records, start, end, real).n_runs == 1
    assert registry.runs_over_window(records, start, end, planted).n_runs == 2
    assert registry.runs_over_window(records, start, end).n_runs == 3
    records = registry.register_run(path, _rec("old", 0.0))  # no market: counted everywhere
    assert registry.runs_over_window(records, start, end, real).n_runs == 2


def test_a_malformed_registry_names_the_file_and_line(tmp_path):
    path = tmp_path / registry.REGISTRY
    path.write_text('{"config_digest": "a", "oos_start": "x", "oos_end": "y", '
                    '"sharpe_per_period": 0.1}\nnot json\n')
    with pytest.raises(ValueError, match=r"runs.jsonl, line 2: not a JSON record"):
        registry.read_registry(path)
    path.write_text('{"config_digest": "a"}\n')
    with pytest.raises(ValueError, match=r"line 1: the record lacks \['oos_start'"):
        registry.register_run(path, _rec("b", 0.1))
    assert path.read_text() == '{"config_digest": "a"}\n'  # nothing lost
