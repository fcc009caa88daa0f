"""RegimeModel: causal forward filter (vs hmmlearn and a plain loop), ordering, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM

from cryptorl_jax.config import FeaturesConfig, RegimesConfig
from cryptorl_jax.features import build_features
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.regimes import RegimeModel, forward_filter, log_gaussian, regime_frame
from tests.reference import numpy_features as ref

N_ROWS = 2400
TRAIN = slice(0, 1600)
CUT = 1900
FEATURES = FeaturesConfig(ffd=False, ta=False, zscore=False, range_vol=False, calendar=False)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return make_market(N_ROWS, seed=5)


@pytest.fixture(scope="module")
def features(market) -> pd.DataFrame:
    return build_features(market, FEATURES)


@pytest.fixture(scope="module")
def model(features) -> RegimeModel:
    return RegimeModel(n_states=4, n_iter=60, n_fits=2, seed=0).fit(features.iloc[TRAIN])


def _hmmlearn_twin(model: RegimeModel) -> GaussianHMM:
    """A hmmlearn model holding the same (relabelled) parameters."""
    twin = GaussianHMM(n_components=model.n_states, covariance_type="full")
    twin.n_features = model.means.shape[1]
    twin.startprob_ = model.startprob
    twin.transmat_ = model.transmat
    twin.means_ = model.means
    twin.covars_ = model.covars
    return twin


def test_default_columns_and_warmup(model, features):
    assert model.columns == ["BTC_logret_1h", "BTC_rvol_24"]
    proba = model.filter_proba(features)
    assert proba.shape == (len(features), 4)
    first = int(features[model.columns].notna().all(axis=1).to_numpy().argmax())
    assert first == 24  # the realised vol needs 24 returns
    assert np.isnan(proba[:first]).all()
    np.testing.assert_allclose(proba[first:].sum(axis=1), 1.0, atol=1e-12)
    assert (proba[first:] >= 0).all()


def test_filter_equals_hmmlearn_last_row_of_predict_proba(model, features):
    """P(s_t | x_0..x_t) is the last row of the smoothed posterior of the sequence cut at t."""
    z = model.inputs(features)
    first = int(np.isfinite(z).all(axis=1).argmax())
    z = z[first:first + 400]
    proba = model.filter_proba(features)[first:first + 400]
    twin = _hmmlearn_twin(model)
    for t in (0, 1, 7, 60, 233, 399):
        np.testing.assert_allclose(proba[t], twin.predict_proba(z[:t + 1])[-1], atol=1e-9,
                                   err_msg=f"t={t}")
    # and it is not the smoothed posterior of the whole sequence (which sees the future)
    assert np.abs(twin.predict_proba(z)[:300] - proba[:300]).max() > 1e-3


def test_filter_equals_plain_loop(model, features):
    z = model.inputs(features)[24:324]
    want = ref.forward_filter_loop(z, model.startprob, model.transmat, model.means, model.covars)
    np.testing.assert_allclose(model.filter_proba(features)[24:324], want, atol=1e-10)


def test_log_gaussian_matches_textbook_density():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    cov = np.stack([a @ a.T + np.eye(3), np.diag([0.5, 2.0, 1.0])])
    means = rng.normal(size=(2, 3))
    x = rng.normal(size=(5, 3))
    got = log_gaussian(x, means, cov)
    for t in range(5):
        for k in range(2):
            assert got[t, k] == pytest.approx(np.log(ref.gaussian_pdf(x[t], means[k], cov[k])),
                                              rel=1e-12)


def test_forward_filter_gaps_propagate_through_the_transition():
    transmat = np.array([[0.9, 0.1], [0.2, 0.8]])
    log_b = np.log(np.array([[np.nan, np.nan], [0.5, 0.1], [np.nan, np.nan], [0.2, 0.4]]))
    out = forward_filter(log_b, np.array([0.5, 0.5]), transmat)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], [5 / 6, 1 / 6])
    np.testing.assert_allclose(out[2], out[1] @ transmat)
    pred = out[2] @ transmat * np.array([0.2, 0.4])
    np.testing.assert_allclose(out[3], pred / pred.sum())


def test_filtered_probabilities_are_causal(model, features, market):
    full = model.filter_proba(features)
    prefix = model.filter_proba(build_features(market.iloc[:CUT], FEATURES))
    assert np.array_equal(prefix, full[:CUT], equal_nan=True)
    changed = market.copy()
    changed.attrs.update(market.attrs)
    rng = np.random.default_rng(0)
    factor = np.exp(np.cumsum(rng.normal(0.0, 0.05, N_ROWS - CUT)))
    for f in ("open", "high", "low", "close"):
        changed.iloc[CUT:, changed.columns.get_loc(f"BTC_{f}")] *= factor
    altered = model.filter_proba(build_features(changed, FEATURES))
    assert np.array_equal(altered[:CUT], full[:CUT], equal_nan=True)
    assert not np.allclose(altered[CUT:], full[CUT:])


def test_states_are_ordered_by_volatility_for_every_seed(features, market):
    """Every seed's state 0 is the calmest, and Prob_0 tracks the true calm regime."""
    rets = features["BTC_logret_1h"].to_numpy()
    truth = market.attrs["regime"]  # 0 = calm .. 3 = crash (synthetic generator)
    calm_vol, orders = [], []
    for seed in (0, 3, 4):
        m = RegimeModel(n_states=3, n_iter=60, n_fits=1, seed=seed).fit(features.iloc[TRAIN])
        vol = m.state_volatility()
        assert np.all(np.diff(vol) > 0), f"seed {seed}: {vol}"
        proba = m.filter_proba(features)
        ok = np.isfinite(proba).all(axis=1)
        # probability-weighted return std per state rises with the state index too, which only
        # holds if means, covariances and transitions were permuted together
        weighted = [np.sqrt(np.sum(proba[ok, k] * rets[ok] ** 2) / np.sum(proba[ok, k]))
                    for k in range(3)]
        assert np.all(np.diff(weighted) > 0), f"seed {seed}: {weighted}"
        assert proba[ok & (truth == 0), 0].mean() > 0.5 > proba[ok & (truth == 3), 0].mean()
        calm_vol.append(vol[0])
        orders.append(m.relabel_order)
    np.testing.assert_allclose(calm_vol, calm_vol[0], rtol=0.1)
    assert any(o != sorted(o) for o in orders), "no seed needed relabelling: pick other seeds"


