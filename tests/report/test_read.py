"""Reading a run's segments (report/read.py): the stitched OOS frame refuses segments that
overlap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report import read


def test_stitch_refuses_overlapping_segments(tmp_path):
    rd = RunDir(tmp_path)
    idx = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")
    for k, lo in ((0, 0), (1, 5)):
        rd.segment(k).path.mkdir(parents=True)
        pd.DataFrame({"strategy": np.zeros(5)}, index=idx[lo:lo + 5]).to_parquet(
            rd.segment(k).oos)
    assert len(read.stitch(tmp_path, [0, 1])) == 10
    # segment 1 now starts inside segment 0
    pd.DataFrame({"strategy": np.zeros(5)}, index=idx[2:7]).to_parquet(rd.segment(1).oos)
    with pytest.raises(ValueError, match="overlap or are out of order"):
        read.stitch(tmp_path, [0, 1])
