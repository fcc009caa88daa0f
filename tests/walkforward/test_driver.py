"""The walk-forward run on a synthetic market: its files, report consistency, determinism,
resume.

One module-scoped uninterrupted run is compared with a second identical run and with a run that
is killed inside segment 2's training and resumed. All runs share one compilation (the trainer
cache), which keeps this module to about a minute or two on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest.memory import policy_memory_hours
from cryptorl_jax.backtest.metrics import compute_metrics
from cryptorl_jax.config import identity, load_config, with_overrides
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver, stages
from cryptorl_jax.walkforward.data import prepare_run

TINY_WFO = [
    "run_name=tiny", "output.progress=false", "output.tearsheet=false",
    "features.ffd_threshold=0.01", "features.zscore_window=48", "features.corr_window=48",
    "regimes.n_fits=1", "regimes.n_iter=30",
    "encoder.mode=pretrained-frozen", "encoder.d_model=8", "encoder.depth=1",
    "encoder.n_heads=2", "encoder.decoder_dim=8", "encoder.epochs=2",
    "encoder.batches_per_epoch=3", "encoder.batch_size=16",
    "env.window=8", "env.episode_length=64", "env.vol_window=48", "env.vol_halflife_hours=12",
    "env.no_trade_band=0.02",
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
    # a trainer cached by an earlier test module may have been traced for other market shapes:
    # this run's trace count starts from a fresh trainer
    stages._TRAINERS.clear()
    result = driver.run(cfg, workdir, market=market)
    return workdir, result


def test_outputs_and_oos_layout(full_run, cfg, market):
    workdir, result = full_run
    assert result.segments_run == [0, 1, 2]
    # all segments shared one compilation of the training step (same shapes, data as arguments)
    (trainer, _), = stages._TRAINERS.values()
    assert trainer.trace_counts["train_chunk"] == 1
    for name in ("config.yaml", "metrics.csv", "oos_returns.parquet", "equity_curve.png",
                 "summary.md", "segment_0_regimes.png", "comparison.csv"):
        assert (workdir / name).is_file(), name
    for k in range(3):
        seg = workdir / f"segment_{k}"
        for name in ("DONE", "scaler.json", "regime_model.json", "encoder", "agents",
                     "oos.parquet", "metrics.json", "stationarity.csv", "train"):
            assert (seg / name).exists(), (k, name)
        # DONE records where the entropy tuning ended: the last history record's members
        entropy = json.loads((seg / "DONE").read_text())["entropy"]
        last = json.loads((seg / "train_history.json").read_text())[-1]
        assert entropy["members"]["final_alpha"] == last["members"]["alpha"]
        assert entropy["members"]["final_entropy"] == last["members"]["entropy"]
        assert entropy["target_entropy"] == -1.0 and entropy["chunk"] == last["chunk"]
    assert (workdir / "tensorboard" / "segment_0").is_dir()
    assert load_config(workdir / "config.yaml") == identity(cfg)

    oos = pd.read_parquet(workdir / "oos_returns.parquet")
    # contiguous hourly, equal to the concatenation of the per-segment test windows
    steps = np.diff(oos.index.as_unit("ns").asi8)
    assert (steps == 3600 * 10**9).all()
    run = prepare_run(cfg, market)
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
            assert table.loc[seg, key] == pytest.approx(m[key], rel=1e-9, abs=1e-12,
                                                        nan_ok=True), (seg, key)
    assert 0.0 <= table.loc["all", "dsr"] <= 1.0
    # 100-hour segments and a 300-hour stitched OOS are shorter than 90 days: no CAGR / Calmar
    assert table[["cagr", "calmar"]].isna().all().all()
    assert table["n_periods"].tolist() == [100, 100, 100, 300]


def test_same_config_and_seed_give_identical_metrics(full_run, cfg, market, tmp_path):
    workdir, _ = full_run
    again = tmp_path / "tiny"
    driver.run(cfg, again, market=market)
    assert (again / "metrics.csv").read_text() == (workdir / "metrics.csv").read_text()


def test_killed_in_segment_2_and_resumed(full_run, cfg, market, tmp_path):
    workdir, _ = full_run
    resumed = tmp_path / "tiny"
    with pytest.raises(KeyboardInterrupt):
        driver.run(cfg, resumed, market=market, hooks=Hooks(kill_at=(1, 2)))
    assert (resumed / "segment_0" / "DONE").is_file()
    assert not (resumed / "segment_1" / "DONE").exists()
    assert (resumed / "segment_1" / "train" / "checkpoints" / "2").is_dir()
    done0 = (resumed / "segment_0" / "DONE").read_text()
    mtime0 = (resumed / "segment_0" / "oos.parquet").stat().st_mtime_ns
    result = driver.run(cfg, resumed, market=market, resume=True)
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
    result = driver.run(cfg, workdir, report_only=True)
    assert result.segments_run == [] and (workdir / "metrics.csv").read_text() == before
    # another process running other segments of the same study is welcome
    again = driver.run(load_config(None, [*TINY_WFO, "wfo.segments=[1, 2]"]), workdir,
                       resume=True)
    assert again.segments_skipped == [1, 2] and again.segments_run == []
    other = load_config(None, [*TINY_WFO, "tqc.gamma=0.9"])
    from cryptorl_jax.config import ConfigError

    with pytest.raises(ConfigError, match="different config"):
        driver.run(other, workdir, report_only=True)


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
    result = driver.run(cfg, tmp_path / mode, market=market)
    assert result.segments_run == [0]
    table = pd.read_csv(tmp_path / mode / "metrics.csv", dtype={"segment": str})
    assert np.isfinite(table["sharpe"]).all()


def test_the_ensemble_is_the_fund_of_the_seeds_own_books(full_run, cfg):
    """Each seed acts on its own book; the strategy is the equal-weight fund of those books,
    not one book acting on the mean action (which fed every seed states it never saw)."""
    from cryptorl_jax.backtest import portfolio

    workdir, _ = full_run
    for k in range(3):
        seg = workdir / f"segment_{k}"
        for name in ("oos.parquet", "insample.parquet"):
            frame = pd.read_parquet(seg / name)
            seeds = frame[[f"seed_{s}" for s in range(cfg.train.n_seeds)]].to_numpy().T
            np.testing.assert_allclose(frame["strategy"], portfolio.equal_weight_returns(seeds),
                                       rtol=1e-12, atol=1e-15)
            for col in ("leverage", "tradable", "turnover_chosen", "turnover_mechanical",
                        *[f"action_{s}" for s in range(cfg.train.n_seeds)]):
                assert col in frame, (name, col)
            np.testing.assert_allclose(frame["turnover_chosen"] + frame["turnover_mechanical"],
                                       frame["turnover"], rtol=1e-12, atol=1e-15)
        assert not np.allclose(frame["action_0"], frame["action_1"])
        metrics = json.loads((seg / "metrics.json").read_text())
        train = json.loads((seg / "DONE").read_text())["train_rows"]
        assert len(pd.read_parquet(seg / "insample.parquet")) == train[1] - train[0]
        assert np.isfinite(metrics["insample_total_return"])


def test_cost_stress_replays_the_same_trades(full_run):
    """0x / 1x / 2x are the strategy's own actions at other costs, not other policies. With
    the no-trade band a cost level can move a trade where the drifted weight sits at the band's
    edge (the costs change the weight at second order), so nearly every hour, not every hour,
    holds the 1x exposure."""
    workdir, _ = full_run
    oos = pd.read_parquet(workdir / "oos_returns.parquet")
    e, market = oos["exposure"].to_numpy(), oos["benchmark"].to_numpy()
    fin, cost = oos["financing"].to_numpy(), oos["cost"].to_numpy()
    np.testing.assert_allclose(oos["strategy"], e * market - cost - fin, rtol=1e-12, atol=1e-15)
    assert (oos["turnover"] > 0).mean() > 0.01  # the tiny agents do trade
    # no trading cost: the 1x exposures' return less the same financing, up to the second-order
    # change of the seeds' shares in the fund (their NAVs differ by the costs)
    zero = np.abs(oos["strategy_zero_cost"].to_numpy() - (e * market - fin))
    assert np.mean(zero > 0.1 * cost.max()) < 0.05
    # 2x: the same exposures; the cost doubles up to the drift's second-order change
    extra = np.abs((e * market - fin - oos["strategy_2x_cost"].to_numpy()) - 2 * cost)
    assert np.mean(extra > 0.1 * max(cost.max(), 1e-12)) < 0.05
    total = (1 + oos[["strategy", "strategy_2x_cost", "strategy_zero_cost"]]).prod()
    assert total["strategy_2x_cost"] < total["strategy"] < total["strategy_zero_cost"]


def test_summary_holds_the_honest_statistics(full_run, cfg):
    workdir, _ = full_run
    table = pd.read_csv(workdir / "metrics.csv", dtype={"segment": str}).set_index("segment")
    for key in ("psr", "cost_per_year", "financing_per_year"):
        assert np.isfinite(table[key]).all(), key
    # the timing null's lags exceed the agents' declared memory (134 h for this config): the
    # 300 stitched hours allow them, a 100-h segment does not (p undefined)
    assert policy_memory_hours(cfg) == 134
    assert (table["timing_memory_hours"] == 134).all()
    assert 0 < table.loc["all", "timing_p_value"] <= 1
    assert table.drop(index="all")["timing_p_value"].isna().all()
    assert table.loc["all", "n_trials"] == 1  # the only run over this window
    assert table.loc["all", "dsr"] == pytest.approx(table.loc["all", "psr"], rel=1e-12)
    summary = (workdir / "summary.md").read_text()
    for text in ("Probabilistic Sharpe", "Deflated Sharpe", "with N = 1", "Timing null: p =",
                 "0x trading costs", "1x trading costs", "2x trading costs", "financing",
                 "i.i.d. U[-1, 1] actions (not a timing null)", "## Seeds",
                 "Per-seed OOS Sharpe: mean", "ensemble (equal-weight fund of the seeds' books)"):
        assert text in summary, text
    registry = [json.loads(line) for line in
                (workdir.parent / "runs.jsonl").read_text().splitlines()]
    assert [r["run_name"] for r in registry] == ["tiny"]


def test_report_opens_with_the_verdict_and_shows_the_diagnostics(full_run, cfg):
    """summary.md and report.html open with the verdict and the equity curve, before the
    tables; diagnostics.csv holds each segment's in-sample vs OOS Sharpe, and Run.load reads
    it."""
    from cryptorl_jax.backtest import diagnostics
    from cryptorl_jax.report import Run

    workdir, _ = full_run
    summary = (workdir / "summary.md").read_text()
    verdict = summary.index("## Verdict")
    assert verdict < summary.index("![equity curve") < summary.index("|")
    assert "No evidence of an edge" in summary or "Evidence of an edge" in summary
    assert "## Diagnostics" in summary and "in-sample Sharpe" in summary
    page = (workdir / "report.html").read_text()
    assert page.index("Verdict") < page.index("data:image/png") < page.index("<table")
    diag = pd.read_csv(workdir / "diagnostics.csv", dtype={"segment": str}).set_index("segment")
    assert list(diag.index) == ["0", "1", "2", "all"]
    for k in range(3):
        insample = pd.read_parquet(workdir / f"segment_{k}" / "insample.parquet")
        oos = pd.read_parquet(workdir / f"segment_{k}" / "oos.parquet")
        expected = diagnostics.frame_diagnostics(oos, insample)
        for key in ("insample_sharpe", "oos_sharpe", "mechanical_share", "turnover"):
            assert diag.loc[str(k), key] == pytest.approx(expected[key], rel=1e-9, nan_ok=True)
    assert diag.loc["all", "insample_sharpe"] == pytest.approx(
        diag.loc[["0", "1", "2"], "insample_sharpe"].mean(), rel=1e-9)
    run = Run.load(workdir)
    pd.testing.assert_frame_equal(run.diagnostics.drop(columns="flags"),
                                  diag.drop(columns="flags").rename(
                                      index=lambda k: k if k == "all" else int(k)),
                                  check_index_type=False)
    assert list(run.diagnostics.index) == [0, 1, 2, "all"]
    assert isinstance(run.flags, list)
    assert set(run.insample) == {0, 1, 2}
    assert "insample_sharpe" in run.segments.columns


def test_oos_dsr_counts_the_runs_over_the_same_window(full_run, cfg, tmp_path):
    """A second configuration registered over the same OOS window deflates the first."""
    import shutil

    from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe

    workdir, _ = full_run
    copy = tmp_path / "tiny"
    shutil.copytree(workdir, copy)
    oos = pd.read_parquet(copy / "oos_returns.parquet")
    sr = float(oos["strategy"].mean() / oos["strategy"].std(ddof=1))
    other = {"config_digest": "another-config", "run_name": "other", "oos_start":
             str(oos.index[0]), "oos_end": str(oos.index[-1]), "sharpe_per_period": sr + 0.01}
    elsewhere = {**other, "config_digest": "a-third", "oos_end": str(oos.index[-2])}
    # the same hours on another market (e.g. a planted one): another experiment, not a trial
    planted = {**other, "config_digest": "a-fourth", "market": "/planted/trend-s4-r0:BTC"}
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                 for r in (other, elsewhere, planted)))
    driver.run(cfg, copy, report_only=True)
    table = pd.read_csv(copy / "metrics.csv", dtype={"segment": str}).set_index("segment")
    assert table.loc["all", "n_trials"] == 2  # the third run covers another window
    var = np.var([sr, sr + 0.01], ddof=1)
    expected = probabilistic_sharpe(oos["strategy"], expected_max_sharpe(2, var))
    assert table.loc["all", "dsr"] == pytest.approx(expected, rel=1e-9)
    assert table.loc["all", "dsr"] < table.loc["all", "psr"]
    summary = (copy / "summary.md").read_text()
    assert "N = 2 walk-forward configurations" in summary and "other (another-config" in summary


def test_baselines_that_read_the_market_are_backtested_and_tested(full_run, cfg):
    """Every segment fits the baselines on its train rows (baselines.json) and backtests them
    beside the agents at the three costs; the report holds their table, SPA / StepM against
    buy & hold and flat, the power table and the sceptic's N."""
    from cryptorl_jax.backtest.strategies import momentum_actions
    from cryptorl_jax.report import Run

    workdir, _ = full_run
    run = Run.load(workdir)
    oos = run.oos
    names = ["momentum", "momentum_scaled", "crossover", "ridge"]
    for n in names:
        for col in (n, f"{n}_2x_cost", f"{n}_zero_cost", f"{n}_action", f"{n}_turnover"):
            assert col in oos.columns, col
        assert n in run.comparison.index and n in run.baselines.index
    # the momentum actions out of sample are sign(p_t - p_{t-k}) with each segment's own k
    market = prepare_run(cfg, make_market(1100, seed=5))
    for seg in market.segments:
        k = json.loads((workdir / f"segment_{seg.index}" / "baselines.json").read_text())[
            "momentum"]["lookback"]
        want = momentum_actions(market.close, k)[seg.test_start - 1:seg.test_end - 1]
        got = oos.loc[oos["segment"] == seg.index, "momentum_action"].to_numpy()
        np.testing.assert_array_equal(got, np.clip(want, -1, 1))
    mt = run.multiple_testing
    assert list(mt.index) == ["buy_and_hold", "buy_and_hold", "flat"]
    assert list(mt["footing"].str.split(" [(]", regex=True).str[0]) == [
        "mean return", "risk-adjusted", "mean return"]
    assert (mt["block_hours"] >= 24).all() and mt["spa_p_consistent"].between(0, 1).all()
    assert list(run.power.index) == [0, 1, 2, "all"]
    assert run.power.loc[0, "underpowered"]  # 100 OOS hours detect nothing
    head = run.headline
    # N: one run, 2 seeds, 5 + 5 + 3 + 9 baseline settings (ridge: 3 horizons x 3 penalties x
    # 1 smoothing)
    assert head["n_trials_sceptic"] == 1 + 2 + 5 + 5 + 3 + 9
    assert 1 <= head["n_trials_effective"] <= head["n_trials_sceptic"]
    summary = (workdir / "summary.md").read_text()
    for title in ("## Does RL add anything?", "### Multiple testing across strategies",
                  "## Power before results", "## The sceptic's N"):
        assert title in summary, title


