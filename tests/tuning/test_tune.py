"""Nested walk-forward tuning (issue 9): no trial reads a row at or after its segment's train end,
the study resumes from its storage, the pruner stops a trial through train()'s on_chunk, and
the exported config loads with load_config and points to the trial log.

The study searches only keys outside the compiled training step (features, regimes), so every
trial shares one compilation; the module takes about a minute and a half on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import optuna
import pytest

from cryptorl_jax.config import ConfigError, load_config, with_overrides
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.report.trials import read_trial_log
from cryptorl_jax.training.loop import TrainingDivergedError
from cryptorl_jax.training.spec import Hyper
from cryptorl_jax.tuning import split as tuning_split
from cryptorl_jax.tuning import trials as tuning_trials
from cryptorl_jax.tuning.driver import run_study
from cryptorl_jax.tuning.space import check_population_space, check_space, suggest_overrides
from cryptorl_jax.tuning.split import (
    NestedSplit,
    cut_run,
    nested_split,
    outer_segments,
    scores_of,
    seen_by_tuning,
)
from cryptorl_jax.tuning.storage import (
    BEST_CONFIG,
    OVERFITTING,
    TRIAL_LOG,
    VAL_RETURNS,
    legacy_study_digest,
    study_digest,
    study_overfitting,
)
from cryptorl_jax.tuning.trials import score
from cryptorl_jax.walkforward import data, layout, runner, stages
from cryptorl_jax.walkforward.segments import Segment
from tests.tuning import golden
from tests.walkforward.test_driver import TINY_WFO

SPACE = ("tune.space=["
         "{key: features.scaler_clip, type: float, low: 2.0, high: 8.0}, "
         "{key: regimes.n_iter, type: int, low: 10, high: 40}, "
         "{key: regimes.covariance_type, type: categorical, choices: [full, diag]}, "
         "{key: regimes.tol, type: loguniform, low: 1.0e-5, high: 1.0e-3}]")
TINY_TUNE = [*TINY_WFO, SPACE, "tune.segments=[0]", "tune.val_fraction=0.2"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY_TUNE)


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


@pytest.fixture(scope="module")
def segment(cfg, market):
    return outer_segments(cfg, market)[0]


@pytest.fixture(scope="module")
def poisoned(market, segment):
    """The same market, but every row at or after segment 0's train end is another market's."""
    other = make_market(1100, seed=99)
    out = market.copy()
    out.iloc[segment.train_end:] = other.iloc[segment.train_end:].to_numpy()
    assert not np.allclose(out.iloc[segment.train_end:].to_numpy(),
                           market.iloc[segment.train_end:].to_numpy())
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, cfg, poisoned):
    """3 trials on the poisoned market, every stage's input rows recorded."""
    workdir = tmp_path_factory.mktemp("tune")
    seen: dict[str, list[int]] = {}

    def record(name, rows):
        seen.setdefault(name, []).append(int(rows))

    def wrap(name, fn, rows_of):
        def wrapped(*args, **kwargs):
            record(name, rows_of(*args, **kwargs))
            return fn(*args, **kwargs)
        return wrapped

    patches = {
        "build_run_features": lambda cfg, market, *a, **k: len(market),
        "fit_segment_transforms": lambda cfg, run, seg: max(len(run.market), len(run.features),
                                                            seg.test_end),
        "run_encoder_stage": lambda cfg, seg, sm, *a, **k: max(sm.matrix.shape[0], seg.test_end),
        "slice_data": lambda cfg, matrix, close, lo, hi, *a, **k: max(hi, len(matrix),
                                                                      len(close)),
        "backtest_rows": lambda cfg, run, sm, enc, trainer, agents, start, end, *a, **k: max(
            end, len(run.market), sm.matrix.shape[0]),
    }
    mp = pytest.MonkeyPatch()
    for name, rows_of in patches.items():  # the shared segment runner's stages, wherever
        for module in (data, stages, runner, tuning_split):  # they are looked up
            if hasattr(module, name):
                mp.setattr(module, name, wrap(name, getattr(module, name), rows_of))
    try:
        result = run_study(cfg, 3, workdir=workdir, market=poisoned, progress=False)
    finally:
        mp.undo()
    return workdir, result, seen


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_no_trial_reads_a_row_at_or_after_train_end(study, segment):
    _, result, seen = study
    assert result.trials_run == [0, 1, 2]
    assert set(seen) == {"build_run_features", "fit_segment_transforms", "run_encoder_stage",
                         "slice_data", "backtest_rows"}
    # the first call makes the study's walk-forward segments (all_wfo_segments: where they
    # start needs the whole frame's warm-up); its features are not given to any trial
    assert seen["build_run_features"][0] == 1100
    seen = {**seen, "build_run_features": seen["build_run_features"][1:]}
    for name, rows in seen.items():
        assert len(rows) >= 3, name  # every trial went through every stage
        assert max(rows) <= segment.train_end, (name, rows)
    # the validation backtest ends exactly at the train end: the OOS test rows come after
    assert max(seen["backtest_rows"]) == segment.train_end
    assert segment.test_start >= segment.train_end


