"""Degenerate outcomes through the whole report (issue 41): a flat book, an agent always at the
cap, a segment with no tradable hour, a non-finite number in one seed's returns, a run of one
seed, and a tuning study in which every trial fails.

One tiny walk-forward run (one segment, two seeds) is trained once for the module; each case
copies it into an output directory of its own, rebuilds its segment frame from chosen actions
through the same backtest (`backtest.oos.backtest_frame`) or damages it, and calls the report
writer again. Each case checks what the user sees and that nothing written before is lost.
The flat run trained end to end (the issue's reproduction) is the slow test at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import oos as oos_lib
from cryptorl_jax.backtest.memory import policy_memory_hours
from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe
from cryptorl_jax.config import identity, load_config
from cryptorl_jax.core.integrity import FILES, SEAL
from cryptorl_jax.core.io import write_json
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.report import registry
from cryptorl_jax.report.write import write_report
from cryptorl_jax.walkforward import driver
from cryptorl_jax.walkforward.data import prepare_run
from cryptorl_jax.walkforward.runner import run_rows
from tests.walkforward.test_driver import TINY_WFO

ONE = [*TINY_WFO, "wfo.max_segments=1"]


@dataclasses.dataclass
class Finished:
    cfg: object
    market: pd.DataFrame
    workdir: Path
    rows: oos_lib.Rows
    test_rows: tuple[int, int]
    frame: pd.DataFrame  # segment 0's OOS frame as the run wrote it


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """One finished tiny run (segment 0, two seeds) with its report."""
    cfg = load_config(None, [*ONE, "run_name=ordinary"])
    market = make_market(1100, seed=5)
    workdir = tmp_path_factory.mktemp("faults") / "ordinary"
    driver.run(cfg, workdir, market=market)
    run = prepare_run(cfg, market)
    seg = run.segments[0]
    return Finished(cfg, market, workdir, run_rows(run, cfg), (seg.test_start, seg.test_end),
                    pd.read_parquet(RunDir(workdir).segment(0).oos))


def _copy(f: Finished, out: Path, name: str = "ordinary") -> Path:
    """The finished run copied to out/<name> (its own output directory: no registry yet)."""
    dest = out / name
    shutil.copytree(f.workdir, dest)
    return dest


def _rebuilt(f: Finished, actions: np.ndarray, tradable: np.ndarray | None = None
             ) -> pd.DataFrame:
    """Segment 0's OOS frame from these seed actions [S, n] through the same backtest (the
    fitted baselines are left out), with the run's regime column."""
    rows = f.rows if tradable is None else dataclasses.replace(f.rows, tradable=tradable)
    frame = oos_lib.backtest_frame(f.cfg.env, rows, *f.test_rows, actions)
    frame["regime"] = f.frame["regime"].to_numpy()
    return frame


def _put(workdir: Path, frame: pd.DataFrame) -> None:
    """Segment 0's OOS frame replaced and its DONE record sealed again over it: the segment as
    the writer would have written it with this frame (a frame changed behind DONE's back is
    refused as damaged: tests/faults/test_corrupt.py)."""
    seg = RunDir(workdir).segment(0)
    frame.to_parquet(seg.oos)
    record = {k: v for k, v in seg.done_meta().items() if k not in (FILES, SEAL)}
    write_json(seg.done, seg.sealed_done(record))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _metrics(workdir: Path) -> pd.Series:
    table = pd.read_csv(workdir / "metrics.csv", dtype={"segment": str}).set_index("segment")
    return table.loc["all"]


# --------------------------------------------------------------------------------------------
# A flat book
# --------------------------------------------------------------------------------------------


