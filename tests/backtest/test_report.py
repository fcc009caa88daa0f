"""The walk-forward report (backtest/report.py) tested directly (issue 26): summary.md is rendered
from the report's data alone, a rebuild is idempotent and registers the run once, the OOS
deflation counts the runs over the same window and market, and the readers refuse what they
cannot use."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import registry, report
from cryptorl_jax.backtest.metrics import expected_max_sharpe
from cryptorl_jax.config import load_config
from cryptorl_jax.layout import RunDir
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished segment of a tiny walk-forward run, and the data its report rendered."""
    cfg = load_config(None, [*TINY_WFO, "wfo.max_segments=1", "run_name=rep"])
    workdir = tmp_path_factory.mktemp("report") / "rep"
    seen = []
    render = report.render_summary
    mp = pytest.MonkeyPatch()
    mp.setattr(report, "render_summary", lambda d: seen.append(d) or render(d))
    try:
        driver.run(cfg, workdir, market=make_market(1100, seed=5))
    finally:
        mp.undo()
    return cfg, workdir, seen[-1]


def test_the_summary_is_rendered_from_the_data_alone(run, tmp_path):
    """summary.md is exactly render_summary(data), and rendering it reads no file: the run
    directory can be gone."""
    _, workdir, data = run
    text = (workdir / "summary.md").read_text()
    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved)
    shutil.rmtree(workdir)
    try:
        assert report.render_summary(data) == text
    finally:
        shutil.copytree(moved, workdir)
    assert "## Verdict" in text and "## Timings (seconds)" in text
    assert data.tables.regimes is not None and data.tables.stationarity is not None
    assert list(data.tables.timings.index) == data.segments == [0]


def test_a_rebuild_is_idempotent_and_registers_the_run_once(run):
    cfg, workdir, _ = run
    rd = RunDir(workdir)
    before = {p.name: p.read_bytes() for p in (rd.summary, rd.metrics, rd.comparison,
                                               rd.diagnostics, rd.power)}
    report.write_report(cfg, workdir)
    after = {p.name: p.read_bytes() for p in (rd.summary, rd.metrics, rd.comparison,
                                              rd.diagnostics, rd.power)}
    assert after == before
    records = registry.read_registry(rd.registry)
    assert [r["run_name"] for r in records] == ["rep"]


def test_segment_tables_leave_out_what_no_segment_holds(run, tmp_path):
    _, workdir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    seg = RunDir(copy).segment(0)
    for p in (seg.regime_stats, seg.encoder_report, seg.stationarity, seg.regime_metrics):
        p.unlink()
    t = report.read_segment_tables(RunDir(copy), [0])
    assert t.regimes is None and t.encoder is None and t.stationarity is None
    assert t.regime_metrics is None and list(t.timings.index) == [0]


def _record(name, start, end, sr, market="m", digest=None):
    return {"config_digest": digest or name, "run_name": name, "market": market,
            "oos_start": start, "oos_end": end, "n_hours": 100, "sharpe_per_period": sr}


def test_the_oos_deflation_counts_runs_over_the_same_window_and_market():
    a = _record("a", "2024-01-01", "2024-02-01", 0.02)
    records = [a, _record("b", "2024-01-01", "2024-02-01", -0.01),
               _record("c", "2024-01-01", "2024-03-01", 0.5),  # another window
               _record("d", "2024-01-01", "2024-02-01", 0.7, market="planted")]
    d = report.deflation_of(records, a)
    assert d.n_runs == 2
    var = float(np.var([0.02, -0.01], ddof=1))
    assert d.sr_variance == pytest.approx(var)
    assert d.expected_max_sharpe == pytest.approx(expected_max_sharpe(2, var))
    alone = report.deflation_of([a], a)
    assert alone.n_runs == 1 and alone.expected_max_sharpe == 0.0


def test_oos_record_holds_the_per_period_and_annual_sharpe(tmp_path):
    idx = pd.date_range("2024-01-01", periods=50, freq="h", tz="UTC")
    r = np.random.default_rng(0).normal(0.001, 0.01, 50)
    rec = report.oos_record(pd.DataFrame({"strategy": r}, index=idx), "abc", "x", tmp_path,
                            [0, 1], market="m")
    per = r.mean() / r.std(ddof=1)
    assert rec["sharpe_per_period"] == pytest.approx(per)
    assert rec["sharpe"] == pytest.approx(per * math.sqrt(8760))
    assert (rec["oos_start"], rec["n_hours"], rec["segments"]) == (str(idx[0]), 50, [0, 1])


def test_stitch_refuses_overlapping_segments(tmp_path):
    rd = RunDir(tmp_path)
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    for k, lo in ((0, 0), (1, 5)):
        rd.segment(k).path.mkdir(parents=True)
        pd.DataFrame({"strategy": np.zeros(5)}, index=idx[lo:lo + 5]).to_parquet(
            rd.segment(k).oos)
    assert len(report.stitch(tmp_path, [0, 1])) == 10
    # segment 1 now starts inside segment 0
    pd.DataFrame({"strategy": np.zeros(5)}, index=idx[2:7]).to_parquet(rd.segment(1).oos)
    with pytest.raises(ValueError, match="overlap or are out of order"):
        report.stitch(tmp_path, [0, 1])


def test_trial_log_counts_completed_and_pruned_trials(tmp_path):
    log = tmp_path / "trials.jsonl"
    lines = [{"state": "COMPLETE", "sharpe": 1.0}, {"state": "COMPLETE", "sharpe": 3.0},
             {"state": "PRUNED", "value": None}, {"state": "FAIL", "value": None}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    n, var, source = report.read_trial_log(str(log), tmp_path)
    assert n == 3 and source == str(log)
    assert var == pytest.approx(np.var([1 / math.sqrt(8760), 3 / math.sqrt(8760)], ddof=1))
    assert report.read_trial_log(None, tmp_path)[0] == 1
    with pytest.raises(FileNotFoundError, match="wfo.trial_log"):
        report.read_trial_log(str(tmp_path / "missing.jsonl"), tmp_path)
