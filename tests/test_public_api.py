"""The public API names of docs/architecture.md resolve where they are documented."""

import importlib

import pytest

NAMES = [
    ("cryptorl_jax.config", "load_config"), ("cryptorl_jax.market", "load_ohlcv"),
    ("cryptorl_jax.market", "load_market"), ("cryptorl_jax.market", "DataValidationError"),
    ("cryptorl_jax.market.synthetic", "make_market"),
    ("cryptorl_jax.market.planted", "write_planted_files"),
    ("cryptorl_jax.studies.planted", "write_planted_market"),
    ("cryptorl_jax.studies.planted", "oracle_sharpe"),
    ("cryptorl_jax.features", "build_features"), ("cryptorl_jax.features", "ffd"),
    ("cryptorl_jax.features", "parkinson_vol"), ("cryptorl_jax.features", "garman_klass_vol"),
    ("cryptorl_jax.regimes", "RegimeModel"), ("cryptorl_jax.backtest", "simulate"),
    ("cryptorl_jax.backtest", "compute_metrics"), ("cryptorl_jax.backtest", "pbo_cscv"),
    ("cryptorl_jax.backtest", "action_timing_null"), ("cryptorl_jax.walkforward", "make_segments"),
    ("cryptorl_jax.report", "Run"), ("cryptorl_jax.report", "compare_runs"),
]


@pytest.mark.parametrize("module,name", NAMES)
def test_public_name_resolves(module, name):
    assert callable(getattr(importlib.import_module(module), name))


def test_make_segments_is_the_row_layout():
    from cryptorl_jax.config import WFOConfig
    from cryptorl_jax.walkforward import make_segments

    segs = make_segments(1000, WFOConfig(train_months=3, test_months=1, step_months=1,
                                         hours_per_month=100))
    assert (segs[0].train_start, segs[0].train_end, segs[0].test_start, segs[0].test_end) == (
        0, 300, 300, 400)


def test_run_and_compare_runs_are_the_report_packages():
    """Finished runs as objects: one public path, cryptorl_jax.report (from report/runs.py)."""
    import cryptorl_jax.report as report
    from cryptorl_jax.report.runs import Run, compare_runs

    assert report.Run is Run and report.compare_runs is compare_runs
    assert {"Run", "compare_runs"} <= set(report.__all__)
