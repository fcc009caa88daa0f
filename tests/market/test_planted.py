"""Planted-edge markets: the pipeline's format, oracle power, vol structure, causality,
determinism, the oracle's time convention and input errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.market import planted as P
from cryptorl_jax.market.loader import load_market, load_ohlcv

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SPAN = ("2021-01-01", "2023-12-31")  # three years of the template: Sharpe SE ~0.6


@pytest.fixture(scope="module")
def template():
    """The real BTC's bar log returns on the full hourly grid of SPAN (what write_* uses)."""
    btc = P._cut(P._read_template(DATA / P.FILES["BTC"]), pd.Timestamp(SPAN[0], tz="UTC"),
                 pd.Timestamp(SPAN[1], tz="UTC"))
    first = btc["ts"].iloc[0]
    n = int((btc["ts"].iloc[-1] - first) / pd.Timedelta(hours=1)) + 1
    pos = ((btc["ts"] - first) / pd.Timedelta(hours=1)).to_numpy().astype(int)
    real = np.full(n, np.nan)
    real[pos] = np.log(btc["close"].astype(float).to_numpy()
                       / btc["open"].astype(float).to_numpy())
    index = pd.date_range(first, periods=n, freq="h", tz="UTC") + pd.Timedelta(hours=1)
    return real, index


def _oracle(real, index, family, strength, seed=0):
    lat = P.generate(family, strength, real, P.Shocks.draw(seed, len(real), 5.0))
    frame = pd.DataFrame({"BTC_close": 30000.0 * np.exp(np.cumsum(lat["r"])),
                          "action": lat["action"]}, index=index)
    return P.oracle_sharpe(frame), P.oracle_sharpe(frame, cost_multiplier=0.0)


@pytest.fixture(scope="module")
def full_trend(tmp_path_factory):
    return P.write_planted_market(tmp_path_factory.mktemp("trend"), "trend",
                                  P.DEFAULT_STRENGTH, 0, template_dir=DATA)


