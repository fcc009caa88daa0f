"""The baselines' market (walkforward.runner.baseline_market): the forecasters' inner split
reads the features through the segment's transforms (FFD order, scaler, HMM) refitted on the
inner train rows only."""

from __future__ import annotations

import numpy as np

from cryptorl_jax.config import load_config
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import runner
from cryptorl_jax.walkforward.data import fit_segment_transforms, prepare_run
from tests.walkforward.test_driver import TINY_WFO


def test_inner_split_transforms_ignore_the_validation_rows():
    """Poison the market on segment 0's validation rows (inside its train window): the inner
    refit's matrix over the rows before them is bit-identical, while the segment's matrix
    (transforms fitted on all its train rows) moves there: what the inner split read before."""
    cfg = load_config(None, TINY_WFO)
    market = make_market(1100, seed=5)
    run = prepare_run(cfg, market)
    seg = run.segments[0]
    n_val = int(round((seg.train_end - seg.train_start) * cfg.baselines.validation_fraction))
    v0 = seg.train_end - n_val
    poisoned = market.copy()
    rows = poisoned.index[v0:seg.train_end]
    rng = np.random.default_rng(0)
    for col in poisoned.columns:
        if poisoned[col].dtype.kind == "f" and not col.endswith("_fresh"):
            poisoned.loc[rows, col] = poisoned.loc[rows, col].to_numpy() * rng.lognormal(
                0.0, 0.5, len(rows))
    run_p = prepare_run(cfg, poisoned)
    seg_p = run_p.segments[0]
    assert seg_p == seg
    clean = runner.baseline_market(cfg, run, fit_segment_transforms(cfg, run, seg), seg)
    dirty = runner.baseline_market(cfg, run_p, fit_segment_transforms(cfg, run_p, seg_p), seg_p)
    before = slice(seg.train_start, v0)
    assert not np.allclose(clean.features[before], dirty.features[before], equal_nan=True)
    np.testing.assert_array_equal(clean.refit(seg.train_start, v0)[before],
                                  dirty.refit(seg.train_start, v0)[before])
    # the refit is the runner's own transform on the inner rows (same columns, same shape)
    assert clean.refit(seg.train_start, v0).shape == clean.features.shape
