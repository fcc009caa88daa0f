"""metrics.csv's figures (report/tables.py): the ensemble's timing null built from the frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import nulls
from cryptorl_jax.report import tables
from tests.backtest.test_nulls import CFG, _blind, _close, _market


def test_report_builds_the_null_from_the_frame():
    """tables.timing_test reads action_<s>, leverage, tradable, benchmark and segment (seeds in
    numeric order); a frame without the per-seed actions (written before them) has no test."""
    close = _close(1000, 12)
    lev, ret = _market(close, CFG.vol_window + 1)
    n = len(lev)
    actions = _blind(n, 13, s=11)
    frame = pd.DataFrame({"benchmark": ret, "leverage": lev, "tradable": np.ones(n, bool),
                          "segment": np.repeat([3, 4], [200, n - 200]),
                          **{f"action_{s}": actions[s] for s in range(11)}})
    got = tables.timing_test(frame, CFG, seed=5, n_null=40, memory_hours=90)
    want = nulls.action_timing_null(actions, lev, ret, np.ones(n, bool),
                                    frame["segment"].to_numpy(), CFG, n_null=40, seed=5,
                                    memory_hours=90)
    assert got.n_seeds == 11 and got.sharpe == want.sharpe and got.memory_hours == 90
    np.testing.assert_array_equal(got.null_sharpes, want.null_sharpes)
    assert tables.timing_test(frame.drop(columns="leverage"), CFG, seed=5,
                              memory_hours=90) is None
    assert tables.timing_test(frame[["benchmark", "leverage", "tradable", "segment"]], CFG,
                              seed=5, memory_hours=90) is None
