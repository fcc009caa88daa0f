"""agent.kind is a validated choice (tqc, direct); the direct learner's keys are checked and
the section leaves every TQC config's digest as it was."""

from __future__ import annotations

import hashlib
import json

import pytest

from cryptorl_jax.config import ConfigError, load_config
from cryptorl_jax.config.schema import DIGEST_CACHE_DIR
from cryptorl_jax.training.spec import Hyper, TrainerSpec


def test_an_unknown_kind_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  kind: ppo\n")
    with pytest.raises(ConfigError, match=r"'agent\.kind'.*c\.yaml.*'tqc' \| 'direct'.*'ppo'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'agent\.direct\.objective'.*--set.*'log_growth'"):
        load_config(None, ["agent.direct.objective=sortino"])


@pytest.mark.parametrize(("override", "key"), [
    ("agent.direct.horizon=0", "agent.direct.horizon"),
    ("agent.direct.learning_rate=0", "agent.direct.learning_rate"),
    ("agent.direct.band_temperature=0", "agent.direct.band_temperature"),
    ("agent.direct.max_grad_norm=-1", "agent.direct.max_grad_norm"),
    ("agent.direct.net_arch=[0]", "agent.direct.net_arch"),
])
def test_impossible_direct_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, ["agent.kind=direct", override])


def test_a_direct_horizon_longer_than_the_train_window_is_refused():
    small = ["wfo.train_months=3", "wfo.hours_per_month=100", "env.window=8",
             "env.vol_window=48"]
    with pytest.raises(ConfigError, match=r"'agent\.direct\.horizon'.*do not fit in the 300"):
        load_config(None, [*small, "agent.kind=direct", "agent.direct.horizon=300"])
    load_config(None, [*small, "agent.direct.horizon=300"])  # TQC does not read it


def test_direct_takes_the_tqc_section_as_it_is(repo_root):
    """direct needs no TQC key, and a config full of TQC settings (quick.yaml) switches to it
    with one key."""
    cfg = load_config(repo_root / "configs" / "quick.yaml", ["agent.kind=direct"])
    assert cfg.agent.kind == "direct" and cfg.tqc.batch_size == 128
    assert load_config(None, ["agent.kind=direct"]).agent.direct.horizon == 168


def test_the_agent_section_at_its_defaults_leaves_the_digest_unchanged():
    """A TQC config's digest is the one it had before the agent section existed (run
    directories and tuning studies made then still resume); a direct config has its own."""
    cfg = load_config(None, [])
    raw = cfg.to_dict()
    assert "agent" in raw  # config.yaml records it
    del raw["agent"]
    raw["data"]["cache_dir"] = DIGEST_CACHE_DIR
    old = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.digest() == old
    direct = load_config(None, ["agent.kind=direct"])
    assert direct.digest() != cfg.digest()
    assert load_config(None, ["agent.direct.horizon=24"]).digest() != cfg.digest()


def test_the_direct_settings_enter_the_spec_and_its_learning_rate_the_hyper():
    tqc, direct = load_config(None, []), load_config(None, ["agent.kind=direct"])
    assert TrainerSpec.from_config(tqc, 4) != TrainerSpec.from_config(direct, 4)
    # a TQC spec ignores the direct settings (no recompilation), a direct spec reads them
    moved = load_config(None, ["agent.direct.horizon=24"])
    assert TrainerSpec.from_config(moved, 4) == TrainerSpec.from_config(tqc, 4)
    for key in ("horizon=24", "objective=sharpe", "band_temperature=0.1", "max_grad_norm=null",
                "net_arch=[8]"):
        other = load_config(None, ["agent.kind=direct", f"agent.direct.{key}"])
        assert TrainerSpec.from_config(other, 4) != TrainerSpec.from_config(direct, 4), key
    fast = load_config(None, ["agent.kind=direct", "agent.direct.learning_rate=0.01"])
    assert TrainerSpec.from_config(fast, 4) == TrainerSpec.from_config(direct, 4)
    assert float(Hyper.from_config(fast).direct.learning_rate) == pytest.approx(0.01)


def test_the_dry_run_counts_a_direct_budget_in_episodes():
    """wfo --dry-run: a direct update runs n_envs episodes of `horizon` hours; the step-rate
    estimate does not mix TQC and direct runs (their step shapes differ)."""
    from cryptorl_jax.walkforward.plan import budget_lines, training_budget
    from cryptorl_jax.walkforward.rates import step_shape

    cfg = load_config(None, ["agent.kind=direct", "agent.direct.horizon=100",
                             "train.n_envs=10", "train.steps_per_chunk=50",
                             "train.total_env_steps=120000"])
    b = training_budget(cfg)
    assert (b.chunks, b.env_steps, b.updates) == (3, 150_000, 150)
    assert "3 chunks of 50 updates, each on 10 episodes x 100 hours" in budget_lines(cfg, b)[0]
    # a budget smaller than a chunk runs the updates it needs, not a whole chunk
    small = load_config(None, ["agent.kind=direct", "train.n_envs=16",
                               "train.steps_per_chunk=500", "train.total_env_steps=100000"])
    b = training_budget(small)
    assert (b.chunks, b.updates, b.env_steps) == (1, 38, 38 * 16 * 168)
    assert "1 chunks of 38 updates, each on 16 episodes x 168 hours" in budget_lines(small, b)[0]
    tqc = load_config(None, [])
    old = tqc.to_dict()
    del old["agent"]  # a run recorded before the agent section: the same TQC shape
    assert step_shape(old) == step_shape(tqc.to_dict()) != step_shape(cfg.to_dict())
