"""The walk-forward run on a synthetic market: layout, report consistency, determinism, resume.

One module-scoped uninterrupted run is compared with a second identical run and with a run that
is killed inside segment 2's training and resumed. All runs share one compilation (the trainer
cache), which keeps this module to about a minute or two on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest.metrics import compute_metrics
from cryptorl_jax.config import load_config
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import pipeline

TINY_WFO = [
    "run_name=tiny", "output.progress=false", "output.tearsheet=false",
    "features.ffd_threshold=0.01", "features.zscore_window=48", "features.corr_window=48",
    "regimes.n_fits=1", "regimes.n_iter=30",
    "encoder.mode=pretrained-frozen", "encoder.d_model=8", "encoder.depth=1",
    "encoder.n_heads=2", "encoder.decoder_dim=8", "encoder.epochs=2",
    "encoder.batches_per_epoch=3", "encoder.batch_size=16",
    "env.window=8", "env.episode_length=64",
    "tqc.net_arch=[16, 16]", "tqc.batch_size=32", "tqc.buffer_size=2048",
    "tqc.learning_starts=64", "tqc.n_quantiles=5", "tqc.top_quantiles_to_drop_per_net=1",
    "train.n_envs=4", "train.steps_per_chunk=16", "train.total_env_steps=320",
    "train.n_seeds=2", "train.devices=1", "train.checkpoint_every_chunks=1",
    "wfo.train_months=3", "wfo.test_months=1", "wfo.step_months=1", "wfo.hours_per_month=100",
    "wfo.max_segments=3",
]


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY_WFO)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cfg, market):
    workdir = tmp_path_factory.mktemp("wfo") / "tiny"
    result = pipeline.run(cfg, workdir, market=market)
    return workdir, result


def test_outputs_and_oos_layout(full_run, cfg, market):
    workdir, result = full_run
    assert result.segments_run == [0, 1, 2]
    # all segments shared one compilation of the training step (same shapes, data as arguments)
    (trainer, _), = pipeline._TRAINERS.values()
    assert trainer.trace_counts["train_chunk"] == 1
    for name in ("config.yaml", "metrics.csv", "oos_returns.parquet", "equity_curve.png",
                 "summary.md", "segment_0_regimes.png", "comparison.csv"):
        assert (workdir / name).is_file(), name
    for k in range(3):
        seg = workdir / f"segment_{k}"
        for name in ("DONE", "scaler.json", "regime_model.json", "encoder", "agents",
                     "oos.parquet", "metrics.json", "stationarity.csv", "train"):
            assert (seg / name).exists(), (k, name)
    assert (workdir / "tensorboard" / "segment_0").is_dir()
    assert load_config(workdir / "config.yaml") == pipeline.run_config(cfg)

    oos = pd.read_parquet(workdir / "oos_returns.parquet")
    # contiguous hourly, equal to the concatenation of the per-segment test windows
    steps = np.diff(oos.index.as_unit("ns").asi8)
    assert (steps == 3600 * 10**9).all()
    run = pipeline.prepare_run(cfg, market)
    expected = np.concatenate([np.arange(s.test_start, s.test_end) for s in run.segments])
    np.testing.assert_array_equal(oos.index, market.index[expected])
    for seg in run.segments:
        part = oos[oos["segment"] == seg.index]
        train_times = market.index[seg.train_start:seg.train_end]
        assert part.index.min() > train_times.max()  # never overlaps its train rows
        assert len(part) == seg.test_end - seg.test_start
    # the benchmark is the traded asset's own return over exactly the test rows
    close = market["BTC_close"].to_numpy()
    np.testing.assert_allclose(oos["benchmark"].to_numpy(),
                               close[expected] / close[expected - 1] - 1, rtol=1e-10)
    assert {"strategy", "seed_0", "seed_1", "buy_and_hold", "vol_targeted_buy_and_hold",
            "flat", "random", "strategy_2x_cost", "strategy_zero_cost"} <= set(oos.columns)
    assert (oos["flat"] == 0).all()
    # costs matter in the right direction
    total = (1 + oos[["strategy", "strategy_2x_cost", "strategy_zero_cost"]]).prod()
    assert total["strategy_2x_cost"] <= total["strategy"] <= total["strategy_zero_cost"]


def test_metrics_csv_recomputes_from_oos_returns(full_run):
    workdir, _ = full_run
    oos = pd.read_parquet(workdir / "oos_returns.parquet")
    table = pd.read_csv(workdir / "metrics.csv", dtype={"segment": str}).set_index("segment")
    assert list(table.index) == ["0", "1", "2", "all"]
    for seg, part in [(str(k), oos[oos["segment"] == k]) for k in range(3)] + [("all", oos)]:
        m = compute_metrics(part["strategy"], part["benchmark"], exposure=part["exposure"],
                            turnover=part["turnover"])
        for key in ("sharpe", "sortino", "max_drawdown", "cagr", "calmar", "total_return",
                    "volatility", "turnover", "exposure", "hit_rate", "beta", "alpha",
                    "excess_return"):
            assert table.loc[seg, key] == pytest.approx(m[key], rel=1e-9, abs=1e-12), (seg, key)
    assert 0.0 <= table.loc["all", "dsr"] <= 1.0


def test_same_config_and_seed_give_identical_metrics(full_run, cfg, market, tmp_path):
    workdir, _ = full_run
    again = tmp_path / "tiny"
    pipeline.run(cfg, again, market=market)
    assert (again / "metrics.csv").read_text() == (workdir / "metrics.csv").read_text()


def test_killed_in_segment_2_and_resumed(full_run, cfg, market, tmp_path):
    workdir, _ = full_run
    resumed = tmp_path / "tiny"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, resumed, market=market, kill_at=(1, 2))
    assert (resumed / "segment_0" / "DONE").is_file()
    assert not (resumed / "segment_1" / "DONE").exists()
    assert (resumed / "segment_1" / "train" / "checkpoints" / "2").is_dir()
    done0 = (resumed / "segment_0" / "DONE").read_text()
    mtime0 = (resumed / "segment_0" / "oos.parquet").stat().st_mtime_ns
    result = pipeline.run(cfg, resumed, market=market, resume=True)
    assert result.segments_skipped == [0] and result.segments_run == [1, 2]
    assert (resumed / "segment_0" / "DONE").read_text() == done0
    assert (resumed / "segment_0" / "oos.parquet").stat().st_mtime_ns == mtime0
    assert (resumed / "metrics.csv").read_text() == (workdir / "metrics.csv").read_text()
    hist = json.loads((resumed / "segment_1" / "train_history.json").read_text())
    assert len(hist) == 5  # chunks 0-1 from before the kill (restored), 2-4 after


def test_report_only_and_refuses_other_config(full_run, cfg):
    workdir, _ = full_run
    before = (workdir / "metrics.csv").read_text()
    (workdir / "metrics.csv").unlink()
    result = pipeline.run(cfg, workdir, report_only=True)
    assert result.segments_run == [] and (workdir / "metrics.csv").read_text() == before
    # another process running other segments of the same study is welcome
    again = pipeline.run(load_config(None, [*TINY_WFO, "wfo.segments=[1, 2]"]), workdir,
                         resume=True)
    assert again.segments_skipped == [1, 2] and again.segments_run == []
    other = load_config(None, [*TINY_WFO, "tqc.gamma=0.9"])
    from cryptorl_jax.config import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        pipeline.run(other, workdir, report_only=True)


def test_evaluate_reproduces_a_segments_oos(full_run, market, tmp_path):
    from cryptorl_jax.walkforward.evaluate import evaluate_window

    workdir, _ = full_run
    seg = pd.read_parquet(workdir / "segment_1" / "oos.parquet")
    res = evaluate_window(workdir, 1, str(seg.index[0]), str(seg.index[-1]), market=market,
                          out_dir=tmp_path / "eval", tearsheet=False)
    assert res.in_sample_hours == 0
    np.testing.assert_array_equal(res.oos.index, seg.index)
    for col in ("strategy", "seed_0", "seed_1", "benchmark", "buy_and_hold"):
        np.testing.assert_allclose(res.oos[col].to_numpy(), seg[col].to_numpy(), atol=1e-7)
    assert (tmp_path / "eval" / "equity_curve.png").is_file()
    # a window that reaches into the train rows is flagged as in-sample
    early = evaluate_window(workdir, 1, str(seg.index[0] - pd.Timedelta(hours=50)),
                            str(seg.index[10]), market=market, out_dir=tmp_path / "e2",
                            tearsheet=False)
    assert early.in_sample_hours == 50


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["none", "random", "pretrained-finetune"])
def test_other_encoder_modes_run(mode, market, tmp_path):
    cfg = load_config(None, [*TINY_WFO, f"encoder.mode={mode}", "wfo.max_segments=1",
                             "output.plots=false"])
    result = pipeline.run(cfg, tmp_path / mode, market=market)
    assert result.segments_run == [0]
    table = pd.read_csv(tmp_path / mode / "metrics.csv", dtype={"segment": str})
    assert np.isfinite(table["sharpe"]).all()
