"""Config loading: types, overrides, unknown keys and impossible values name key and file."""

from __future__ import annotations

import dataclasses
import os

import pytest

from cryptorl_jax.config import ConfigError, check_rows, load_config, validate, with_overrides


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_load_and_are_hashable(repo_root):
    for name in ("quick.yaml", "full.yaml", "long_history.yaml"):
        cfg = load_config(repo_root / "configs" / name)
        hash(cfg)
        assert cfg.source.endswith(name)


def test_shipped_configs_lag_the_mt5_dollar_series_by_one_hour(repo_root):
    for name in ("quick.yaml", "tune_quick.yaml", "full.yaml", "long_history.yaml"):
        assets = load_config(repo_root / "configs" / name).data.assets
        lags = {a.file: a.availability_lag_hours for a in assets}
        mt5 = [f for f in lags if f in ("DXY_1h.csv.gz", "EURUSD_1h.csv.gz")]
        assert len(mt5) == 1, name
        assert all(lag == (1 if f in mt5 else 0) for f, lag in lags.items()), (name, lags)


def test_lag_must_be_a_whole_number_of_hours_even_when_built_in_code():
    cfg = load_config(None)
    for bad, words in ((1.5, "whole number"), (True, "whole number"), (-2, ">= 0")):
        assets = list(cfg.data.assets)
        assets[3] = dataclasses.replace(assets[3], availability_lag_hours=bad)
        odd = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, assets=tuple(assets)))
        with pytest.raises(ConfigError, match=words) as err:
            validate(odd)
        assert err.value.key == "data.assets[3].availability_lag_hours"
    assets = list(cfg.data.assets)
    assets[3] = dataclasses.replace(assets[3], availability_lag_hours=3)
    validate(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, assets=tuple(assets))))


def test_full_yaml_holds_the_originals_values(repo_root):
    cfg = load_config(repo_root / "configs" / "full.yaml")
    assert (cfg.wfo.train_months, cfg.wfo.test_months, cfg.wfo.step_months) == (18, 3, 3)
    assert cfg.wfo.hours_per_month == 720
    assert cfg.train.total_env_steps == 30_000_000
    assert cfg.encoder.epochs == 90
    assert cfg.tqc.learning_rate == pytest.approx(1e-4)
    assert cfg.tqc.ent_coef_learning_rate is None  # the actor's, as the original's sb3
    assert cfg.tqc.buffer_size == 2_500_000
    assert cfg.train.n_envs == 512
    assert cfg.tqc.batch_size == 2048
    assert cfg.tqc.gamma == pytest.approx(0.99)
    assert cfg.env.target_volatility == pytest.approx(0.05)
    assert cfg.env.vol_window == 24
    assert cfg.env.max_leverage == pytest.approx(2.0)
    cur = cfg.train.curriculum
    assert cur.phase_ends == (0.2, 0.6, 1.0)
    assert cur.churn == ((0.0, 0.1), (0.1, 0.5), (0.5, 0.5))
    assert cur.smooth == ((0.0, 0.0), (0.0, 0.02), (0.02, 0.02))


def test_defaults_are_sb3_contrib_tqc():
    q = load_config(None).tqc
    assert (q.n_quantiles, q.n_critics, q.top_quantiles_to_drop_per_net) == (25, 2, 2)
    assert (q.gamma, q.tau, q.net_arch) == (0.99, 0.005, (256, 256))
    assert q.ent_coef_learning_rate is None  # sb3: the entropy coefficient uses learning_rate


def test_quick_and_study_give_the_entropy_coefficient_its_own_learning_rate(repo_root):
    for name in ("quick.yaml", "study.yaml"):
        q = load_config(repo_root / "configs" / name).tqc
        assert q.ent_coef_learning_rate == pytest.approx(3e-3)
        assert q.learning_rate == pytest.approx(3e-4)