def test_a_flat_book_reports_flat_and_counts_as_sharpe_0_in_a_later_runs_n(finished, tmp_path):
    """Agents that never trade: the report finishes (verdict: flat), the registry records the
    run with Sharpe 0, and an ordinary run reported into the same output directory afterwards
    counts both runs (n_trials 2) with a defined Deflated Sharpe."""
    n = finished.test_rows[1] - finished.test_rows[0]
    flat_cfg = load_config(None, [*ONE, "run_name=flat", "env.no_trade_band=10"])
    flat = _copy(finished, tmp_path, "flat")
    (flat / "config.digest").write_text(identity(flat_cfg).digest() + "\n")
    (flat / "config.yaml").write_text(identity(flat_cfg).to_yaml())
    _put(flat, _rebuilt(finished, np.zeros((2, n))))
    rep = write_report(flat_cfg, flat)
    assert (flat / "metrics.csv").is_file() and (flat / "summary.md").is_file()
    assert "flat" in rep["flags"] and not rep["edge"]
    assert "flat" in rep["verdict"]
    summary = (flat / "summary.md").read_text()
    assert "flat" in summary.split("## Verdict", 1)[1][:1200]
    assert "Per-seed OOS Sharpe: mean undefined" in summary  # not 'nan'
    assert rep["n_trials"] == 1 and math.isnan(rep["sharpe"])
    rec, = registry.read_registry(RunDir(flat).registry)
    assert rec["flat"] is True and rec["sharpe"] == 0.0 and rec["sharpe_per_period"] == 0.0

    ordinary = _copy(finished, tmp_path)
    rep = write_report(finished.cfg, ordinary)
    assert rep["n_trials"] == 2
    assert math.isfinite(rep["dsr"]) and 0.0 <= rep["dsr"] <= 1.0
    r = finished.frame["strategy"].to_numpy(np.float64)
    sr = r.mean() / r.std(ddof=1)
    emax = expected_max_sharpe(2, float(np.var([0.0, sr], ddof=1)))  # the flat run enters as 0
    assert rep["dsr"] == pytest.approx(probabilistic_sharpe(r, emax), rel=1e-12)
    assert _metrics(ordinary)["n_trials"] == 2
    summary = (ordinary / "summary.md").read_text()
    assert "flat (" in summary and "flat book: counted as 0" in summary
    # comparing the two runs deflates by the same rule
    from cryptorl_jax.report import compare_runs

    cmp = compare_runs([flat, ordinary], labels=["flat", "ordinary"])
    assert cmp.n_runs == 2 and cmp.sr_variance == pytest.approx(np.var([0.0, sr], ddof=1))
    assert math.isfinite(cmp.table.loc["ordinary", "dsr_compared"])


def test_a_registry_record_with_a_null_sharpe_counts_as_0(finished, tmp_path):
    """A record written with a null Sharpe (by a version before the flat rule) no longer
    crashes every later report over its window: it counts in N with Sharpe 0."""
    ordinary = _copy(finished, tmp_path)
    rd = RunDir(ordinary)
    old = {"config_digest": "0123456789abcdef", "run_name": "flat-before", "run_dir": "x",
           "market": registry.market_key(finished.cfg.data),
           "oos_start": str(finished.frame.index[0]), "oos_end": str(finished.frame.index[-1]),
           "n_hours": len(finished.frame), "sharpe": None, "sharpe_per_period": None,
           "segments": [0]}
    rd.registry.write_text(json.dumps(old) + "\n")
    rep = write_report(finished.cfg, ordinary)
    assert rep["n_trials"] == 2 and math.isfinite(rep["dsr"])
    assert "flat-before (0123456789abcdef, Sharpe undefined: counted as 0)" in (
        ordinary / "summary.md").read_text()


# --------------------------------------------------------------------------------------------
# Always at the cap, no tradable hour, one seed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [1.0, -1.0])
def test_an_agent_always_at_the_cap_is_reported_with_no_timing_to_test(finished, tmp_path, cap):
    """Every seed's action at +1 (or -1) every hour: the report finishes; a constant action
    equals its rotations, so the timing null's p is 1; the book is not flat."""
    n = finished.test_rows[1] - finished.test_rows[0]
    workdir = _copy(finished, tmp_path)
    _put(workdir, _rebuilt(finished, np.full((2, n), cap)))
    rep = write_report(finished.cfg, workdir)
    agg = _metrics(workdir)
    if n > 2 * policy_memory_hours(finished.cfg) + 2:
        assert rep["timing_p_value"] == 1.0 and agg["timing_p_value"] == 1.0
    else:  # the OOS is too short for the timing null at the policy's memory: undefined
        assert math.isnan(rep["timing_p_value"]) and math.isnan(agg["timing_p_value"])
    assert "flat" not in rep["flags"] and not rep["edge"]
    assert agg["exposure"] > 0.1 and math.isfinite(agg["sharpe"])
    assert math.isfinite(rep["dsr"])