def test_sequential_study_matches_its_golden_record(study, cfg):
    """The 3-trial study's trial log, best.yaml and overfitting.json as the code before the
    tuning restructure wrote them (issue 26; tests/tuning/golden.py)."""
    workdir, _, _ = study
    golden.check("sequential", workdir, cfg)


def test_scores_do_not_depend_on_rows_after_train_end(study, cfg, market, segment, tmp_path):
    """The poisoned market's trial 0 equals a clean market's trial 0 (same seeded sampler)."""
    workdir, _, _ = study
    clean = run_study(cfg, 1, workdir=tmp_path, market=market, progress=False)
    poisoned_rec = _log(workdir / TRIAL_LOG)[0]
    clean_rec = _log(clean.trial_log)[0]
    assert clean_rec["params"] == poisoned_rec["params"]
    assert clean_rec["state"] == poisoned_rec["state"] == "COMPLETE"
    assert clean_rec["value"] == poisoned_rec["value"]
    assert clean_rec["segment_scores"] == poisoned_rec["segment_scores"]
    split = poisoned_rec["segment_scores"]["0"]
    assert split["val_end"] == segment.train_end
    assert split["val_end"] - split["val_start"] == round(0.2 * (segment.train_end
                                                                 - segment.train_start))
    assert split["gap"] >= max(cfg.env.window, layout.lookback_rows(cfg))


