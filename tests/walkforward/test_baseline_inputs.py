"""`agent.baseline_inputs`: the agents read fitted baselines' actions as observation columns
(issue 40, point 3: the agent as a correction to the simple methods that see the same
information).

- the config names a bad choice in one line;
- the columns are causal and fitted on train rows only (poisoned future rows change no past
  value);
- a baseline rebuilt from its baselines.json record (`strategies.from_params`) acts exactly as
  the fitted one, so evaluate and paper trading read what the run's agents read;
- a tiny walk-forward whose agents read them: evaluate over its test hours equals its OOS rows.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest import strategies
from cryptorl_jax.config import ConfigError, EnvConfig, load_config
from cryptorl_jax.config.schema_runs import BaselinesConfig
from cryptorl_jax.walkforward.data import observation_arrays, observation_dims
from cryptorl_jax.walkforward.runner import baseline_signals

INPUTS = ("momentum", "momentum_scaled", "crossover", "ridge")
SMALL = BaselinesConfig(momentum_lookbacks=(12, 48), crossover_windows=((12, 48),),
                        forecast_horizons=(1, 12), ridge_alphas=(10.0, 1000.0),
                        forecast_smoothing_hours=(0.0, 12.0))


def _market(n: int = 1500, f: int = 4, seed: int = 0, drift: float = 0.0) -> strategies.Market:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, f)).astype(np.float32)
    # column 0 at row t forecasts r_{t+1}: the ridge has something to find
    r = 0.004 * (rng.standard_normal(n) + 0.3 * np.concatenate([[0.0], feats[:-1, 0]])) + drift
    close = 100.0 * np.exp(np.cumsum(r))
    feats[:30] = np.nan  # a warm-up
    return strategies.Market(close=close, tradable=np.ones(n, bool), features=feats,
                             lookback=60)


def _cfg(*extra: str):
    return load_config(None, [f"agent.baseline_inputs=[{','.join(INPUTS)}]", *extra])


def test_the_config_names_a_bad_choice():
    with pytest.raises(ConfigError, match="agent.baseline_inputs") as e:
        load_config(None, ["agent.baseline_inputs=[momentum, lightgbm]"])
    assert "lightgbm" in str(e.value)
    with pytest.raises(ConfigError, match="duplicate"):
        load_config(None, ["agent.baseline_inputs=[ridge, ridge]"])
    with pytest.raises(ConfigError, match="fine-tuned encoder"):
        load_config(None, ["agent.baseline_inputs=[ridge]", "encoder.mode=pretrained-finetune"])
    assert load_config(None, []).agent.baseline_inputs == ()
    with pytest.raises(ConfigError, match="agent.observation"):
        load_config(None, ["agent.observation=baselines"])
    with pytest.raises(ConfigError, match="agent.observation"):
        load_config(None, ["agent.baseline_inputs=[ridge]", "agent.observation=market"])


def test_a_rebuilt_baseline_acts_exactly_as_the_fitted_one():
    market = _market()
    env = EnvConfig(vol_window=48, no_trade_band=0.0)
    fitted = strategies.fit_all(SMALL, env, market, (100, 1000), only=INPUTS)
    assert [f.name for f in fitted] == list(INPUTS)
    record = json.loads(json.dumps(strategies.params_record(fitted)))  # through the file
    rows = np.arange(len(market.close))
    for f in fitted:
        rebuilt = strategies.from_params(f.name, record[f.name], market)
        np.testing.assert_array_equal(rebuilt.act(rows), f.act(rows), err_msg=f.name)
        assert rebuilt.oof is None and f.oof is None
    # the ridge with its out-of-fold column (ridge_oof): rebuilt from the record too
    ridge = strategies.fit_all(SMALL, env, market, (100, 1000), only=("ridge",), oof=True)
    assert [f.name for f in ridge] == ["ridge"] and ridge[0].oof is not None
    record = json.loads(json.dumps(strategies.params_record(ridge)))
    rebuilt = strategies.from_params("ridge", record["ridge"], market)
    np.testing.assert_array_equal(rebuilt.oof(rows), ridge[0].oof(rows))
    np.testing.assert_array_equal(rebuilt.act(rows), ridge[0].act(rows))
    assert np.std(fitted[-1].act(rows[1000:])) > 0  # the ridge really forecasts
    with pytest.raises(ValueError, match="coefficients"):
        strategies.from_params("ridge", record["ridge"],
                               strategies.Market(market.close, market.tradable,
                                                 market.features[:, :3], market.lookback))
    with pytest.raises(ValueError, match="lacks 'lookback'"):
        strategies.from_params("momentum", {}, market)


def test_the_columns_read_no_future_row_and_are_fitted_on_train_rows_only():
    cfg = _cfg()
    env = EnvConfig(vol_window=48, no_trade_band=0.0)
    market = _market()
    train, t = (100, 1000), 1200
    base = baseline_signals(cfg, strategies.fit_all(SMALL, env, market, train, only=INPUTS),
                            len(market.close))
    assert base.shape == (len(market.close), len(INPUTS)) and np.isfinite(base).all()
    rng = np.random.default_rng(9)
    close, feats = market.close.copy(), market.features.copy()
    close[t + 1:] *= np.exp(np.cumsum(0.05 * rng.standard_normal(len(close) - t - 1)))
    feats[t + 1:] = 50.0 * rng.standard_normal(feats[t + 1:].shape)
    poisoned = strategies.Market(close, market.tradable, feats, market.lookback)
    after = baseline_signals(cfg, strategies.fit_all(SMALL, env, poisoned, train, only=INPUTS),
                             len(close))
    np.testing.assert_array_equal(after[:t + 1], base[:t + 1])
    assert not np.array_equal(after[t + 1:], base[t + 1:])  # the poison reached the future
    # poisoned from the train end on: the fitted parameters do not move
    close, feats = market.close.copy(), market.features.copy()
    close[train[1]:] *= np.exp(np.cumsum(0.05 * rng.standard_normal(len(close) - train[1])))
    feats[train[1]:] = 50.0 * rng.standard_normal(feats[train[1]:].shape)
    poisoned = strategies.Market(close, market.tradable, feats, market.lookback)
    fitted = strategies.fit_all(SMALL, env, market, train, only=INPUTS, oof=True)
    refit = strategies.fit_all(SMALL, env, poisoned, train, only=INPUTS, oof=True)
    assert strategies.params_record(refit) == strategies.params_record(fitted)
    assert "folds" in strategies.params_record(fitted)["ridge"]["oof"]
    # ridge_oof too: rows from the train end on, poisoned, move no train-row value of it
    oof_cfg = load_config(None, ["agent.baseline_inputs=[ridge_oof]"])
    before = baseline_signals(oof_cfg, fitted, len(market.close))[:, 0]
    after = baseline_signals(oof_cfg, refit, len(close))[:, 0]
    np.testing.assert_array_equal(after[:train[1]], before[:train[1]])
    assert np.std(before[train[0]:train[1]]) > 0


def test_the_columns_go_where_the_agent_reads_the_market():
    matrix = np.zeros((10, 3), np.float32)
    emb = np.ones((10, 5), np.float32)
    sig = np.full((10, 2), 0.5, np.float32)
    m, e = observation_arrays(matrix, emb, sig)
    assert m is matrix and e.shape == (10, 7) and (e[:, 5:] == 0.5).all()
    assert observation_dims(matrix, emb, sig) == (3, 7)
    m, e = observation_arrays(matrix, None, sig)
    assert e is None and m.shape == (10, 5) and (m[:, 3:] == 0.5).all()
    assert observation_dims(matrix, None, sig) == (5, None)
    assert observation_arrays(matrix, emb, None) == (matrix, emb)
    # agent.observation baselines: the signals alone, in place of the embedding or the matrix
    m, e = observation_arrays(matrix, emb, sig, only_signals=True)
    assert m is matrix and e.shape == (10, 2) and (e == 0.5).all()
    assert observation_dims(matrix, emb, sig, only_signals=True) == (3, 2)
    m, e = observation_arrays(matrix, None, sig, only_signals=True)
    assert e is None and m.shape == (10, 2) and (m == 0.5).all()
    assert observation_dims(matrix, None, sig, only_signals=True) == (2, None)
    with pytest.raises(ValueError, match="agent.observation"):
        observation_arrays(matrix, emb, None, only_signals=True)


@pytest.mark.parametrize("observation", ["full", "baselines"])
def test_a_run_whose_agents_read_them_evaluates_to_its_own_rows(tmp_path, repo_root,
                                                                  observation):
    from cryptorl_jax.config import with_overrides
    from cryptorl_jax.market import load_market, planted
    from cryptorl_jax.walkforward import driver
    from cryptorl_jax.walkforward.evaluate import evaluate_window
    from tests.walkforward.test_driver import TINY_WFO

    data = tmp_path / "data"
    planted.write_planted_files(data, "trend", 4.0, 0, template_dir=repo_root / "data",
                                start="2023-12-01", end="2024-02-20")
    cfg = load_config(None, [*TINY_WFO, "run_name=inputs", "wfo.max_segments=1",
                             f"data.data_dir={data}", "data.cache_dir=null",
                             "output.plots=false",
                             # baselines: the out-of-fold ridge, rebuilt by evaluate too
                             "agent.baseline_inputs=[momentum_scaled, "
                             f"{'ridge' if observation == 'full' else 'ridge_oof'}]",
                             "baselines.momentum_lookbacks=[24, 72]",
                             "baselines.forecast_horizons=[1, 24]",
                             f"agent.observation={observation}"])
    run_dir = tmp_path / "run"
    driver.run(cfg, run_dir)
    record = json.loads((run_dir / "segment_0" / "baselines.json").read_text())
    assert {"momentum_scaled", "ridge"} <= set(record)
    assert ("oof" in record["ridge"]) == (observation == "baselines")
    if observation == "baselines":  # the actor reads the 2 signals and the book's 3 numbers
        import orbax.checkpoint as ocp
        saved = ocp.PyTreeCheckpointer().metadata(run_dir / "segment_0" / "agents")
        widths = {tuple(leaf.shape) for leaf in jax.tree.leaves(saved.item_metadata.tree)
                  if hasattr(leaf, "shape") and len(leaf.shape) >= 2}
        assert any(w[-2:] == (2 + 3, 16) for w in widths), widths
    own = pd.read_parquet(run_dir / "segment_0" / "oos.parquet")
    market = load_market(with_overrides(cfg, ["data.end=null"]).data)
    got = evaluate_window(run_dir, 0, own.index[0], own.index[-1], out_dir=tmp_path / "ev",
                          market=market, tearsheet=False).oos
    for col in ("exposure", "strategy", "action_0", "action_1"):
        np.testing.assert_allclose(got[col].to_numpy(np.float64), own[col].to_numpy(np.float64),
                                   rtol=0, atol=1e-9, err_msg=col)


def test_ridge_oof_forecasts_each_fold_without_its_prices_and_is_the_ridge_after_train_end():
    """On the train rows the in-sample ridge column is fitted on every row's label, its own
    included; ridge_oof's rows are forecast by a ridge that read nothing of their fold's
    prices (purged k-fold): poisoning the closes of one fold moves no ridge_oof value in it
    (no smoothing, so nothing carries in from the neighbouring folds), while the in-sample
    column moves. From the train end on the two are the same action (up to the EMA's memory
    of the train rows). One grid point, so the setting cannot move with the poison."""
    cfg = load_config(None, ["agent.baseline_inputs=[ridge, ridge_oof]"])
    env = EnvConfig(vol_window=48, no_trade_band=0.0)
    market = _market(n=3200, seed=3)
    train = (100, 2800)  # six folds of 450 rows: fold 2 is rows 1000 .. 1449
    fold = (1000, 1450)
    assert strategies.OOF_FOLDS == 6

    def columns(m: strategies.Market, smoothing: float) -> np.ndarray:
        one = BaselinesConfig(forecast_horizons=(1,), ridge_alphas=(10.0,),
                              forecast_smoothing_hours=(smoothing,))
        fitted = strategies.fit_all(one, env, m, train, only=("ridge",), oof=True)
        assert [f["start"] for f in fitted[0].params["oof"]["folds"]][2] == fold[0]
        return baseline_signals(cfg, fitted, len(m.close))

    base = columns(market, 12.0)
    ridge, oof = base[:, 0], base[:, 1]
    assert (oof[:train[0]] == 0).all() and np.std(oof[train[0]:train[1]]) > 0
    np.testing.assert_allclose(oof[train[1] + 400:], ridge[train[1] + 400:], atol=1e-6)
    base = columns(market, 0.0)
    close = market.close.copy()
    rng = np.random.default_rng(5)
    close[fold[0]:fold[1]] *= np.exp(0.05 * rng.standard_normal(fold[1] - fold[0]))
    poisoned = strategies.Market(close, market.tradable, market.features, market.lookback)
    after = columns(poisoned, 0.0)
    rows = slice(*fold)
    np.testing.assert_array_equal(after[rows, 1], base[rows, 1])
    assert not np.allclose(after[rows, 0], base[rows, 0])  # the in-sample column moves
