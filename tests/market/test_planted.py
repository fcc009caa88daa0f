"""Planted-edge markets, the generator (market/planted.py): the real vol structure, causality,
the oracle's time convention and the regime family's hidden state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.market import planted as P
from cryptorl_jax.market.loader import load_market
from tests.market.planted_template import DATA, ROOT, template_returns


@pytest.fixture(scope="module")
def template():
    """The real BTC's bar log returns on the full hourly grid of SPAN (what write_* uses)."""
    return template_returns()


def test_none_is_trend_at_zero_and_keeps_the_real_vol(template, tmp_path):
    real, index = template
    lat = P.generate("none", 0.0, real, P.Shocks.draw(0, len(real), 5.0))
    same = P.generate("trend", 0.0, real, P.Shocks.draw(0, len(real), 5.0))
    np.testing.assert_array_equal(lat["r"], same["r"])
    assert np.all(lat["mu"] == 0)
    r = pd.Series(lat["r"])
    obs = pd.Series(real).dropna()
    assert abs(r.std() / obs.std() - 1) < 0.15  # the real hourly vol level
    a = (r - r.mean()).abs()
    acf = np.array([a.autocorr(lag) for lag in range(1, 25)])
    assert acf.min() > 0.05 and acf.mean() > 0.1  # vol clustering
    assert abs(r.mean() * HOURS_PER_YEAR) < 0.5  # a martingale up to noise
    # the written BTC is the same for none and trend at strength 0
    kw = dict(template_dir=DATA, start="2024-01-01", end="2024-02-15")
    a_ = P.write_planted_files(tmp_path / "none", "none", 0, 5, **kw)
    b_ = P.write_planted_files(tmp_path / "trend0", "trend", 0.0, 5, **kw)
    assert a_.files["BTC"].read_bytes() == b_.files["BTC"].read_bytes()


@pytest.mark.parametrize("family", ["trend", "lead", "regime"])
def test_causal_poisoning_the_future_changes_nothing_before(template, family):
    real, _ = template
    n, cut = len(real), 9000
    shocks = P.Shocks.draw(1, n, 5.0)
    rng = np.random.default_rng(99)
    poisoned = dataclasses.replace(
        shocks, **{f.name: np.concatenate([getattr(shocks, f.name)[:cut],
                                           rng.permutation(getattr(shocks, f.name)[cut:]) * 3])
                   for f in dataclasses.fields(shocks)})
    real2 = real.copy()
    real2[cut:] = rng.permutation(real2[cut:]) * 2
    a = P.generate(family, P.DEFAULT_STRENGTH, real, shocks)
    b = P.generate(family, P.DEFAULT_STRENGTH, real2, poisoned)
    for key in a:
        stop = cut - 1 if key == "next_drift" and family == "regime" else cut
        np.testing.assert_array_equal(a[key][:stop], b[key][:stop], err_msg=key)
        assert not np.array_equal(a[key][cut + 1:], b[key][cut + 1:]), key


def test_time_convention_action_at_t_realises_the_drift_of_t_plus_1(template, tmp_path):
    real, _ = template
    for family in ("trend", "lead"):
        lat = P.generate(family, P.DEFAULT_STRENGTH, real, P.Shocks.draw(0, len(real), 5.0))
        np.testing.assert_array_equal(lat["next_drift"][:-1], lat["mu"][1:])
        np.testing.assert_array_equal(np.sign(lat["action"][:-1]), np.sign(lat["mu"][1:]))
    # end to end through the loader: the same seed at strengths 0 and 4 differs only by the
    # drift, so the return realised at row t + 1 differs by the oracle's next_drift at row t
    kw = dict(template_dir=DATA, start="2024-03-01", end="2024-04-15")
    zero = P.write_planted_files(tmp_path / "z", "lead", 0.0, 7, **kw)
    four = P.write_planted_files(tmp_path / "f", "lead", 4.0, 7, **kw)
    cfg = load_config(ROOT / "configs" / "quick.yaml").data
    frames = [load_market(dataclasses.replace(cfg, data_dir=str(m.out_dir), cache_dir=None,
                                              start=None, end=None)) for m in (zero, four)]
    diff = np.log(frames[1]["BTC_close"]).diff() - np.log(frames[0]["BTC_close"]).diff()
    oracle = pd.read_parquet(four.oracle_path)
    expected = oracle["next_drift"].shift(1).reindex(diff.index)  # drift of t+1 known at t
    ok = diff.notna() & expected.notna()
    assert ok.sum() > 900
    np.testing.assert_allclose(diff[ok], expected[ok], atol=1e-8)
    assert (np.sign(oracle["action"]) == np.sign(oracle["signal"])).all()
    # the lead signal is ETH's log price level at the same row
    eth = np.log(frames[1]["ETH_close"])
    sig = oracle["signal"].reindex(eth.index)
    np.testing.assert_allclose(eth - eth.iloc[0], 0.1 * (sig - sig.iloc[0]), atol=1e-8)


def test_regime_oracle_reads_the_hidden_state(template):
    real, index = template
    lat = P.generate("regime", P.DEFAULT_STRENGTH, real, P.Shocks.draw(0, len(real), 5.0))
    state = lat["state"]
    assert 0.2 < state.mean() < 0.45  # a third of the hours turbulent
    assert ((lat["p_turbulent"] > 0.5) == (state == 1)).mean() > 0.9
    r = lat["r"]
    assert r[state == 1].std() > 2 * r[state == 0].std()
    np.testing.assert_array_equal(lat["state_action"], np.where(state == 0, 1.0, -1.0))