def test_a_segment_with_no_tradable_hour_warns_and_reports_it_flat(finished, tmp_path, caplog):
    """A test window in which no hour is tradable: the book can never trade, the report warns
    naming the segment and finishes with a flat verdict and a registry Sharpe of 0."""
    n = finished.test_rows[1] - finished.test_rows[0]
    tradable = finished.rows.tradable.copy()
    tradable[finished.test_rows[0] - 1:finished.test_rows[1]] = False
    actions = finished.frame[["action_0", "action_1"]].to_numpy(np.float64).T
    workdir = _copy(finished, tmp_path)
    _put(workdir, _rebuilt(finished, actions, tradable))
    with caplog.at_level(logging.WARNING, logger="cryptorl_jax.report"):
        rep = write_report(finished.cfg, workdir)
    assert any("segment 0: no tradable hour in its test window" in r.getMessage()
               for r in caplog.records)
    assert len(actions[0]) == n and "flat" in rep["flags"] and "flat" in rep["verdict"]
    assert registry.read_registry(RunDir(workdir).registry)[0]["flat"] is True


def test_a_run_of_one_seed_reports_without_a_seed_section(finished, tmp_path):
    """One seed: the ensemble is that seed's book; the report finishes, counts one seed in the
    sceptic's N and leaves out the seeds' dispersion section."""
    workdir = _copy(finished, tmp_path)
    actions = finished.frame[["action_0"]].to_numpy(np.float64).T
    frame = _rebuilt(finished, actions)
    np.testing.assert_array_equal(frame["strategy"].to_numpy(), frame["seed_0"].to_numpy())
    _put(workdir, frame)
    rep = write_report(finished.cfg, workdir)
    summary = (workdir / "summary.md").read_text()
    assert "## Seeds" not in summary and "1 seed(s)" in summary
    assert math.isfinite(rep["sharpe"]) and math.isfinite(rep["dsr"])
    comparison = pd.read_csv(workdir / "comparison.csv", index_col=0)
    assert [c for c in comparison.index if str(c).startswith("seed_")] == ["seed_0"]


# --------------------------------------------------------------------------------------------
# A non-finite number in one seed's returns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_seed_return_is_refused_naming_the_file_and_nothing_changes(
        finished, tmp_path, bad):
    """NaN or inf in one seed's returns: the report is refused with the file, column and hour
    named before anything is written: the run directory and the registry stay byte-identical."""
    out = tmp_path / "out"
    workdir = _copy(finished, out)
    write_report(finished.cfg, workdir)  # the registry and the report exist before the fault
    frame = finished.frame.copy()
    frame.iloc[5, frame.columns.get_loc("seed_1")] = bad
    _put(workdir, frame)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"segment_0/oos\.parquet: column 'seed_1' holds 1 "
                                         rf"non-finite value\(s\) \(the first {bad} at "
                                         + str(frame.index[5]).replace("+", r"\+")):
        write_report(finished.cfg, workdir)
    assert _snapshot(out) == before


