"""Vol targeting makes (almost) no turnover of its own on the bundled BTC history.

Vol-targeted buy & hold holds a_t = 1: any turnover it makes is mechanical (the leverage
re-estimate and the drift), none of it a decision. With the original system's settings (a 0.05
daily target from a 24-hour std, a trade at every change: configs/full.yaml) it turned over
~200x NAV a year on BTC 2019-12 .. 2025-07; the defaults (an annual target near BTC's vol, an
exponentially weighted 20-day estimate, a 0.1 no-trade band) must keep it at most 25x.
"""

from __future__ import annotations

import dataclasses

import pytest

from cryptorl_jax.backtest import baselines
from cryptorl_jax.config import EnvConfig
from tests.bundled import bundled_btc
from tests.envcfg import original_env


@pytest.fixture(scope="module")
def btc(tmp_path_factory):
    return bundled_btc(tmp_path_factory.mktemp("cache"))


def _per_year(close, tradable, env: EnvConfig) -> dict[str, float]:
    out = baselines.run_baselines(close, env, tradable=tradable)["vol_targeted_buy_and_hold"]
    years = len(out["turnover"]) / 8760
    live = out["leverage"] > 0
    return {"turnover": out["turnover"].sum() / years, "cost": out["cost"].sum() / years,
            "mean_exposure": float(out["exposure"][live].mean()),
            "at_cap": float((out["leverage"][live] >= env.max_leverage).mean())}


def test_default_vol_targeting_turns_over_at_most_25x_a_year(btc):
    close, tradable = btc
    assert len(close) > 45_000  # 2019-12 .. 2025-07, hourly
    got = _per_year(close, tradable, EnvConfig())
    assert got["turnover"] <= 25.0, got
    assert 0.8 < got["mean_exposure"] < 1.2, got  # the target is near BTC's own vol
    assert got["at_cap"] < 0.1, got


def test_the_original_settings_churn_by_themselves(btc):
    """The figure the defaults replaced (and the reason they did)."""
    close, tradable = btc
    got = _per_year(close, tradable, original_env())
    assert got["turnover"] > 150.0, got
    assert got["at_cap"] > 0.4, got


def test_each_default_change_cuts_the_mechanical_turnover(btc):
    """Neither the estimator nor the band alone: the band on the original estimator still
    churns more than the defaults, and the defaults without the band churn more too."""
    close, tradable = btc
    default = _per_year(close, tradable, EnvConfig())["turnover"]
    no_band = _per_year(close, tradable, dataclasses.replace(EnvConfig(), no_trade_band=0.0))
    band_only = _per_year(close, tradable, original_env(no_trade_band=0.1))
    assert no_band["turnover"] > 1.5 * default
    assert band_only["turnover"] > 1.5 * default
