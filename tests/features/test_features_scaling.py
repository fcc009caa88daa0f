"""RobustScaler: fitted on train rows only, clipped, IQR guard, JSON round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import FeaturesConfig
from cryptorl_jax.features import RobustScaler, build_features, warmup_rows
from cryptorl_jax.market.synthetic import make_market

TRAIN = slice(0, 700)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return make_market(1000, seed=11)


@pytest.fixture(scope="module")
def features(market) -> pd.DataFrame:
    return build_features(market, FeaturesConfig())


def test_fit_uses_train_rows_only(market, features):
    scaler = RobustScaler().fit(features.iloc[TRAIN])
    # change every test row of the market, rebuild the features, refit on the same train rows
    changed = market.copy()
    changed.attrs.update(market.attrs)
    for col in changed.columns:
        if not col.endswith("_fresh"):
            changed.iloc[TRAIN.stop:, changed.columns.get_loc(col)] *= 3.0
    refit = RobustScaler().fit(build_features(changed, FeaturesConfig()).iloc[TRAIN])
    assert refit.to_dict() == scaler.to_dict()
    # whereas fitting on all rows would have seen the change
    assert RobustScaler().fit(build_features(changed, FeaturesConfig())).to_dict() != \
        RobustScaler().fit(features).to_dict()


def test_transform_median_iqr_and_clip(features):
    scaler = RobustScaler(clip=2.0).fit(features.iloc[TRAIN])
    out = scaler.transform(features)
    assert out.dtypes.eq(np.float32).all() and out.index.equals(features.index)
    col = "BTC_logret_1h"
    train = features[col].iloc[TRAIN].dropna()
    q25, med, q75 = np.quantile(train, [0.25, 0.5, 0.75])
    want = np.clip((features[col] - med) / (q75 - q25), -2, 2).astype(np.float32)
    np.testing.assert_allclose(out[col], want, rtol=1e-6)
    body = out.iloc[warmup_rows(features):]
    assert body.abs().max().max() <= 2.0 and (body.abs() == 2.0).any().any()
    assert out.iloc[: warmup_rows(features)].isna().any(axis=1).all()  # NaN stays NaN


def test_bounded_columns_pass_through(features):
    scaler = RobustScaler().fit(features.iloc[TRAIN])
    out = scaler.transform(features)
    for col in ("hour_sin", "dow_cos", "us_market_open", "SPY_fresh", "BTC_fresh"):
        assert scaler.is_passthrough(col) and col not in scaler.scale
        np.testing.assert_array_equal(out[col], features[col].astype(np.float32))
    assert not scaler.is_passthrough("BTC_rsi_14")


def test_zero_iqr_falls_back_to_std_then_one():
    frame = pd.DataFrame({
        "mostly_zero": np.r_[np.zeros(80), np.linspace(-1, 1, 20)],  # quartiles both 0
        "constant": np.full(100, 3.0),
    })
    scaler = RobustScaler().fit(frame)
    assert scaler.scale["mostly_zero"] == pytest.approx(1.349 * frame["mostly_zero"].std(ddof=0))
    assert scaler.scale["constant"] == 1.0
    out = scaler.transform(frame)
    assert np.isfinite(out.to_numpy()).all() and (out["constant"] == 0).all()


def test_save_load_round_trip(tmp_path, features):
    scaler = RobustScaler(clip=4.0).fit(features.iloc[TRAIN])
    path = scaler.save(tmp_path / "seg" / "scaler.json")
    loaded = RobustScaler.load(path)
    assert loaded.to_dict() == scaler.to_dict()
    pd.testing.assert_frame_equal(loaded.transform(features), scaler.transform(features))
    assert RobustScaler.from_dict(scaler.to_dict()).to_dict() == scaler.to_dict()


def test_errors(features, tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        RobustScaler().transform(features)
    scaler = RobustScaler().fit(features.iloc[TRAIN])
    with pytest.raises(ValueError, match="missing.*BTC_ffd"):
        scaler.transform(features.drop(columns=["BTC_ffd"]))
    with pytest.raises(ValueError, match="column 'x' has no finite value"):
        RobustScaler().fit(pd.DataFrame({"x": [np.nan, np.nan]}))
    with pytest.raises(ValueError, match="clip"):
        RobustScaler(clip=0.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a saved RobustScaler"):
        RobustScaler.load(bad)
