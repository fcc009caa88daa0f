"""`train.demean_returns` (issue 40, drift-neutral training): the training ledger reads the
traded asset's returns minus their mean over the returns training realises, so a book held at
one sign all window earns nothing before costs.

- the mean reads only the realised train returns (poisoned lookback rows move nothing), and
  only those rows change, by one constant;
- the walk-forward's training slices carry it and nothing else changes (features, realised
  vol, closes), and without the key the slices are the market as it is.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward.data import RunData, demean_train_returns, slice_data
from cryptorl_jax.walkforward.runner import prepare_segments
from tests.walkforward.test_driver import TINY_WFO

CHEAP = [*TINY_WFO, "encoder.mode=none", "wfo.max_segments=1"]


def _slice(close: np.ndarray, lo: int = 50, first: int = 150, hi: int = 900):
    cfg = load_config(None, CHEAP)
    feats = np.random.default_rng(1).standard_normal((len(close), 3)).astype(np.float32)
    return slice_data(cfg, feats, close, lo, hi, first, None), first - lo


def test_only_the_realised_train_returns_move_by_their_mean():
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(1000) + 0.002))
    data, fs = _slice(close)
    out = demean_train_returns(data)
    r = np.asarray(data.market.log_returns, np.float64)
    d = np.asarray(out.market.log_returns, np.float64)
    last = int(data.start_range.last_row)
    realised = slice(fs + 1, last + 1)
    assert abs(d[realised].mean()) < 1e-6  # float32 storage
    np.testing.assert_allclose(r[realised] - d[realised], r[realised].mean(), atol=1e-6)
    np.testing.assert_array_equal(d[:fs + 1], r[:fs + 1])  # the lookback rows as they are
    for name in ("features", "realised_vol", "close", "tradable"):
        np.testing.assert_array_equal(np.asarray(getattr(out.market, name)),
                                      np.asarray(getattr(data.market, name)), err_msg=name)
    # poisoned lookback rows (before the first decision) move no realised train return
    poisoned = close.copy()
    poisoned[50:150] *= np.exp(np.cumsum(0.2 + 0.05 * rng.standard_normal(100)))
    again = demean_train_returns(_slice(poisoned)[0])
    np.testing.assert_array_equal(np.asarray(again.market.log_returns)[realised], d[realised])
    with pytest.raises(ValueError, match="one segment"):
        from cryptorl_jax.training.data import stack_segments
        demean_train_returns(stack_segments([data, data]))


def test_the_walk_forward_trains_on_them_and_nothing_else_changes(tmp_path):
    market = make_market(1100, seed=5)
    plain_cfg = load_config(None, CHEAP)
    demeaned_cfg = load_config(None, [*CHEAP, "train.demean_returns=true"])
    run = RunData.build(plain_cfg, market)
    seg = run.segments[:1]
    plain, = prepare_segments(plain_cfg, run, seg, [tmp_path / "a"])
    demeaned, = prepare_segments(demeaned_cfg, run, seg, [tmp_path / "b"])
    r = np.asarray(plain.data.market.log_returns, np.float64)
    d = np.asarray(demeaned.data.market.log_returns, np.float64)
    sr = plain.data.start_range
    realised = slice(int(sr.first_start) + 1, int(sr.last_row) + 1)
    assert abs(r[realised].mean()) > 1e-5  # the market has a drift to take out
    np.testing.assert_allclose(r[realised] - d[realised], r[realised].mean(), atol=1e-6)
    assert abs(d[realised].mean()) < 1e-6
    for name in ("features", "realised_vol", "close"):
        np.testing.assert_array_equal(np.asarray(getattr(demeaned.data.market, name)),
                                      np.asarray(getattr(plain.data.market, name)),
                                      err_msg=name)
    # rows after the train end, poisoned, move no value of the demeaned training slice
    poisoned = market.copy()
    end = seg[0].train_end
    for col in [c for c in poisoned.columns if c.endswith(("_open", "_high", "_low",
                                                             "_close"))]:
        poisoned.iloc[end:, poisoned.columns.get_loc(col)] *= 3.0
    again, = prepare_segments(demeaned_cfg, RunData.build(plain_cfg, poisoned), seg,
                              [tmp_path / "c"])
    np.testing.assert_array_equal(np.asarray(again.data.market.log_returns), d)
    # the plain slices are the market as it is
    raw = np.log(run.close[1:] / run.close[:-1])
    lo = seg[0].train_start - (len(r) - (seg[0].train_end - seg[0].train_start))
    np.testing.assert_allclose(r[1:], raw[lo:lo + len(r) - 1], rtol=0, atol=1e-6)
