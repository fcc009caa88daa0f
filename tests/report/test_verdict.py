"""The report's verdict (report/verdict.py): every reason that denies an edge is named."""

from __future__ import annotations

from cryptorl_jax.report.verdict import verdict


def test_verdict_names_every_reason_and_needs_all_tests():
    edge, text = verdict({"sharpe": 1.2, "psr": 0.99, "dsr": 0.97, "timing_p_value": 0.01},
                         [], 3)
    assert edge and text.startswith("**Evidence of an edge.**")
    edge, text = verdict({"sharpe": 1.2, "psr": 0.99, "dsr": 0.97, "timing_p_value": 0.2},
                         ["memorised"], 3)
    assert not edge and "timing null p = 0.200" in text and "memorised" in text
    edge, text = verdict({"sharpe": -0.9, "psr": 0.1, "dsr": 0.1,
                          "timing_p_value": float("nan")}, ["churning"], 1)
    assert not edge
    for part in ("OOS Sharpe is -0.90", "PSR 0.100 < 0.95", "N = 1", "p = undefined"):
        assert part in text, part
    # churning alone does not deny an edge, it warns
    edge, text = verdict({"sharpe": 1.2, "psr": 0.99, "dsr": 0.97, "timing_p_value": 0.01},
                         ["churning"], 1)
    assert edge and "churns" in text