def test_the_cli_names_the_damaged_frame_without_a_traceback(finished, tmp_path, capsys):
    """`cryptorl wfo --report-only` over a damaged frame: exit 2, one line naming the file and
    column, no traceback; the invocation is recorded in run_info.json (the earlier one kept in
    its history) and every other file is unchanged."""
    from cryptorl_jax.cli import wfo

    out = tmp_path / "out"
    workdir = _copy(finished, out)
    (tmp_path / "c.yaml").write_text(finished.cfg.to_yaml())
    frame = finished.frame.copy()
    frame.iloc[3, frame.columns.get_loc("seed_0")] = np.nan
    _put(workdir, frame)
    before = _snapshot(out)
    info = json.loads((workdir / "run_info.json").read_text())
    rc = wfo.main(["--config", str(tmp_path / "c.yaml"), "--out", str(out), "--report-only"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "wfo: error: " in err and "segment_0/oos.parquet: column 'seed_0'" in err
    assert "Traceback" not in err
    after = _snapshot(out)
    assert after.pop("ordinary/run_info.json") != before.pop("ordinary/run_info.json")
    assert after == before
    info.pop("history")
    assert json.loads((workdir / "run_info.json").read_text())["history"][-1] == info


# --------------------------------------------------------------------------------------------
# A tuning study in which every trial fails
# --------------------------------------------------------------------------------------------

# each bound alone is valid with the base config (tune.space's check); every combination has
# tqc.batch_size > tqc.buffer_size, so every trial fails on its own configuration
FAILING_SPACE = ("tune.space=[{key: tqc.batch_size, type: int, low: 1000, high: 2000}, "
                 "{key: tqc.buffer_size, type: int, low: 100, high: 900}]")


def test_a_study_whose_every_trial_fails_says_why_and_writes_no_best_config(tmp_path, capsys,
                                                                              monkeypatch):
    """`cryptorl tune` on a space where every trial is a bad configuration: exit 1, the
    message names the trials and their error, no traceback, no best.yaml; the trial log holds
    every trial as FAIL with its error; a second call keeps the first call's trials."""
    from cryptorl_jax.cli import tune
    from cryptorl_jax.tuning import driver as tuning_driver
    from cryptorl_jax.tuning.storage import BEST_CONFIG, TRIAL_LOG

    cfg = load_config(None, [*TINY_WFO, FAILING_SPACE, "tune.segments=[0]"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    monkeypatch.setattr(tuning_driver, "load_market", lambda data: make_market(1100, seed=5))
    argv = ["--config", str(tmp_path / "c.yaml"), "--trials", "2", "--out", str(tmp_path)]
    assert tune.main(argv) == 1
    err = capsys.readouterr().err
    assert "tune: no trial completed, so no best config was written: 2 failed; " in err
    assert "trial(s) [0, 1] failed: ConfigError: " in err and "must be >= tqc.batch_size" in err
    assert "Traceback" not in err
    study_dir = tmp_path / "tiny-tune"
    assert not (study_dir / BEST_CONFIG).exists()
    log = [json.loads(x) for x in (study_dir / TRIAL_LOG).read_text().splitlines()]
    assert [(r["number"], r["state"]) for r in log] == [(0, "FAIL"), (1, "FAIL")]
    assert all("must be >= tqc.batch_size" in r["error"] for r in log)
    first = (study_dir / TRIAL_LOG).read_text()
    assert tune.main([*argv[:3], "1", *argv[4:]]) == 1
    assert "3 failed" in capsys.readouterr().err
    assert (study_dir / TRIAL_LOG).read_text().startswith(first)
    assert not (study_dir / BEST_CONFIG).exists()


# --------------------------------------------------------------------------------------------
# The reproduction, trained end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trained_flat_run_then_an_ordinary_run_into_the_same_directory(finished, tmp_path):
    """The run of issue 41: agents that stay inside a no-trade band of 10 for the whole test
    window. Its report finishes (verdict: flat); an ordinary run into the same output directory
    afterwards finishes too, counting both runs (n_trials 2) with a defined DSR."""
    flat_cfg = load_config(None, [*ONE, "run_name=flat", "env.no_trade_band=10"])
    flat = driver.run(flat_cfg, tmp_path / "flat", market=finished.market)
    assert flat.segments_run == [0] and (tmp_path / "flat" / "metrics.csv").is_file()
    assert "flat" in flat.report["flags"] and "flat" in flat.report["verdict"]
    assert flat.report["n_trials"] == 1
    ordinary = driver.run(finished.cfg, tmp_path / "ordinary", market=finished.market)
    assert ordinary.segments_run == [0]
    assert ordinary.report["n_trials"] == 2 and math.isfinite(ordinary.report["dsr"])
    records = registry.read_registry(tmp_path / "runs.jsonl")
    assert sorted((r["run_name"], r["flat"]) for r in records) == [("flat", True),
                                                                   ("ordinary", False)]
