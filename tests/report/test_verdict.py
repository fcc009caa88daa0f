"""The report's verdict (report/verdict.py): the rule of report/calibration.py (Sharpe > 0 and
PSR >= 0.95^(1/N)), vetoes only by the flags that say the figure is made by something else,
every reason named, the minimum detectable Sharpe named, the timing null beside it."""

from __future__ import annotations

import itertools
import math

import pytest

from cryptorl_jax.report.calibration import min_detectable_sharpe
from cryptorl_jax.report.verdict import VETO_FLAGS, edge, verdict

NAN = float("nan")


def _agg(sharpe=1.2, psr=0.99, dsr=0.97, p=0.01, hours=4320, n=1):
    return {"sharpe": sharpe, "psr": psr, "dsr": dsr, "timing_p_value": p,
            "n_periods": float(hours), "n_trials": float(n)}


def test_a_planted_trend_like_figure_set_is_an_edge():
    """docs/power.md's trend r2: the agents earn 3.34 over six months with PSR 0.992, the
    timing null p 0.627. The AND-of-everything rule said "no evidence" (p >= 0.05); the rule
    says edge and puts the timing null beside it."""
    yes, text = verdict(_agg(3.34, 0.992, 0.992, 0.627), [], 1)
    assert yes and text.startswith("**Evidence of an edge.**")
    assert "timing null does not reject (p = 0.627)" in text
    assert "Beside the verdict, not part of its rule" in text


def test_verdict_names_every_reason():
    yes, text = verdict(_agg(p=0.2), ["memorised"], 3)
    assert not yes and "memorised" in text and "p = 0.200" in text
    yes, text = verdict(_agg(-0.9, 0.1, 0.1, NAN), ["churning"], 1)
    assert not yes
    for part in ("OOS Sharpe is -0.90", "PSR (P[true Sharpe > 0]) 0.100 < 0.95",
                 "one configuration", "timing null is undefined", "It churns"):
        assert part in text, part
    # churning alone does not deny an edge, it warns
    yes, text = verdict(_agg(), ["churning"], 1)
    assert yes and "churns" in text


def test_vetoes_are_the_flags_that_say_the_figure_is_made_by_something_else():
    for flag in ("memorised", "collapsed to buy & hold", "flat"):
        assert flag in VETO_FLAGS
        yes, text = verdict(_agg(), [flag], 1)
        assert not yes and f"flag: {flag}" in text
    # churning and a flag the rule does not know warn, they do not veto
    yes, text = verdict(_agg(), ["churning", "some new flag"], 1)
    assert yes and "some new flag" in text


def test_n_configurations_raise_the_psr_level_and_the_dsr_is_not_used():
    """With N = 5 configurations over the window the PSR must reach 0.95^(1/5) = 0.9898."""
    assert verdict(_agg(psr=0.99, dsr=0.2, n=5), [], 5)[0]
    yes, text = verdict(_agg(psr=0.985, dsr=0.999, n=5), [], 5)
    assert not yes and "0.9898" in text and "N = 5" in text
    assert verdict(_agg(psr=0.96, dsr=0.1), [], 1)[0]  # the DSR plays no part at N = 1 either


def test_the_verdict_names_its_minimum_detectable_sharpe():
    for hours, n in ((4320, 1), (720, 1), (17280, 4)):
        mds = min_detectable_sharpe(hours, n)
        for yes_case in (_agg(hours=hours, n=n, psr=0.9999), _agg(hours=hours, n=n, psr=0.5)):
            text = verdict(yes_case, [], n)[1]
            assert (f"With {hours:,} OOS hours this rule detects a true Sharpe of {mds:.2f} "
                    "with 80 % probability") in text
    assert "3.54" in verdict(_agg(hours=4320), [], 1)[1]
    assert "power is not stated" in verdict(_agg(hours=NAN), [], 1)[1]


def test_edge_is_the_verdicts_yes():
    """`edge` (what the power study counts) answers as `verdict` does, reading N from the row's
    n_trials."""
    grid = itertools.product((-0.5, 0.0, 1.0), (NAN, 0.5, 0.95, 0.991), (1, 5),
                             ([], ["churning"], ["flat"]))
    for sharpe, psr, n, flags in grid:
        agg = _agg(sharpe=sharpe, psr=psr, n=n)
        assert edge(agg, flags) == verdict(agg, flags, n)[0], (sharpe, psr, n, flags)
    assert edge({"sharpe": 1.0, "psr": 0.96}, []) is True  # no n_trials: N = 1
    assert math.isclose(min_detectable_sharpe(4320), 3.5418, abs_tol=1e-3)


@pytest.mark.parametrize("p,word", [(0.01, "rejects (p = 0.010)"),
                                    (0.5, "does not reject (p = 0.500)")])
def test_the_timing_null_is_reported_beside(p, word):
    yes, text = verdict(_agg(p=p), [], 1)
    assert yes and word in text


def test_an_undefined_timing_null_says_why():
    """A p left undefined because the OOS is too short for the agents' memory (the tiny run's
    100-h segments against M = 481 h) says so with the hours it would need, never a sentence
    about rotations that were not drawn; without the memory, the other reason."""
    agg = dict(_agg(p=NAN, hours=300), timing_memory_hours=481.0)
    text = verdict(agg, [], 1)[1]
    assert ("the timing null is undefined for this run (OOS too short for the timing null at "
            "memory M = 481 h: 300 h, it needs at least 965 h") in text
    assert "earn as much" not in text and "rejects" not in text
    assert "no per-seed actions" in verdict(_agg(p=NAN), [], 1)[1]
