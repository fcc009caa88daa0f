"""The walk-forward report (report/write.py) tested directly (issue 26): summary.md is rendered
from the report's data alone, a rebuild is idempotent and registers the run once, and the
segment tables leave out what no segment holds."""

from __future__ import annotations

import shutil

import pytest

from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report import read, registry, summary, write


@pytest.fixture(scope="module")
def run(tiny_run):
    """One finished segment of a tiny walk-forward run, and the data its report rendered (the
    session's `tiny_run`, tests/conftest.py)."""
    cfg, workdir, data, _ = tiny_run
    return cfg, workdir, data


def test_the_summary_is_rendered_from_the_data_alone(run, tmp_path):
    """summary.md is exactly render_summary(data), and rendering it reads no file: the run
    directory can be gone."""
    _, workdir, data = run
    text = (workdir / "summary.md").read_text()
    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved)
    shutil.rmtree(workdir)
    try:
        assert summary.render_summary(data) == text
    finally:
        shutil.copytree(moved, workdir)
    assert "## Verdict" in text and "## Timings and memory" in text
    assert data.tables.regimes is not None and data.tables.stationarity is not None
    assert list(data.tables.timings.index) == data.segments == [0]


def test_a_rebuild_is_idempotent_and_registers_the_run_once(run):
    cfg, workdir, _ = run
    rd = RunDir(workdir)
    before = {p.name: p.read_bytes() for p in (rd.summary, rd.metrics, rd.comparison,
                                               rd.diagnostics, rd.power)}
    write.write_report(cfg, workdir)
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
    t = read.read_segment_tables(RunDir(copy), [0])
    assert t.regimes is None and t.encoder is None and t.stationarity is None
    assert t.regime_metrics is None and list(t.timings.index) == [0]
