"""`cryptorl evaluate` and `cryptorl paper --replay` on part of a test window answer the run's
question: their book starts from the run's own book at the window's first hour, so 24 hours
inside the test window equal the run's OOS rows for those hours; they say which start they
used and why, print the run's own figures beside theirs, and a flat window that never trades
says so (the no-trade band named), writes no tearsheet and exits 0 (issue 42, point 1).

All through `main(argv)` on the session's tiny finished run on a planted market
(tests/conftest.py `tiny_planted_run`: one segment of 100 test hours, two seeds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cryptorl_jax.cli import main
from cryptorl_jax.walkforward.evaluate import evaluate_window
from cryptorl_jax.walkforward.window import (
    FLAT,
    RUN_STATE,
    format_figures,
    resolve_start,
    window_figures,
)

TOL = 1e-9
FIRST = 30  # the window: test hours 30 .. 53 (24 h), well inside the 100-hour test window
LEDGER = ("exposure", "strategy", "seed_0", "seed_1", "action_0", "action_1", "turnover",
          "cost", "financing", "leverage", "benchmark")


def _window(test: pd.DatetimeIndex) -> tuple[pd.Timestamp, pd.Timestamp]:
    return test[FIRST], test[FIRST + 23]


def _own_rows(run_dir: Path, start, end) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "segment_0" / "oos.parquet").loc[start:end]


def _assert_rows_equal(got: pd.DataFrame, own: pd.DataFrame, cols) -> None:
    np.testing.assert_array_equal(got.index, own.index)
    for col in cols:
        np.testing.assert_allclose(got[col].to_numpy(np.float64), own[col].to_numpy(np.float64),
                                   rtol=0, atol=TOL, err_msg=col)


def test_evaluate_inside_the_test_window_equals_the_runs_rows(tiny_planted_run, tmp_path,
                                                               capsys):
    run_dir, _, _, test = tiny_planted_run
    start, end = _window(test)
    own = _own_rows(run_dir, start, end)
    # the run's book is not flat at the window's start: a flat book answers another question
    assert np.any(own["exposure"].to_numpy() != 0)
    assert main(["evaluate", "--run", str(run_dir), "--segment", "0", "--start", str(start),
                 "--end", str(end), "--out", str(tmp_path / "ev"), "--no-tearsheet"]) == 0
    out = capsys.readouterr().out
    got = pd.read_parquet(tmp_path / "ev" / "oos_returns.parquet")
    assert len(got) == 24
    # every column both frames hold: the fund and each seed, the cost stress, the naive
    # baselines (the run's random-baseline seed), the benchmark, the regime
    common = [c for c in got.columns if c in own.columns and got[c].dtype.kind in "fcib"]
    assert {*LEDGER, "strategy_2x_cost", "random", "buy_and_hold"} <= set(common)
    _assert_rows_equal(got, own, common)
    assert "evaluate: start: the run's own book at" in out
    assert "so these hours equal the run's" in out
    # the run's own figures for the same hours are printed beside evaluate's (and agree)
    figures = format_figures(window_figures(own))
    assert f"the run's own OOS rows of these hours (24 h): {figures}" in out
    assert out.count(figures) == 2


def test_evaluate_window_api_says_the_start_and_the_runs_figures(tiny_planted_run, tmp_path):
    run_dir, _, market, test = tiny_planted_run
    start, end = _window(test)
    res = evaluate_window(run_dir, 0, start, end, market=market, out_dir=tmp_path / "ev",
                          tearsheet=False)
    assert res.start.mode == RUN_STATE and res.start.rollout_from == test[0]
    assert res.run_figures is not None and res.run_figures["hours"] == 24
    for k in ("sharpe", "total_return", "mean_exposure"):
        assert res.figures[k] == pytest.approx(res.run_figures[k], abs=1e-9)
    # --flat: the old question (a flat book at the window's start), said so
    flat = evaluate_window(run_dir, 0, start, end, market=market, out_dir=tmp_path / "fl",
                           tearsheet=False, from_run_state=False)
    assert flat.start.mode == FLAT and "--flat" in flat.start.reason
    assert flat.run_figures == res.run_figures
    assert not np.allclose(flat.oos["exposure"], res.oos["exposure"], rtol=0, atol=TOL)


def test_replay_inside_the_test_window_books_the_runs_rows(tiny_planted_run, tmp_path,
                                                            capsys):
    run_dir, data, _, test = tiny_planted_run
    start, end = _window(test)
    book = tmp_path / "book"
    assert main(["paper", "--run", str(run_dir), "--replay", str(start), str(end), "--book",
                 str(book), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    ledger = pd.read_parquet(book / "ledger.parquet")
    own = _own_rows(run_dir, start, end)
    assert len(ledger) == 24
    _assert_rows_equal(ledger, own, LEDGER)
    np.testing.assert_allclose(ledger["nav"], np.cumprod(1.0 + own["strategy"].to_numpy()),
                               rtol=0, atol=TOL)
    assert "paper: start: the run's own book at" in out
    figures = format_figures(window_figures(own))
    assert f"paper: the run's own OOS rows of these hours (24 h): {figures}" in out
    assert f"paper: the book's 24 h: {figures}" in out


@pytest.fixture(scope="module")
def wide_band_run(tiny_planted_run, tmp_path_factory):
    """A copy of the run whose no-trade band (env.no_trade_band = 50) no target leaves: the
    reported case (a flat book whose seeds' actions never leave the band), made certain."""
    run_dir = tiny_planted_run[0]
    copy = tmp_path_factory.mktemp("wideband") / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("paper*"))
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["env"]["no_trade_band"] = 50.0
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return copy