def test_overrides_are_parsed_to_the_field_type():
    cfg = load_config(None, ["tqc.learning_rate=3e-4", "train.devices=2", "features.ffd_d=auto",
                             "tqc.net_arch=[32, 16]", "wfo.max_segments=3",
                             "output.plots=false", "train.curriculum.phase_ends=[0.5, 1.0]",
                             "train.curriculum.churn=[[0, 0.1], [0.1, 0.2]]",
                             "train.curriculum.smooth=[[0, 0], [0, 0]]"])
    assert cfg.tqc.learning_rate == pytest.approx(3e-4) and isinstance(cfg.tqc.learning_rate,
                                                                         float)
    assert cfg.train.devices == 2
    assert cfg.features.ffd_d == "auto"
    assert cfg.tqc.net_arch == (32, 16)
    assert cfg.output.plots is False
    assert cfg.train.curriculum.phase_ends == (0.5, 1.0)
    again = with_overrides(cfg, ["seed=5"])
    assert again.seed == 5 and again.tqc.net_arch == (32, 16)


def test_yaml_float_without_dot_is_accepted(tmp_path):
    p = write(tmp_path, "tqc:\n  learning_rate: 3e-4\n")
    assert load_config(p).tqc.learning_rate == pytest.approx(3e-4)


@pytest.mark.parametrize("text, key, words", [
    ("tqc:\n  learnin_rate: 0.1\n", "tqc.learnin_rate", "unknown key"),
    ("bogus: 1\n", "bogus", "unknown key"),
    ("tqc:\n  batch_size: big\n", "tqc.batch_size", "expected int"),
    ("output:\n  plots: 3\n", "output.plots", "expected bool"),
    ("env:\n  window: -4\n", "env.window", "must be >= 1"),
    ("env:\n  vol_window: 0\n", "env.vol_window", ">= 2"),
    ("env:\n  borrow_rate_annual: -0.01\n", "env.borrow_rate_annual", "must be >= 0"),
    ("tune:\n  pbo_blocks: 7\n", "tune.pbo_blocks", "even number"),
    ("wfo:\n  train_months: -1\n", "wfo.train_months", ">= 1"),
    ("encoder:\n  mode: foo\n", "encoder.mode", "expected"),
    ("data:\n  traded_asset: DOGE\n", "data.traded_asset", "not among"),
    ("data:\n  assets: [{name: BTC, file: x.csv, colour: red}]\n", "data.assets[0].colour",
     "unknown key"),
    ("tqc:\n  net_arch: 256\n", "tqc.net_arch", "expected list"),
    ("features:\n  ffd_d: maybe\n", "features.ffd_d", "expected"),
    ("train:\n  curriculum:\n    phase_ends: [0.6, 0.2, 1.0]\n", "train.curriculum.phase_ends",
     "increase"),
    ("tqc:\n  top_quantiles_to_drop_per_net: 25\n", "tqc.top_quantiles_to_drop_per_net", "in [0"),
    ("tqc:\n  ent_coef_learning_rate: 0\n", "tqc.ent_coef_learning_rate", "must be > 0"),
    ("tqc:\n  ent_coef_learning_rate: -1.0e-3\n", "tqc.ent_coef_learning_rate", "must be > 0"),
    ("data:\n  start: notadate\n", "data.start", "not a date"),
    ("data:\n  assets: [{name: BTC, file: b.csv}, {name: DXY, file: d.csv, kind: market,\n"
     "            availability_lag_hours: -1}]\n", "data.assets[1].availability_lag_hours",
     "must be >= 0"),
    ("data:\n  assets: [{name: BTC, file: b.csv}, {name: DXY, file: d.csv,\n"
     "            availability_lag_hours: 1.5}]\n", "data.assets[1].availability_lag_hours",
     "expected int"),
    ("data:\n  assets: [{name: BTC, file: b.csv, availability_lag_hours: 1}]\n",
     "data.assets[0].availability_lag_hours", "must be 0 for the traded asset BTC"),
    ("data:\n  traded_asset: ETH\n  assets: [{name: BTC, file: b.csv},\n"
     "    {name: ETH, file: e.csv, availability_lag_hours: 2}]\n",
     "data.assets[1].availability_lag_hours", "must be 0 for the traded asset ETH"),
    ("- a\n- b\n", "<root>", "mapping"),
])
def test_bad_configs_name_key_and_file(tmp_path, text, key, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert f"'{key}'" in msg and str(p) in msg and words in msg
    assert err.value.key == key


def test_bad_override_names_key_and_set(tmp_path):
    p = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=r"'tqc\.gama'.*--set.*unknown key"):
        load_config(p, ["tqc.gama=0.9"])
    with pytest.raises(ConfigError, match=r"'tqc\.gamma'.*--set.*expected float"):
        load_config(p, ["tqc.gamma=high"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(p, ["tqc.gamma"])


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path, "tqc: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)


def test_test_window_longer_than_data_is_refused(repo_root):
    cfg = load_config(repo_root / "configs" / "full.yaml")
    check_rows(cfg, 20_000)
    with pytest.raises(ConfigError, match=r"'wfo\.test_months'.*full\.yaml.*longer than"):
        check_rows(cfg, 12_960 + 1_000)


def test_config_is_frozen_and_roundtrips(tmp_path):
    cfg = load_config(None, ["seed=3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 4  # type: ignore[misc]
    p = write(tmp_path, cfg.to_yaml(), "resolved.yaml")
    again = load_config(p)
    assert again == cfg and again.digest() == cfg.digest()


# --------------------------------------------------------------------------------------------
# base: inheritance
# --------------------------------------------------------------------------------------------


def test_base_merges_section_by_section(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "seed: 3\nrun_name: a\nenv:\n  window: 16\n  fee_bps: 4.0\n"
        "tqc:\n  net_arch: [32, 32, 32]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text(
        "base: ../a.yaml\nrun_name: b\nenv:\n  fee_bps: 1.0\ntqc:\n  net_arch: [8]\n")
    cfg = load_config(tmp_path / "sub" / "b.yaml", ["env.slippage_bps=0.5"])
    assert cfg.seed == 3 and cfg.run_name == "b"  # inherited / overridden
    assert cfg.env.window == 16 and cfg.env.fee_bps == 1.0 and cfg.env.slippage_bps == 0.5
    assert cfg.tqc.net_arch == (8,)  # a list replaces the base's list


def test_tune_quick_inherits_quick(repo_root):
    quick = load_config(repo_root / "configs" / "quick.yaml")
    tune = load_config(repo_root / "configs" / "tune_quick.yaml")
    assert "base: quick.yaml" in (repo_root / "configs" / "tune_quick.yaml").read_text()
    assert dataclasses.replace(tune, tune=quick.tune, source=None) == \
        dataclasses.replace(quick, source=None)
    assert len(tune.tune.space) >= 4


def test_missing_or_looping_base_is_refused_naming_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml.*named by .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "x.yaml").write_text("base: y.yaml\nseed: 1\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match=r"loops back: .*x\.yaml -> .*y\.yaml -> .*x\.yaml"):
        load_config(tmp_path / "x.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "bad.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError, match="'base'.*must name a YAML file"):
        load_config(tmp_path / "bad.yaml")


def test_study_section_is_validated(tmp_path, repo_root):
    cfg = load_config(repo_root / "configs" / "study.yaml")
    assert [r.name for r in cfg.study.runs] == ["none", "random", "pretrained"]
    assert cfg.data.start is None and cfg.wfo.train_months == 18
    (tmp_path / "s.yaml").write_text(
        "study:\n  runs:\n    - {name: a, set: ['encoder.mode=none']}\n"
        "    - {name: a, set: []}\n")
    with pytest.raises(ConfigError, match=r"study\.runs\[1\]\.name.*duplicate"):
        load_config(tmp_path / "s.yaml")
    (tmp_path / "t.yaml").write_text("study:\n  runs:\n    - {name: a, set: ['tqc.gama=0.9']}\n")
    with pytest.raises(ConfigError, match=r"study\.runs\[0\]\.set.*'tqc\.gama' is not a config"):
        load_config(tmp_path / "t.yaml")


def test_every_section_has_its_validator():
    import inspect

    from cryptorl_jax.config import validation as config_module

    src = inspect.getsource(config_module.validate)
    assert len(src.splitlines()) < 25  # the dispatcher only
    for f in dataclasses.fields(config_module.Config):
        if f.name in ("seed", "run_name", "source"):
            continue
        assert hasattr(config_module, f"_validate_{f.name}"), f.name


def test_an_unquoted_date_is_read_as_its_iso_text():
    """YAML turns `--set data.start=2024-01-01` (or an unquoted date in a file) into a date."""
    cfg = load_config(None, ["data.start=2024-01-01", "data.end=2024-03-10T12:00:00"])
    assert cfg.data.start == "2024-01-01" and cfg.data.end.startswith("2024-03-10")


def test_one_identity_for_runs_registry_and_studies():
    """config.identity: what says how THIS process runs is left out of a run's identity (and
    for a study also the output section and the trial log); anything computed is in it."""
    from cryptorl_jax.config import identity, load_config, with_overrides

    cfg = load_config(None)
    local = with_overrides(cfg, ["wfo.segments=[1]", "output.progress=false",
                                 "study.doc=x.md"])
    assert identity(local) == identity(cfg) and identity(local).digest() == identity(cfg).digest()
    reporting = with_overrides(cfg, ["output.tearsheet=false", "wfo.trial_log=t.jsonl"])
    assert identity(reporting) != identity(cfg)  # a run's report and DSR read them
    assert identity(reporting, study=True) == identity(cfg, study=True)
    for key in ("env.fee_bps=9", "tqc.gamma=0.9", "seed=3", "wfo.train_months=6"):
        moved = with_overrides(cfg, [key])
        assert identity(moved).digest() != identity(cfg).digest(), key
        assert identity(moved, study=True).digest() != identity(cfg, study=True).digest(), key


def test_an_unknown_key_gets_the_same_close_name_whatever_the_hash_seed(tmp_path):
    """The hint used to come from sorting a set of names by edit distance, so two equally close
    names came out in set order, which changes with PYTHONHASHSEED; it is now the standard
    library's match over the sorted names, and no hint when nothing is close."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from cryptorl_jax.config import ConfigError, load_config\n"
            "for key in ('tqc.n_critic', 'tqc.qqqqqqqqqqqq', 'tqc.ab', 'train.n_seed'):\n"
            "    section, name = key.split('.')\n"
            "    with open(sys.argv[1], 'w') as f:\n"
            "        f.write(f'{section}:\\n  {name}: 2\\n')\n"
            "    for args in ((None, [f'{key}=2']), (sys.argv[1], [])):\n"
            "        try:\n"
            "            load_config(*args)\n"
            "        except ConfigError as exc:\n"
            "            print(exc)\n")
    outs = set()
    for seed in ("0", "1", "2", "3", "4", "5"):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.yaml")],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed, "JAX_PLATFORMS": "cpu"})
        outs.add(res.stdout)
    assert len(outs) == 1, outs
    out, = outs
    lines = out.splitlines()
    assert len(lines) == 8
    for line in lines[0:2]:
        assert "tqc.n_critic" in line and "did you mean 'n_critics'" in line
    for line in lines[2:4]:
        assert "tqc.qqqqqqqqqqqq" in line and "did you mean" not in line
    for line in lines[6:8]:
        assert "train.n_seed" in line and "did you mean 'n_seeds'" in line