def test_relabelling_permutes_every_parameter_together(model, features):
    perm = np.array([2, 0, 3, 1])
    shuffled = RegimeModel.from_dict(model.to_dict())
    shuffled.startprob = model.startprob[perm]
    shuffled.transmat = model.transmat[np.ix_(perm, perm)]
    shuffled.means = model.means[perm]
    shuffled.covars = model.covars[perm]
    np.testing.assert_allclose(shuffled.filter_proba(features),
                               model.filter_proba(features)[:, perm], atol=1e-12)
    shuffled._order_by_volatility()
    for key in ("startprob", "transmat", "means", "covars"):
        np.testing.assert_array_equal(getattr(shuffled, key), getattr(model, key))


def test_summary(model):
    s = model.summary()
    assert s["n_states"] == 4 and s["columns"] == model.columns and s["n_train"] == 1600 - 24
    assert s["log_likelihood"] == max(s["fit_scores"])
    stay = np.diag(model.transmat)
    got = [st["expected_duration_h"] for st in s["states"]]
    np.testing.assert_allclose(got, 1 / (1 - stay))
    pi = np.array([st["stationary_prob"] for st in s["states"]])
    np.testing.assert_allclose(pi @ model.transmat, pi, atol=1e-10)
    assert pi.sum() == pytest.approx(1.0)
    vols = [st["std"]["BTC_logret_1h"] for st in s["states"]]
    assert vols == sorted(vols)
    table = model.summary_frame()
    assert len(table) == 4 and "duration_h" in table.columns


def test_save_load_round_trip(tmp_path, model, features):
    path = model.save(tmp_path / "segment_0" / "regimes.json")
    loaded = RegimeModel.load(path)
    np.testing.assert_array_equal(loaded.filter_proba(features), model.filter_proba(features))
    assert loaded.summary() == model.summary()


def test_regime_frame(model, features):
    frame = regime_frame(model, features)
    assert list(frame.columns) == ["Prob_0", "Prob_1", "Prob_2", "Prob_3"]
    assert frame.index.equals(features.index)


def test_diag_covariance_and_config(features):
    cfg = RegimesConfig(n_states=2, covariance_type="diag", n_iter=30, n_fits=1)
    m = RegimeModel.from_config(cfg, seed=3).fit(features.iloc[TRAIN])
    assert m.covars.shape == (2, 2, 2) and m.covars[0, 0, 1] == 0.0
    z = m.inputs(features)[24:200]
    np.testing.assert_allclose(m.filter_proba(features)[24:200][-1],
                               _hmmlearn_twin(m).predict_proba(z)[-1], atol=1e-9)


def test_fit_drops_nan_rows_and_errors(features):
    frame = features.iloc[TRAIN].copy()
    frame.iloc[:100, 0] = np.nan
    m = RegimeModel(n_states=2, n_iter=20, n_fits=1).fit(frame)
    assert m.n_train == 1600 - 100
    assert np.isnan(m.filter_proba(frame)[:100]).all()
    with pytest.raises(RuntimeError, match="fit"):
        RegimeModel().filter_proba(features)
    with pytest.raises(ValueError, match="not in the frame"):
        RegimeModel(columns=["nope"]).fit(features)
    with pytest.raises(ValueError, match="need at least"):
        RegimeModel(n_states=4).fit(features.iloc[:30])
    with pytest.raises(ValueError, match="covariance_type"):
        RegimeModel(covariance_type="banana")
