"""The public API names of docs/architecture.md resolve where they are documented, and the
package root's facade (`from cryptorl_jax import Run, ...`, docs/usage.md "Python API")."""

import importlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import cryptorl_jax

FACADE = ["Run", "compare_runs", "load_config", "run_walkforward", "evaluate_window"]

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
    *[("cryptorl_jax", name) for name in FACADE],
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


def _fresh(code: str) -> None:
    """`code` in a fresh interpreter (nothing imported before it)."""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


NO_JAX = "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)\n"


def test_importing_the_package_and_its_readers_imports_no_jax():
    """`import cryptorl_jax` imports no other module of the package; Run, compare_runs and
    load_config import no JAX (run_walkforward and evaluate_window are loaded on first use)."""
    _fresh("import sys\nimport cryptorl_jax\n"
           "assert not [m for m in sys.modules if m.startswith('cryptorl_jax.')], "
           "sorted(m for m in sys.modules if m.startswith('cryptorl_jax.'))\n"
           "assert 'pandas' not in sys.modules\n"
           "from cryptorl_jax import Run, compare_runs, load_config, __version__\n"
           "import cryptorl_jax.report\n" + NO_JAX
           + "assert 'cryptorl_jax.walkforward' not in sys.modules\n")


def test_the_facade_is_the_documented_objects():
    from cryptorl_jax.config import load_config
    from cryptorl_jax.report import Run, compare_runs
    from cryptorl_jax.walkforward.api import run_walkforward
    from cryptorl_jax.walkforward.evaluate import evaluate_window

    assert (cryptorl_jax.Run, cryptorl_jax.compare_runs, cryptorl_jax.load_config) == (
        Run, compare_runs, load_config)
    assert cryptorl_jax.run_walkforward is run_walkforward
    assert cryptorl_jax.evaluate_window is evaluate_window
    assert set(cryptorl_jax.__all__) == {*FACADE, "__version__"}
    assert set(cryptorl_jax.__all__) <= set(dir(cryptorl_jax))
    assert isinstance(cryptorl_jax.__version__, str) and cryptorl_jax.__version__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        cryptorl_jax.Nope  # noqa: B018


def test_load_config_takes_overrides(tmp_path):
    from cryptorl_jax import load_config

    cfg = load_config(None, ["train.n_seeds=3"])
    assert cfg.train.n_seeds == 3


# --- on one finished tiny run (tests/conftest.py's session-wide `tiny_run`) ------------------


def test_run_walkforward_returns_the_finished_run(tiny_run):
    """run_walkforward (the `cryptorl wfo` of Python) wrote `<out>/<run_name>/` and returned
    its Run; the Run's tables are keyed by the segment's integer and 'all'."""
    from cryptorl_jax import Run

    cfg, workdir, _, run = tiny_run
    assert isinstance(run, Run) and run.path == workdir and run.segment_numbers == [0]
    assert list(run.metrics.index) == [0, "all"]
    assert list(run.diagnostics.index) == [0, "all"] and list(run.power.index) == [0, "all"]
    assert list(run.segments.index) == [0] and set(run.insample) == set(run.history) == {0}
    csv = pd.read_csv(workdir / "metrics.csv", dtype={"segment": str})
    assert list(csv["segment"]) == ["0", "all"]  # the file keeps its text labels
    assert run.metrics.loc[0, "sharpe"] == float(csv.loc[0, "sharpe"])
    assert run.metrics.loc["all", "sharpe"] == run.headline["sharpe"]


def _verdict_paragraph(summary_md: str) -> str:
    after = summary_md.split("## Verdict\n\n", 1)[1]
    return after.split("\n\n", 1)[0]


def test_run_verdict_is_the_summarys(tiny_run):
    """Run.verdict, rebuilt from metrics.csv's `all` row and diagnostics.csv's flags, is the
    paragraph summary.md opens with, and its edge is the report's."""
    from cryptorl_jax import Run
    from cryptorl_jax.report import Verdict

    _, workdir, data, _ = tiny_run
    v = Run.load(workdir).verdict
    assert isinstance(v, Verdict)
    assert v.text == _verdict_paragraph((workdir / "summary.md").read_text()) == data.verdict
    assert v.edge == v.text.startswith("**Evidence of an edge.**") and str(v) == v.text


def test_reading_the_run_and_its_verdict_imports_no_jax(tiny_run):
    workdir = tiny_run[1]
    _fresh("import sys\nfrom cryptorl_jax import Run\n"
           f"r = Run.load({str(workdir)!r}); r.verdict; r.metrics.loc[0]; r.power; r.diagnostics\n"
           + NO_JAX)


def test_evaluate_window_takes_a_run(tiny_run, tmp_path):
    """evaluate_window(Run, ...) is evaluate_window(its directory, ...): the segment's own test
    window reproduces its OOS returns."""
    from cryptorl_jax import evaluate_window
    from cryptorl_jax.market.synthetic import make_market

    _, workdir, _, run = tiny_run
    oos = pd.read_parquet(workdir / "segment_0" / "oos.parquet")
    res = evaluate_window(run, 0, str(oos.index[0]), str(oos.index[-1]), out_dir=tmp_path / "e",
                          market=make_market(1100, seed=5), tearsheet=False)
    assert res.in_sample_hours == 0 and res.oos.index.equals(oos.index)
    assert np.allclose(res.oos["strategy"], oos["strategy"], rtol=0, atol=1e-7)
