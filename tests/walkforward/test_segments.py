"""Walk-forward segments are row based, never overlap their test rows, and tile the OOS."""

from __future__ import annotations

import pytest

from cryptorl_jax.config import ConfigError, WFOConfig
from cryptorl_jax.walkforward.segments import make_segments


def test_the_default_segments_match_the_original():
    segs = make_segments(49_204, WFOConfig())
    assert (segs[0].train_start, segs[0].train_end) == (0, 12_960)
    assert (segs[0].test_start, segs[0].test_end) == (12_960, 15_120)
    assert segs[1].train_start == 2_160 and segs[1].test_start == 15_120
    assert len(segs) == (49_204 - 12_960) // 2_160
    for a, b in zip(segs, segs[1:]):
        assert a.test_end == b.test_start  # stitched OOS is contiguous
    for s in segs:
        assert s.train_end <= s.test_start and s.test_end <= 49_204


def test_embargo_offset_subset_and_errors():
    w = WFOConfig(train_months=2, test_months=1, step_months=1, hours_per_month=10,
                  embargo_hours=3)
    segs = make_segments(100, w, offset=7)
    assert segs[0].train_start == 7 and segs[0].test_start == 7 + 20 + 3
    assert all(s.test_start - s.train_end == 3 for s in segs)
    assert [s.index for s in make_segments(100, WFOConfig(**{**w.__dict__,
                                                             "max_segments": 2}))] == [0, 1]
    picked = make_segments(100, WFOConfig(**{**w.__dict__, "segments": (3, 0)}))
    assert [s.index for s in picked] == [0, 3]
    with pytest.raises(ConfigError, match="wfo.segments"):
        make_segments(100, WFOConfig(**{**w.__dict__, "segments": (99,)}))
    with pytest.raises(ConfigError, match="do not fit"):
        make_segments(30, w)