def test_pipeline_loads_it_like_the_real_data(full_trend):
    """quick.yaml (its window) and study.yaml (the whole common window) load the planted
    directory onto exactly the real data's rows, with the same fresh flags."""
    for name in ("quick.yaml", "study.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        real = load_market(dataclasses.replace(cfg.data, data_dir=str(DATA), cache_dir=None))
        planted = load_market(dataclasses.replace(cfg.data, data_dir=str(full_trend.out_dir),
                                                  cache_dir=None))
        pd.testing.assert_index_equal(planted.index, real.index)
        for a in ("BTC", "ETH", "SPY", "DXY"):
            np.testing.assert_array_equal(planted[f"{a}_fresh"], real[f"{a}_fresh"])
        for a in ("SPY", "DXY"):  # copied
            np.testing.assert_array_equal(planted[f"{a}_close"], real[f"{a}_close"])
        assert not np.allclose(planted["BTC_close"], real["BTC_close"])
    assert (DATA / "SPY_1h.csv.gz").read_bytes() == full_trend.files["SPY"].read_bytes()
    # the oracle is on the loader's bar-close rows and covers them
    oracle = pd.read_parquet(full_trend.oracle_path)
    assert oracle.index.isin(planted.index).sum() == len(planted)
    assert set(oracle.columns) == {"signal", "action", "next_drift"}
    assert set(np.unique(oracle["action"])) <= {-1.0, 0.0, 1.0}
    meta = json.loads(full_trend.meta_path.read_text())
    assert meta["family"] == "trend" and meta["strength"] == P.DEFAULT_STRENGTH
    common = meta["oracle"]["common_window"]
    assert common["start"] < "2019-12-15" and common["end"] > "2025-07-24"
    assert 3.0 <= common["sharpe"] <= 5.0  # the default strength's purpose
    assert full_trend.oracle_sharpe == meta["oracle"]["whole_span"]["sharpe"]
    assert set(full_trend.by_year) >= {str(y) for y in range(2018, 2026)}


@pytest.mark.parametrize("family", ["trend", "lead", "regime"])
def test_oracle_power_rises_with_strength(template, family):
    real, index = template
    net = {}
    for s in (0.0, P.DEFAULT_STRENGTH / 2, P.DEFAULT_STRENGTH, 2 * P.DEFAULT_STRENGTH):
        net[s], gross = _oracle(real, index, family, s)
        if s == 0:
            assert abs(gross) < 1.5 and net[s] < 1.5  # no edge (SE ~0.6 over three years)
    assert net[P.DEFAULT_STRENGTH] > 2.0
    values = list(net.values())
    assert values == sorted(values), net


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
    assert abs(r.mean() * P.HOURS_PER_YEAR) < 0.5  # a martingale up to noise
    # the written BTC is the same for none and trend at strength 0
    kw = dict(template_dir=DATA, start="2024-01-01", end="2024-02-15")
    a_ = P.write_planted_market(tmp_path / "none", "none", 0, 5, **kw)
    b_ = P.write_planted_market(tmp_path / "trend0", "trend", 0.0, 5, **kw)
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


def test_written_files_are_causal_and_deterministic(tmp_path):
    kw = dict(template_dir=DATA, start="2023-01-01")
    short = P.write_planted_market(tmp_path / "short", "lead", 4.0, 2, end="2023-02-01", **kw)
    long = P.write_planted_market(tmp_path / "long", "lead", 4.0, 2, end="2023-03-01", **kw)
    again = P.write_planted_market(tmp_path / "again", "lead", 4.0, 2, end="2023-03-01", **kw)
    other = P.write_planted_market(tmp_path / "other", "lead", 4.0, 3, end="2023-03-01", **kw)
    for name in P.FILES.values():
        assert (long.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes()
    assert long.oracle_path.read_bytes() == again.oracle_path.read_bytes()
    assert long.meta_path.read_bytes() == again.meta_path.read_bytes()
    for a in ("BTC", "ETH"):
        assert long.files[a].read_bytes() != other.files[a].read_bytes()
        s, lg = load_ohlcv(short.files[a]), load_ohlcv(long.files[a])
        pd.testing.assert_frame_equal(s, lg.loc[: s.index[-1]])  # a later end changes no bar
    so, lo = pd.read_parquet(short.oracle_path), pd.read_parquet(long.oracle_path)
    pd.testing.assert_frame_equal(so.iloc[:-1], lo.loc[: so.index[-2]])


def test_time_convention_action_at_t_realises_the_drift_of_t_plus_1(template, tmp_path):
    real, _ = template
    for family in ("trend", "lead"):
        lat = P.generate(family, P.DEFAULT_STRENGTH, real, P.Shocks.draw(0, len(real), 5.0))
        np.testing.assert_array_equal(lat["next_drift"][:-1], lat["mu"][1:])
        np.testing.assert_array_equal(np.sign(lat["action"][:-1]), np.sign(lat["mu"][1:]))
    # end to end through the loader: the same seed at strengths 0 and 4 differs only by the
    # drift, so the return realised at row t + 1 differs by the oracle's next_drift at row t
    kw = dict(template_dir=DATA, start="2024-03-01", end="2024-04-15")
    zero = P.write_planted_market(tmp_path / "z", "lead", 0.0, 7, **kw)
    four = P.write_planted_market(tmp_path / "f", "lead", 4.0, 7, **kw)
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


def test_input_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="family"):
        P.write_planted_market(tmp_path, "momentum", 1.0, 0)
    with pytest.raises(ValueError, match="strength"):
        P.write_planted_market(tmp_path, "trend", -1.0, 0)
    with pytest.raises(ValueError, match="strength"):
        P.write_planted_market(tmp_path, "none", 2.0, 0)
    with pytest.raises(ValueError, match="seed"):
        P.write_planted_market(tmp_path, "trend", 1.0, -3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="template_dir.*BTC_1h.csv.gz"):
        P.write_planted_market(tmp_path / "out", "trend", 1.0, 0, template_dir=empty)
    with pytest.raises(FileNotFoundError, match="oracle.parquet"):
        P.oracle_sharpe(empty)


def test_cli(tmp_path, capsys):
    assert P.main(["--family", "regime", "--strength", "4", "--seed", "0", "--out",
                   str(tmp_path), "--start", "2024-01-01", "--end", "2024-02-01"]) == 0
    out = capsys.readouterr().out
    assert "sharpe" in out and (tmp_path / "oracle.parquet").is_file()
    assert "state" in pd.read_parquet(tmp_path / "oracle.parquet").columns
