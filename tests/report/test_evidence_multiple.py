"""The report's multiple testing (report.evidence.multiple_tests, write_sceptic, the summary's
section and its HTML): mean return against buy & hold and flat, risk-adjusted against buy &
hold, each row and sentence naming its footing; on a rising market a half-exposure ensemble
with a higher Sharpe is superior only risk-adjusted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.inference import MEAN_RETURN
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report.evidence import Sceptic, TrialCount, multiple_tests, write_sceptic
from cryptorl_jax.report.html import markdown_to_html
from cryptorl_jax.report.summary import rl_vs_baselines_lines

N = 6000


def _oos(seed: int = 0) -> pd.DataFrame:
    """A rising buy & hold (annual Sharpe ~3), a half-exposure ensemble and seed with a small
    edge of their own (Sharpe ~5), a momentum baseline that is noise, flat."""
    rng = np.random.default_rng(seed)
    bh = rng.normal(3.0 / math.sqrt(8760) * 0.01, 0.01, N)
    own = rng.normal(1e-4, 1.5e-3, N)
    return pd.DataFrame({"strategy": 0.5 * bh + own, "seed_0": 0.5 * bh + own
                         + rng.normal(0, 2e-4, N), "momentum": rng.normal(0, 0.01, N),
                         "momentum_action": np.zeros(N), "vol_targeted_buy_and_hold": 0.8 * bh,
                         "buy_and_hold": bh, "flat": np.zeros(N)},
                        index=pd.date_range("2024-01-01", periods=N, freq="h", tz="UTC"))


def test_multiple_tests_name_their_footings_and_tell_mean_from_sharpe(tmp_path):
    oos = _oos()
    tests = multiple_tests(oos, reps=300, seed=0)
    assert [(t.benchmark, t.footing.split(" (")[0]) for t in tests] == [
        ("buy_and_hold", MEAN_RETURN), ("buy_and_hold", "risk-adjusted"),
        ("flat", MEAN_RETURN)]
    mean_bh, risk_bh, mean_flat = tests
    assert "strategy" not in mean_bh.superior  # less exposure: lower mean in a rising market
    assert {"strategy", "seed_0"} <= set(risk_bh.superior)  # higher Sharpe
    assert "momentum" not in risk_bh.superior
    vol = oos["buy_and_hold"].std(ddof=1) * math.sqrt(8760)
    assert risk_bh.vol_scaled_to == vol
    assert risk_bh.footing == (f"risk-adjusted (vol-scaled to buy_and_hold's {100 * vol:.0f} % "
                               "a year)")
    assert mean_flat.strategies[-1] == "buy_and_hold"

    rd = RunDir(tmp_path)
    count = TrialCount(runs=1, tuning_trials=0, seeds=1, baseline_choices=0,
                       mean_correlation=math.nan, series=2, sr_variance=0.0)
    write_sceptic(rd, Sceptic(baselines=pd.DataFrame(), tests=tests,
                              power=pd.DataFrame({"hours": [N]}, index=["all"]), count=count,
                              dsr=math.nan, dsr_effective=math.nan))
    csv = pd.read_csv(rd.multiple_testing, index_col=0)
    assert list(csv.index) == ["buy_and_hold", "buy_and_hold", "flat"]
    assert list(csv["footing"]) == [t.footing for t in tests]
    assert math.isnan(csv["vol_scaled_to"].iloc[0]) and csv["vol_scaled_to"].iloc[1] == vol

    table = pd.DataFrame({"sharpe": [1.0, 0.5]}, index=["strategy", "momentum"])
    md = "\n".join(rl_vs_baselines_lines(table, tests))
    assert "**mean return**" in md and "**risk-adjusted (vol-scaled to buy & hold's" in md
    assert "cannot beat it on this footing, whatever its Sharpe" in md
    assert ("- Against buy_and_hold, mean return: the ensemble is not among the strategies "
            "StepM finds superior") in md
    assert f"- Against buy_and_hold, {risk_bh.footing}: the ensemble is among the " in md
    assert "- Against flat, mean return:" in md
    html = markdown_to_html(md)
    assert f"<td>{risk_bh.footing}</td>" in html.replace("&#x27;", "'")
    assert "<strong>mean return</strong>" in html


def test_no_risk_adjusted_test_without_a_moving_benchmark():
    oos = _oos(1).assign(buy_and_hold=0.0)
    tests = multiple_tests(oos, reps=100, seed=0)
    assert [(t.benchmark, t.footing) for t in tests] == [("buy_and_hold", MEAN_RETURN),
                                                         ("flat", MEAN_RETURN)]