def test_trial_log_and_exported_config(study, cfg):
    workdir, result, _ = study
    records = _log(workdir / TRIAL_LOG)
    assert [r["number"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["state"] == "COMPLETE" and np.isfinite(r["value"])
        assert r["sharpe"] == r["value"]  # metric: sharpe
        assert r["seed"] == cfg.seed and r["n_seeds"] == cfg.train.n_seeds
        assert set(r["params"]) == {p.key for p in cfg.tune.space}
        assert r["segment_scores"]["0"]["sharpe"] == r["value"]
        assert r["datetime_complete"] and len(r["intermediate"]) == 5  # one per train chunk
    best = max(records, key=lambda r: r["value"])
    assert result.best_trial == best["number"] and result.best_value == best["value"]

    exported = load_config(result.best_config)
    assert exported.wfo.trial_log == str((workdir / TRIAL_LOG).absolute())
    expected = with_overrides(cfg, best["overrides"])
    expected = dataclasses.replace(expected, run_name="tiny-tuned", wfo=dataclasses.replace(
        expected.wfo, trial_log=str((workdir / TRIAL_LOG).absolute())))
    assert exported == expected
    assert exported.features.scaler_clip == best["params"]["features.scaler_clip"]
    assert exported.regimes.n_iter == best["params"]["regimes.n_iter"]
    assert exported.regimes.covariance_type == best["params"]["regimes.covariance_type"]
    assert exported.run_name == "tiny-tuned"
    n, var, source = read_trial_log(exported.wfo.trial_log, workdir)
    assert n == 3 and var > 0 and source == exported.wfo.trial_log
    assert not (workdir / "trials").exists() or not any((workdir / "trials").iterdir())


def test_overfitting_statistics_of_the_study(study):
    """overfitting.json: the best trial's DSR on its validation rows and the PBO (CSCV)."""
    from cryptorl_jax.backtest.metrics import expected_max_sharpe, probabilistic_sharpe
    from cryptorl_jax.backtest.overfitting import pbo_cscv

    workdir, result, _ = study
    stats = json.loads((workdir / OVERFITTING).read_text())
    assert stats == json.loads(json.dumps(result.overfitting))
    assert {"pbo", "best_trial_dsr", "n_trials"} <= set(stats)
    assert stats["n_trials"] == stats["n_completed"] == 3
    trials = sorted(result.study.get_trials(), key=lambda t: t.number)
    series = [np.asarray(t.user_attrs[VAL_RETURNS]["0"]) for t in trials]
    best = series[result.best_trial]
    assert stats["n_validation_hours"] == len(best) > 16
    sharpes = [v.mean() / v.std(ddof=1) for v in series]
    emax = expected_max_sharpe(3, float(np.var(sharpes, ddof=1)))
    assert stats["best_trial_dsr"] == pytest.approx(probabilistic_sharpe(best, emax), rel=1e-12)
    assert stats["best_trial_dsr"] < stats["best_trial_psr"]
    pbo = pbo_cscv(np.stack(series, axis=1), n_blocks=16).pbo
    assert stats["pbo"] == pytest.approx(pbo) and stats["pbo_trials"] == [0, 1, 2]


class _Trial:
    def __init__(self, number, state, returns=None, error=None):
        self.number = number
        self.state = type("State", (), {"name": state})()
        self.user_attrs = {} if returns is None else {VAL_RETURNS: {"0": list(returns)}}
        if error:
            self.user_attrs["error"] = error
        self.value = None if returns is None else float(np.mean(returns))


class _Study:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False):
        return self.trials

    @property
    def best_trial(self):
        done = [t for t in self.trials if t.state.name == "COMPLETE"]
        if not done:
            raise ValueError("no trial completed")
        return max(done, key=lambda t: t.value)


def test_dsr_is_undefined_with_fewer_than_two_completed_trials(cfg):
    rng = np.random.default_rng(0)
    trials = [_Trial(0, "COMPLETE", rng.normal(0, 0.01, 200)), _Trial(1, "PRUNED"),
              _Trial(2, "FAIL", error="TrainingDivergedError: nan"), _Trial(3, "FAIL")]
    stats = study_overfitting(_Study(trials), cfg)
    assert stats["n_trials"] == 3  # completed, pruned and diverged count; a dead process not
    assert stats["best_trial_dsr"] is None and stats["best_trial_psr"] is not None
    assert stats["pbo"] is None
    assert any("DSR is undefined" in n for n in stats["notes"])
    trials.append(_Trial(4, "COMPLETE", rng.normal(0, 0.01, 200)))
    stats = study_overfitting(_Study(trials), cfg)
    assert stats["n_trials"] == 4 and stats["best_trial_dsr"] is not None
    assert stats["pbo"] is not None


def test_resumes_from_storage_and_prunes_through_on_chunk(study, cfg, poisoned):
    """A second call continues the numbering, keeps the old trials; its trial is pruned."""
    workdir, first, _ = study
    before = _log(workdir / TRIAL_LOG)
    always_prune = optuna.pruners.ThresholdPruner(lower=1e9)  # pnl is never that high
    again = run_study(cfg, 1, workdir=workdir, market=poisoned, pruner=always_prune,
                      progress=False)
    assert again.trials_run == [3] and again.n_trials == 4
    records = _log(workdir / TRIAL_LOG)
    assert records[:3] == before
    assert records[3]["state"] == "PRUNED" and records[3]["value"] is None
    assert list(records[3]["intermediate"]) == ["0"]  # stopped after the first chunk
    assert again.best_trial == first.best_trial
    # not a replay of trial 0: the resumed sampler is seeded with the trials already there
    assert records[3]["params"] != records[0]["params"]
    n, _, _ = read_trial_log(load_config(again.best_config).wfo.trial_log, workdir)
    assert n == 4  # complete and pruned trials count for the Deflated Sharpe
    assert again.overfitting["n_trials"] == 4 and again.overfitting["n_completed"] == 3
    assert again.overfitting["n_pruned"] == 1
    golden.check("sequential_resumed_pruned", workdir, cfg)

    other = with_overrides(cfg, ["env.fee_bps=9"])
    with pytest.raises(ConfigError, match="different base config"):
        run_study(other, 1, workdir=workdir, market=poisoned, progress=False)


# --------------------------------------------------------------------------------------------
# Fast unit tests (no training)
# --------------------------------------------------------------------------------------------


def test_nested_split_rows(cfg):
    seg = Segment(0, 100, 400, 400, 500)
    s = nested_split(cfg, seg, offset=90)
    assert s.val_end == 400 and s.val_start == 400 - 60
    assert s.gap == layout.lookback_rows(cfg) >= cfg.env.window
    assert s.inner_train_end == s.val_start - s.gap and s.fit_start == 100
    assert nested_split(cfg, seg, offset=130).fit_start == 130  # longer warm-up
    embargo = with_overrides(cfg, ["wfo.embargo_hours=80"])  # longer than the lookback
    assert nested_split(embargo, seg).gap == 80
    inner = s.inner_segment()
    assert (inner.train_start, inner.train_end, inner.test_start, inner.test_end) == (
        100, s.inner_train_end, s.val_start, 400)
    with pytest.raises(ConfigError, match="tune.val_fraction"):
        nested_split(with_overrides(cfg, ["tune.val_fraction=0.45"]),
                     Segment(0, 100, 200, 200, 300))


def test_calmar_needs_90_days_of_validation_rows(cfg):
    """tune.metric=calmar on validation rows shorter than 90 days (where Calmar is NaN, not
    annualised) is refused before any trial, naming the key; 2,160 rows are enough."""
    calmar = with_overrides(cfg, ["tune.metric=calmar"])
    with pytest.raises(ConfigError, match=r"tune\.metric.*60 hours are fewer than 90 days"):
        nested_split(calmar, Segment(0, 100, 400, 400, 500))
    assert nested_split(calmar, Segment(0, 0, 10800, 10800, 11000)).val_start == 10800 - 2160


def test_cut_run_holds_only_rows_before_the_end(cfg, market):
    run = cut_run(cfg, market, 500)
    assert len(run.market) == len(run.features) == len(run.close) == 500
    assert run.market.index[-1] == market.index[499]
    full = layout.build_run_features(cfg, market)
    np.testing.assert_array_equal(run.features.to_numpy(), full.iloc[:500].to_numpy())


def test_suggest_overrides_and_check_space(cfg):
    space_cfg = load_config(None, [*TINY_WFO, (
        "tune.space=[{key: tqc.net_arch, type: categorical, choices: ['[32, 32]', '[8]']}, "
        "{key: encoder.mode, type: categorical, choices: [none, random]}, "
        "{key: output.plots, type: categorical, choices: [true, false]}, "
        "{key: tqc.learning_rate, type: loguniform, low: 1.0e-5, high: 1.0e-3}]")])
    check_space(space_cfg)
    trial = optuna.trial.FixedTrial({"tqc.net_arch": "[32, 32]", "encoder.mode": "none",
                                     "output.plots": False, "tqc.learning_rate": 3e-5})
    out = with_overrides(space_cfg, suggest_overrides(trial, space_cfg.tune.space))
    assert out.tqc.net_arch == (32, 32) and out.encoder.mode == "none"
    assert out.output.plots is False and out.tqc.learning_rate == 3e-5

    bad_int = with_overrides(cfg, [
        "tune.space=[{key: regimes.n_iter, type: float, low: 10, high: 20}]"])
    with pytest.raises(ConfigError, match="integer key"):
        check_space(bad_int)
    bad_range = with_overrides(cfg, [
        "tune.space=[{key: tqc.gamma, type: float, low: 0.9, high: 1.5}]"])
    with pytest.raises(ConfigError, match=r"tune.space\[0\].*tqc.gamma = 1.5"):
        check_space(bad_range)
    with pytest.raises(ConfigError, match="tune.space.*empty"):
        check_space(with_overrides(cfg, ["tune.space=[]"]))


def test_population_mode_searches_the_entropy_learning_rate():
    """tqc.ent_coef_learning_rate is a Hyper leaf: searchable in population mode, and each
    trial's value reaches its member's alpha_lr."""
    space_cfg = load_config(None, [*TINY_WFO, (
        "tune.space=[{key: tqc.ent_coef_learning_rate, type: loguniform, low: 3.0e-4, "
        "high: 1.0e-2}, {key: tqc.learning_rate, type: loguniform, low: 1.0e-4, high: 1.0e-3}]")])
    check_space(space_cfg)
    check_population_space(space_cfg)  # no error
    trial = optuna.trial.FixedTrial({"tqc.ent_coef_learning_rate": 5e-3,
                                     "tqc.learning_rate": 2e-4})
    out = with_overrides(space_cfg, suggest_overrides(trial, space_cfg.tune.space))
    hyper = Hyper.from_config(out).tqc
    assert float(hyper.alpha_lr) == pytest.approx(5e-3)
    assert float(hyper.actor_lr) == pytest.approx(2e-4)
    bad = with_overrides(space_cfg, ["tune.space=[{key: tqc.ent_coef_learning_rate, "
                                     "type: float, low: -1.0, high: 1.0e-2}]"])
    with pytest.raises(ConfigError, match=r"tune.space\[0\].*tqc.ent_coef_learning_rate"):
        check_space(bad)


def test_a_flat_validation_series_scores_zero_and_any_other_undefined_score_fails():
    """Agents that never leave the no-trade band hold nothing: their Sharpe is undefined, and
    Optuna refuses a NaN value. Such a trial scores 0 (the flat strategy's); an undefined score
    of a series that is not flat is an error naming the metric."""
    flat = {"sharpe": float("nan"), "total_return": 0.0, "flat": True}
    assert score(flat, "sharpe") == 0.0
    assert score({"sharpe": 1.5, "flat": False}, "sharpe") == 1.5
    with pytest.raises(ValueError, match="tune.metric 'sharpe' is undefined"):
        score({"sharpe": float("nan"), "flat": False}, "sharpe")
    import pandas as pd

    frame = pd.DataFrame({"strategy": np.zeros(50), "benchmark": np.full(50, 0.001),
                          "exposure": np.zeros(50), "turnover": np.zeros(50)})
    split = NestedSplit(segment=0, fit_start=0, inner_train_end=10, val_start=20,
                        val_end=70)
    scores = scores_of(frame, split, chunks=1)
    assert scores["flat"] is True and score(scores, "sharpe") == 0.0


def test_trial_log_reader_prefers_sharpe(tmp_path):
    path = tmp_path / "t.jsonl"
    recs = [{"state": "COMPLETE", "value": 0.5, "sharpe": 2.0},
            {"state": "COMPLETE", "value": 0.1, "sharpe": 1.0},
            {"state": "PRUNED", "value": None}, {"state": "FAIL", "value": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    n, var, _ = read_trial_log(str(path), tmp_path)
    assert n == 3
    assert var == pytest.approx(np.var([2.0 / np.sqrt(8760), 1.0 / np.sqrt(8760)], ddof=1))


def test_cli_rejects_bad_input(tmp_path, repo_root, capsys):
    sys.path.insert(0, str(repo_root / "scripts"))
    try:
        import tune as tune_cli
    finally:
        sys.path.pop(0)
    assert tune_cli.main(["--config", str(tmp_path / "missing.yaml"), "--trials", "2"]) == 2
    assert "config file not found" in capsys.readouterr().err
    no_space = tmp_path / "no_space.yaml"
    no_space.write_text("run_name: x\n")
    assert tune_cli.main(["--config", str(no_space), "--trials", "2", "--out",
                          str(tmp_path)]) == 2
    assert "tune.space" in capsys.readouterr().err
    assert tune_cli.main(["--config", str(no_space), "--trials", "0"]) == 2
    assert "--trials" in capsys.readouterr().err


def test_seen_by_tuning_flags_earlier_test_rows():
    wfo_segments = [Segment(k, 100 * k, 100 * k + 300, 100 * k + 300, 100 * k + 400)
                    for k in range(4)]
    assert seen_by_tuning(wfo_segments, [wfo_segments[0]]) == []
    assert seen_by_tuning(wfo_segments, [wfo_segments[0], wfo_segments[2]]) == [0, 1]


def test_tune_quick_config_space_is_valid(repo_root):
    cfg = load_config(repo_root / "configs" / "tune_quick.yaml")
    check_space(cfg)
    assert cfg.tune.segments == (0,) and len(cfg.tune.space) >= 6
    base = load_config(repo_root / "configs" / "quick.yaml")
    assert dataclasses.replace(cfg, tune=base.tune, source=None) == base


WORKER = """
import sys
from cryptorl_jax.config import load_config
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.tuning.driver import run_study
from tests.tuning.test_tune import TINY_TUNE
cfg = load_config(None, [*TINY_TUNE, "train.total_env_steps=128"])
run_study(cfg, 1, storage=sys.argv[1], workdir=sys.argv[2], market=make_market(1100, seed=5),
          worker=int(sys.argv[3]), progress=False)
"""


@pytest.mark.slow
def test_two_processes_share_one_storage(tmp_path, repo_root):
    """Two processes on one SQLite study: both trials land in it, numbered 0 and 1."""
    import os
    import subprocess

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(tmp_path / f"w{k}"),
                               str(k)], cwd=repo_root, env=env, stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="tiny-tune", storage=url)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert trials[0].params != trials[1].params  # distinct workers sample differently
    for k in range(2):  # each process rebuilt its log from the shared storage at its end
        assert len(_log(tmp_path / f"w{k}" / TRIAL_LOG)) >= 1
        assert load_config(tmp_path / f"w{k}" / BEST_CONFIG).wfo.trial_log


HYPER_SPACE = ("tune.space=["
               "{key: tqc.learning_rate, type: loguniform, low: 1.0e-4, high: 1.0e-3}, "
               "{key: tqc.gamma, type: float, low: 0.9, high: 0.99}, "
               "{key: env.reward_scale, type: loguniform, low: 10.0, high: 300.0}]")


def test_population_study_compiles_once_and_matches_a_sequential_trial(market, tmp_path):
    """Two batches of two trials trained as populations: one compilation of the training step
    for the whole study, the same trial log and outputs, and trial 0 scored as the sequential
    study scores the same parameters."""
    cfg = load_config(None, [*TINY_WFO, HYPER_SPACE, "tune.segments=[0]"])
    stages._TRAINERS.clear()
    pop = run_study(cfg, 4, workdir=tmp_path / "pop", market=market, progress=False,
                    population=2)
    (trainer, _), = stages._TRAINERS.values()
    assert trainer.population == 2 * cfg.train.n_seeds
    assert trainer.trace_counts["train_chunk"] == 1  # every batch, one compilation
    records = _log(pop.trial_log)
    assert [r["number"] for r in records] == [0, 1, 2, 3]
    assert all(r["state"] == "COMPLETE" and np.isfinite(r["value"]) for r in records)
    assert len({r["value"] for r in records}) == 4  # their own hyperparameters
    assert pop.best_config.is_file() and pop.overfitting["n_trials"] == 4
    assert pop.overfitting["pbo"] is not None
    golden.check("population", tmp_path / "pop", cfg)
    seq = run_study(cfg, 1, workdir=tmp_path / "seq", market=market, progress=False)
    first = _log(seq.trial_log)[0]
    assert first["params"] == records[0]["params"]
    assert first["value"] == pytest.approx(records[0]["value"], rel=2e-3, abs=2e-3)


def test_population_mode_refuses_a_key_that_is_not_a_hyperparameter(cfg, market, tmp_path):
    with pytest.raises(ConfigError, match=r"tune.space\[0\].key.*features.scaler_clip.*data"):
        run_study(cfg, 2, workdir=tmp_path, market=market, progress=False, population=2)
    shape = load_config(None, [*TINY_WFO, "tune.space=[{key: tqc.batch_size, type: int, "
                               "low: 16, high: 32}]"])
    with pytest.raises(ConfigError, match="changes a shape"):
        run_study(shape, 2, workdir=tmp_path, market=market, progress=False, population=2)


def test_an_error_that_is_not_the_trials_own_fails_it_and_stops_the_study(cfg, market, tmp_path,
                                                                          monkeypatch):
    """A divergence or a bad config fails the trial and the study goes on; anything else (a
    bug, a full disk, Ctrl-C) fails the trial, naming the error, and stops the study: no trial
    stays RUNNING in the storage."""
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tuning_trials, "validate_segment", boom)
    with pytest.raises(OSError, match="disk full"):
        run_study(cfg, 3, workdir=tmp_path, market=market, progress=False)
    records = _log(tmp_path / TRIAL_LOG)
    assert [(r["number"], r["state"]) for r in records] == [(0, "FAIL")]
    assert records[0]["error"] == "OSError: disk full"
    study = optuna.load_study(study_name="tiny-tune", storage=f"sqlite:///{tmp_path}/study.db")
    assert all(t.state.name != "RUNNING" for t in study.trials)

    def diverge(*a, **k):
        raise TrainingDivergedError("NaN in the critic loss")

    monkeypatch.setattr(tuning_trials, "validate_segment", diverge)
    again = run_study(cfg, 2, workdir=tmp_path, market=market, progress=False)
    assert again.trials_run == [1, 2] and again.best_trial is None
    assert [r["state"] for r in _log(tmp_path / TRIAL_LOG)] == ["FAIL"] * 3