def test_poisoned_future_leaves_segment_0_bit_identical(full_run, cfg, market, tmp_path):
    """Garbage in every row after segment 0's train end: its fitted pieces do not change."""
    from cryptorl_jax.walkforward.stages import load_agents

    workdir, _ = full_run
    seg = prepare_run(cfg, market).segments[0]
    poisoned = market.copy()
    rng = np.random.default_rng(99)
    tail = poisoned.index[seg.train_end:]
    for col in poisoned.columns:
        if col.endswith("_fresh"):
            continue
        values = poisoned.loc[tail, col].to_numpy()
        poisoned.loc[tail, col] = values * rng.lognormal(0.0, 0.5, len(values))[::-1]
    run_dir = tmp_path / "tiny"
    driver.run(load_config(None, [*TINY_WFO, "wfo.segments=[0]"]), run_dir, market=poisoned)
    a, b = workdir / "segment_0", run_dir / "segment_0"
    for name in ("scaler.json", "regime_model.json", "transforms.json", "train_history.json",
                 "baselines.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # the in-sample backtest (the agents over their own train rows) reads no row after them
    pd.testing.assert_frame_equal(pd.read_parquet(a / "insample.parquet"),
                                  pd.read_parquet(b / "insample.parquet"))
    reports = [json.loads((d / "encoder_report.json").read_text()) for d in (a, b)]
    for r in reports:
        r.pop("seconds_per_epoch")  # a timing
    assert reports[0] == reports[1]
    (trainer, _), = stages._TRAINERS.values()
    import jax

    left, right = load_agents(a / "agents", trainer), load_agents(b / "agents", trainer)
    for x, y in zip(jax.tree.leaves(left), jax.tree.leaves(right), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    from cryptorl_jax.encoder.checkpoint import load_encoder

    n_features = len(json.loads((a / "transforms.json").read_text())["columns"])
    enc = [jax.tree.leaves(load_encoder(d / "encoder", n_features, cfg.env.window,
                                        cfg.encoder)[1]) for d in (a, b)]
    assert len(enc[0]) > 0
    for x, y in zip(*enc, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the OOS test rows are after the train end: those did change
    assert not (a / "oos.parquet").read_bytes() == (b / "oos.parquet").read_bytes()


def _metrics(path):
    return pd.read_csv(path, dtype={"segment": str}).set_index("segment")


def test_segments_in_one_batch_equal_the_sequential_run(full_run, cfg, market, tmp_path):
    """wfo.segments_per_batch: 3 trains the three segments' agents as the members of one
    compiled step; each segment keeps its own files and DONE, and the report equals the
    sequential run's up to the float rounding of a batched step."""
    workdir, _ = full_run
    batched_cfg = with_overrides(cfg, ["wfo.segments_per_batch=3"])
    stages._TRAINERS.clear()
    out = tmp_path / "tiny"
    result = driver.run(batched_cfg, out, market=market)
    assert result.segments_run == [0, 1, 2]
    (trainer, _), = stages._TRAINERS.values()
    assert trainer.segments == 3 and trainer.trace_counts["train_chunk"] == 1
    assert (out / "batch_0-2" / "train" / "checkpoints").is_dir()
    for k in range(3):
        assert (out / f"segment_{k}" / "DONE").is_file()
        assert json.loads((out / f"segment_{k}" / "DONE").read_text())["timings"][
            "train_batch"] == 3
    got, want = _metrics(out / "metrics.csv"), _metrics(workdir / "metrics.csv")
    assert list(got.index) == list(want.index)
    for key in ("sharpe", "total_return", "max_drawdown", "turnover", "exposure"):
        np.testing.assert_allclose(got[key].to_numpy(), want[key].to_numpy(), rtol=2e-3,
                                   atol=1e-4, err_msg=key)


def test_a_batch_killed_in_training_resumes(cfg, market, tmp_path, caplog):
    caplog.set_level("INFO", logger="cryptorl_jax.training")
    batched_cfg = with_overrides(cfg, ["wfo.segments_per_batch=2"])
    straight = tmp_path / "straight"
    driver.run(batched_cfg, straight, market=market)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        driver.run(batched_cfg, resumed, market=market, hooks=Hooks(kill_at=(1, 2)))
    assert not any((resumed / f"segment_{k}" / "DONE").exists() for k in range(3))
    ckpt = resumed / "batch_0-1" / "train" / "checkpoints" / "2"
    assert ckpt.is_dir()
    written = ckpt.stat().st_mtime_ns
    result = driver.run(batched_cfg, resumed, market=market, resume=True)
    assert result.segments_run == [0, 1, 2]
    # training went on from the checkpoint (it was not written again)
    assert not ckpt.exists() or ckpt.stat().st_mtime_ns == written
    assert "resumed training from" in caplog.text
    assert (resumed / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    # killed while writing a batch: segment 0 is DONE, segment 1 of the same batch is not.
    # The resumed batch trains on from its last checkpoint, writes segment 1 and leaves
    # segment 0's files as they were; then the next batch runs
    again = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        driver.run(batched_cfg, again, market=market,
                   hooks=Hooks(stop_at=lambda seg, stage: (seg, stage) == (1, "report")))
    assert (again / "segment_0" / "DONE").is_file()
    assert not (again / "segment_1" / "DONE").exists()
    done0 = (again / "segment_0" / "DONE").read_text()
    mtime0 = (again / "segment_0" / "oos.parquet").stat().st_mtime_ns
    files0 = {p: p.read_bytes() for p in (again / "segment_0").rglob("*") if p.is_file()}
    result = driver.run(batched_cfg, again, market=market, resume=True)
    assert result.segments_skipped == [0] and result.segments_run == [1, 2]
    assert (again / "segment_0" / "DONE").read_text() == done0
    assert (again / "segment_0" / "oos.parquet").stat().st_mtime_ns == mtime0
    # every file as DONE vouches for it (before: the resumed batch saved its encoder again)
    assert {p: p.read_bytes() for p in (again / "segment_0").rglob("*") if p.is_file()} == files0
    assert (again / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()


def test_segments_per_batch_is_checked():
    from cryptorl_jax.config import ConfigError

    with pytest.raises(ConfigError, match="wfo.segments_per_batch"):
        load_config(None, [*TINY_WFO, "wfo.segments_per_batch=0"])
    assert load_config(None, [*TINY_WFO, "wfo.segments_per_batch=all"]).wfo.segments_per_batch \
        == "all"
