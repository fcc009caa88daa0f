"""The synthetic market has load_market's format, is seeded, and has real regimes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptorl_jax.market.synthetic import make_market


def test_format_matches_load_market():
    frame = make_market(2000, seed=3)
    assert len(frame) == 2000
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert (np.diff(frame.index.asi8) == np.diff(frame.index.asi8)[0]).all()
    for a in ("BTC", "ETH", "SPY", "DXY"):
        for f in ("open", "high", "low", "close", "volume", "fresh"):
            assert f"{a}_{f}" in frame.columns
        assert (frame[f"{a}_high"] >= frame[[f"{a}_open", f"{a}_close"]].max(axis=1)).all()
        assert (frame[f"{a}_low"] <= frame[[f"{a}_open", f"{a}_close"]].min(axis=1)).all()
    assert frame.attrs["traded_asset"] == "BTC"
    assert frame["BTC_fresh"].eq(1).all()
    # the equity-like asset is closed at weekends and at night
    assert 0.1 < frame["SPY_fresh"].mean() < 0.5
    assert frame.loc[frame.index.dayofweek == 6, "SPY_fresh"].eq(0).all()


def test_seeded_and_regimes_differ_in_vol():
    a, b, c = make_market(3000, 1), make_market(3000, 1), make_market(3000, 2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["BTC_close"].equals(c["BTC_close"])
    r = np.log(a["BTC_close"]).diff().to_numpy()[1:]
    regime = a.attrs["regime"][1:]
    vols = [r[regime == k].std() for k in range(4) if (regime == k).sum() > 50]
    assert vols == sorted(vols)


def test_custom_assets():
    frame = make_market(500, 0, assets=("BTC", "ETH"))
    assert {c.split("_")[0] for c in frame.columns} == {"BTC", "ETH"}