def test_a_flat_window_that_never_trades_says_so(tiny_planted_run, wide_band_run, tmp_path,
                                                 capsys):
    _, data, _, test = tiny_planted_run
    start, end = _window(test)
    out_dir = tmp_path / "ev"
    assert main(["evaluate", "--run", str(wide_band_run), "--segment", "0", "--start",
                 str(start), "--end", str(end), "--out", str(out_dir), "--flat"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "Traceback" not in out + captured.err
    assert "evaluate: start: a flat book (NAV 1, no position) at" in out
    assert "--flat asked for it" in out
    assert "sharpe n/a, total return 0.00%, mean exposure +0.000" in out
    assert ("nothing traded: the book started flat and every exposure is 0" in out
            and "no-trade band env.no_trade_band = 50" in out)
    assert "evaluate: tearsheet skipped" in out
    assert not (out_dir / "tearsheet.html").exists()
    # the run's own rows of those hours (traded with its own band) are printed beside
    own = format_figures(window_figures(_own_rows(wide_band_run, start, end)))
    assert f"the run's own OOS rows of these hours (24 h): {own}" in out
    # paper --replay --flat of a few of those hours says the same
    book = tmp_path / "book"
    assert main(["paper", "--run", str(wide_band_run), "--replay", str(start),
                 str(test[FIRST + 2]), "--book", str(book), "--data-dir", str(data),
                 "--flat"]) == 0
    out = capsys.readouterr().out
    assert "paper: start: a flat book (NAV 1, no position) at" in out
    assert "NAV 1.000000" in out and "no-trade band env.no_trade_band = 50" in out


def test_the_start_rule():
    """`resolve_start`: the run's book inside the test hours (asked or by default), flat
    before them (the run's book refused), flat after them unless asked (then continued)."""
    train = (pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-31 23:00", tz="UTC"))
    test = (pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-29 23:00", tz="UTC"))
    inside = pd.Timestamp("2024-02-20", tz="UTC")
    s = resolve_start(3, train, test, inside)
    assert s.mode == RUN_STATE and s.rollout_from == test[0] and "456 h before" in s.reason
    assert resolve_start(3, train, test, inside, True).mode == RUN_STATE
    assert resolve_start(3, train, test, inside, False).mode == FLAT
    before = pd.Timestamp("2024-01-20", tz="UTC")
    s = resolve_start(3, train, test, before)
    assert s.mode == FLAT and "train rows" in s.reason
    with pytest.raises(ValueError, match="--from-run-state.*before segment 3's OOS hours"):
        resolve_start(3, train, test, before, True)
    after = pd.Timestamp("2024-03-05", tz="UTC")
    s = resolve_start(3, train, test, after)
    assert s.mode == FLAT and "after segment 3's OOS hours" in s.reason
    s = resolve_start(3, train, test, after, True)
    assert s.mode == RUN_STATE and s.rollout_from == test[0] and "continued past" in s.reason


def test_before_the_test_window_the_book_starts_flat_and_the_runs_is_refused(
        tiny_planted_run, tmp_path, capsys):
    run_dir, _, _, test = tiny_planted_run
    hour = pd.Timedelta(hours=1)
    start, end = str(test[0] - 30 * hour), str(test[0] - 7 * hour)  # 24 train hours
    args = ["evaluate", "--run", str(run_dir), "--segment", "0", "--start", start, "--end", end,
            "--out", str(tmp_path / "ev"), "--no-tearsheet"]
    assert main([*args, "--from-run-state"]) == 2
    err = capsys.readouterr().err
    assert "--from-run-state" in err and "before segment 0's OOS hours" in err
    assert "Traceback" not in err
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("evaluate: start: a flat book (NAV 1, no position)" in out
            and "in its train rows (in-sample for this agent)" in out)
    assert "(24 h, 24 in-sample)" in out
    assert "evaluate: the run's own OOS rows hold none of these hours" in out
    # --flat and --from-run-state choose how a replay starts: refused elsewhere
    assert main(["paper", "--run", str(run_dir), "--once", "--flat"]) == 2
    assert "go with --replay" in capsys.readouterr().err
