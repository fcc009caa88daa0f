"""Planted-edge markets with their oracle (studies/planted.py): the pipeline's format, oracle
power, determinism of the written directory (planted.json too), input errors and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.core.names import BUNDLED_FILES
from cryptorl_jax.market import planted as P
from cryptorl_jax.market.loader import load_market, load_ohlcv
from cryptorl_jax.studies import planted as O
from tests.market.planted_template import DATA, ROOT, template_returns


@pytest.fixture(scope="module")
def template():
    """The real BTC's bar log returns on the full hourly grid of SPAN (what write_* uses)."""
    return template_returns()


def _oracle(real, index, family, strength, seed=0):
    lat = P.generate(family, strength, real, P.Shocks.draw(seed, len(real), 5.0))
    frame = pd.DataFrame({"BTC_close": 30000.0 * np.exp(np.cumsum(lat["r"])),
                          "action": lat["action"]}, index=index)
    return O.oracle_sharpe(frame), O.oracle_sharpe(frame, cost_multiplier=0.0)


@pytest.fixture(scope="module")
def full_trend(tmp_path_factory):
    return O.write_planted_market(tmp_path_factory.mktemp("trend"), "trend",
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


def test_written_files_are_causal_and_deterministic(tmp_path):
    kw = dict(template_dir=DATA, start="2023-01-01")
    short = O.write_planted_market(tmp_path / "short", "lead", 4.0, 2, end="2023-02-01", **kw)
    long = O.write_planted_market(tmp_path / "long", "lead", 4.0, 2, end="2023-03-01", **kw)
    again = O.write_planted_market(tmp_path / "again", "lead", 4.0, 2, end="2023-03-01", **kw)
    other = O.write_planted_market(tmp_path / "other", "lead", 4.0, 3, end="2023-03-01", **kw)
    for name in BUNDLED_FILES.values():
        assert (long.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes()
    assert long.oracle_path.read_bytes() == again.oracle_path.read_bytes()
    assert long.meta_path.read_bytes() == again.meta_path.read_bytes()
    for a in ("BTC", "ETH"):
        assert long.files[a].read_bytes() != other.files[a].read_bytes()
        s, lg = load_ohlcv(short.files[a]), load_ohlcv(long.files[a])
        pd.testing.assert_frame_equal(s, lg.loc[: s.index[-1]])  # a later end changes no bar
    so, lo = pd.read_parquet(short.oracle_path), pd.read_parquet(long.oracle_path)
    pd.testing.assert_frame_equal(so.iloc[:-1], lo.loc[: so.index[-2]])


def test_input_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="family"):
        O.write_planted_market(tmp_path, "momentum", 1.0, 0)
    with pytest.raises(ValueError, match="strength"):
        O.write_planted_market(tmp_path, "trend", -1.0, 0)
    with pytest.raises(ValueError, match="strength"):
        O.write_planted_market(tmp_path, "none", 2.0, 0)
    with pytest.raises(ValueError, match="seed"):
        O.write_planted_market(tmp_path, "trend", 1.0, -3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="template_dir.*BTC_1h.csv.gz"):
        O.write_planted_market(tmp_path / "out", "trend", 1.0, 0, template_dir=empty)
    with pytest.raises(FileNotFoundError, match="oracle.parquet"):
        O.oracle_sharpe(empty)


def test_cli(tmp_path, capsys):
    assert O.main(["--family", "regime", "--strength", "4", "--seed", "0", "--out",
                   str(tmp_path), "--start", "2024-01-01", "--end", "2024-02-01"]) == 0
    out = capsys.readouterr().out
    assert "sharpe" in out and (tmp_path / "oracle.parquet").is_file()
    assert "state" in pd.read_parquet(tmp_path / "oracle.parquet").columns