def test_both_executors_implement_the_one_interface():
    from cryptorl_jax.cluster import RayExecutor
    from cryptorl_jax.walkforward.executor import Executor, LocalExecutor

    assert isinstance(LocalExecutor(), Executor)
    ray_ex = RayExecutor()  # not connected
    for name in ("name", "remote", "shared_fs", "slots", "put", "submit", "wait", "result",
                 "cancel"):
        assert hasattr(RayExecutor, name) or name in vars(ray_ex), name
    assert ray_ex.remote and not ray_ex.shared_fs and RayExecutor(shared_fs=True).shared_fs
    import inspect

    for name in ("put", "submit", "wait", "result", "cancel"):
        want = list(inspect.signature(getattr(Executor, name)).parameters)
        assert list(inspect.signature(getattr(RayExecutor, name)).parameters) == want, name
        assert list(inspect.signature(getattr(LocalExecutor, name)).parameters) == want, name


def test_a_study_recorded_with_the_legacy_digest_resumes(cfg, market, tmp_path, monkeypatch):
    """Studies from before config.identity hold the old digest of their base config: they
    resume (the stored digest is brought up to date); another base config is still refused."""
    storage = f"sqlite:///{tmp_path}/study.db"
    old = optuna.create_study(storage=storage, study_name="tiny-tune", direction="maximize")
    old.set_user_attr("base_config_digest", legacy_study_digest(cfg))

    def diverge(*a, **k):
        raise TrainingDivergedError("NaN")

    monkeypatch.setattr(tuning_trials, "validate_segment", diverge)
    run_study(cfg, 1, workdir=tmp_path, market=market, progress=False)
    study = optuna.load_study(study_name="tiny-tune", storage=storage)
    assert study.user_attrs["base_config_digest"] == study_digest(cfg)
    with pytest.raises(ConfigError, match="different base config"):
        run_study(with_overrides(cfg, ["env.fee_bps=9"]), 1, workdir=tmp_path,
                  market=market, progress=False)


def test_a_population_batch_with_a_bad_combination_leaves_no_trial_running(market, tmp_path,
                                                                             monkeypatch):
    cfg = load_config(None, [*TINY_WFO, HYPER_SPACE, "tune.segments=[0]"])

    def bad(c, overrides):
        raise ConfigError("tqc.gamma", "a bad combination")

    monkeypatch.setattr(tuning_trials, "with_overrides", bad)
    with pytest.raises(ConfigError, match="a bad combination"):
        run_study(cfg, 2, workdir=tmp_path, market=market, progress=False, population=2)
    study = optuna.load_study(study_name="tiny-tune", storage=f"sqlite:///{tmp_path}/study.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("a bad combination" in t.user_attrs["error"] for t in study.trials)
