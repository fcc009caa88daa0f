"""The direct learner (agent.kind direct): the gradient flows through the ledger, training
resumes exactly, and the rollout acts with its deterministic policy."""

from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest

from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.env.trading import MarketData, make_start_range
from cryptorl_jax.training.data import TrainData
from cryptorl_jax.training.loop import TrainControls, train
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.trainer import needs_obs_noise, trainer_for
from cryptorl_jax.walkforward.stages import load_agents, save_agents
from tests.training.helpers import run_on_two_cpu_devices, synthetic_data, tiny_config

DIRECT = ["agent.kind=direct", "agent.direct.horizon=32", "agent.direct.learning_rate=3e-3"]


def drift_data(cfg, drift: float, n_rows: int = 600, seed: int = 0) -> TrainData:
    """A market whose every hourly return has mean `drift` (sd 1 %), features pure noise."""
    rng = np.random.default_rng(seed)
    r = rng.normal(drift, 0.01, n_rows)
    close = 100.0 * np.exp(np.cumsum(r))
    features = rng.normal(size=(n_rows, 4)).astype(np.float32)
    market = MarketData.from_arrays(features, close, cfg.env)
    return TrainData(market=market, start_range=make_start_range(0, n_rows - 1, cfg.env,
                                                                 n_rows))


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.agent)]


@pytest.fixture(scope="module")
def learning():
    """Config and trainer of the drift test: tiny costs, 200 updates of 4 x 32-hour episodes."""
    cfg = tiny_config(*DIRECT, "env.fee_bps=0.5", "env.slippage_bps=0", "env.no_trade_band=0.02",
                      "train.steps_per_chunk=50", "train.total_env_steps=25600",
                      "train.checkpoint_every_chunks=100", "train.n_seeds=1")
    return cfg, trainer_for(cfg, 4)


@pytest.mark.parametrize("drift", [0.002, -0.002])
def test_the_gradient_through_the_ledger_follows_the_drift(learning, drift, tmp_path):
    """On a market with a strong constant drift and tiny costs, a few hundred updates take the
    policy's mean action to the drift's sign (it starts near 0): only the gradient through
    the ledger's pnl can move it there, the features being noise."""
    cfg, trainer = learning
    data = drift_data(cfg, drift)
    result = train(cfg, data, tmp_path, trainer=trainer, controls=TrainControls(resume=False))
    assert result.env_steps == 25600 and result.history[-1]["updates"] == 50
    first, last = result.history[0]["action"], result.history[-1]["action"]
    rollout = make_rollout(trainer)
    start = int(data.start_range.first_start)
    actions = np.asarray(rollout(result.state.agent, trainer.put_data(data), start, 400))
    sign = np.sign(drift)
    assert sign * last > 0.5 and sign * last > sign * first
    assert sign * actions.mean() > 0.5, actions.mean()


def test_the_action_penalty_keeps_the_policy_off_tanh_s_tails(tmp_path):
    """agent.direct.action_penalty: on the strong-drift market the unpenalised policy runs to
    the bound (the drift test above), a heavily penalised one stays inside it, and the step
    reports the penalised quantity."""
    cfg = tiny_config(*DIRECT, "env.fee_bps=0.5", "env.slippage_bps=0", "env.no_trade_band=0.02",
                      "train.steps_per_chunk=50", "train.total_env_steps=25600",
                      "train.checkpoint_every_chunks=100", "train.n_seeds=1",
                      "agent.direct.action_penalty=0.5")
    data = drift_data(cfg, 0.002)
    result = train(cfg, data, tmp_path, trainer=trainer_for(cfg, 4),
                   controls=TrainControls(resume=False))
    last = result.history[-1]
    assert 0 < last["pre_tanh_sq"] < 0.25, last["pre_tanh_sq"]
    assert 0 < last["action"] < 0.5, last["action"]  # the drift's sign, well inside the bound


def test_training_and_the_rollout_are_deterministic(learning, tmp_path):
    """Same config, seed and data: the same parameters, history and backtest actions."""
    cfg, trainer = learning
    data = drift_data(cfg, 0.002, seed=3)
    runs = [train(cfg, data, tmp_path / str(i), trainer=trainer,
                  controls=TrainControls(resume=False)) for i in range(2)]
    for x, y in zip(leaves(runs[0].state), leaves(runs[1].state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert runs[0].history == runs[1].history
    rollout = make_rollout(trainer)
    start = int(data.start_range.first_start)
    a, b = (np.asarray(rollout(r.state.agent, trainer.put_data(data), start, 200))
            for r in runs)
    np.testing.assert_array_equal(a, b)
    # the agents' checkpoint (what a segment saves and evaluate / paper load) holds the policy
    save_agents(tmp_path / "agents", jax.device_get(runs[0].state.agent))
    loaded = load_agents(tmp_path / "agents", trainer)
    np.testing.assert_array_equal(
        np.asarray(rollout(loaded, trainer.put_data(data), start, 200)), a)


@pytest.fixture(scope="module")
def tiny_direct():
    # 2 seeds, 3 chunks of 16 updates of 4 x 32-hour episodes
    cfg = tiny_config(*DIRECT, f"train.total_env_steps={3 * 16 * 4 * 32}")
    return cfg, trainer_for(cfg, 4)


def test_resume_gives_the_uninterrupted_parameters(tmp_path, tiny_direct):
    cfg, trainer = tiny_direct
    data = synthetic_data(cfg)
    full = train(cfg, data, tmp_path / "full", controls=TrainControls(resume=False),
                 trainer=trainer)
    assert full.env_steps == cfg.train.total_env_steps and len(full.history) == 3
    part = train(cfg, data, tmp_path / "part",
                 controls=TrainControls(hooks=Hooks(stop_after_chunk=2)), trainer=trainer)
    assert part.env_steps == 2 * 16 * 4 * 32
    resumed = train(cfg, data, tmp_path / "part", trainer=trainer)
    assert len(resumed.history) == len(full.history)
    for x, y in zip(leaves(full.state), leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed.history[-1] == full.history[-1]
    assert trainer.trace_counts["train_chunk"] == 1
    # the seeds are independent policies
    params = [np.asarray(x) for x in jax.tree.leaves(full.state.agent.params)]
    assert not all(np.allclose(x[0], x[1]) for x in params)


def test_a_horizon_longer_than_the_train_rows_is_refused(tiny_direct):
    cfg, trainer = tiny_direct
    data = synthetic_data(cfg, n_rows=80)  # starts at row 48, last row 79: 31 hours < 32
    with pytest.raises(ValueError, match="agent.direct.horizon = 32 hours does not fit"):
        trainer.init(jax.random.key(0), trainer.put_data(data),
                     hyper=trainer.default_hyper, seeds=[0, 1])


TWO_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from tests.training.helpers import synthetic_data, tiny_config
    from cryptorl_jax.training.trainer import trainer_for
    assert jax.device_count() == 2, jax.devices()
    cfg = tiny_config("agent.kind=direct", "agent.direct.horizon=32", "train.devices=all",
                      "train.total_env_steps=4096")
    trainer = trainer_for(cfg, 4)
    assert trainer.n_devices == 2 and trainer.n_envs_local == 2
    data = trainer.put_data(synthetic_data(cfg))
    state = trainer.init(jax.random.key(0), data, hyper=trainer.default_hyper,
                         seeds=[m.seed for m in trainer.default_members])
    for _ in range(2):
        state, metrics = trainer.train_chunk(state, data, trainer.default_hyper)
    for leaf in jax.tree.leaves(state.agent):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 2
        np.testing.assert_array_equal(shards[0], shards[1])
    # each device draws its own episodes, so the replicas agree because of pmean
    keys = [np.asarray(jax.random.key_data(s.data)) for s in state.local.key.addressable_shards]
    assert not np.array_equal(keys[0], keys[1])
    assert float(np.asarray(metrics["updates"]).mean()) == 16
    print("OK")
""")


@pytest.mark.slow
def test_two_devices_keep_identical_replicas(repo_root):
    """Data parallelism: each device rolls its share of the episodes, the gradients are
    averaged over the devices (~20 s: a fresh process compiles for two devices)."""
    run_on_two_cpu_devices(TWO_DEVICE_SCRIPT, repo_root)


def test_finetune_mode_starts_from_the_pretrained_encoder():
    """encoder.mode pretrained-finetune: the policy's encoder starts as the pre-trained one."""
    from flax import nnx

    from cryptorl_jax.encoder.mae import MAEEncoder

    cfg = tiny_config(*DIRECT, "encoder.mode=pretrained-finetune", "encoder.d_model=8",
                      "encoder.depth=1", "encoder.n_heads=2", "train.n_seeds=1")
    trainer = trainer_for(cfg, 4)
    data = trainer.put_data(synthetic_data(cfg))
    pretrained = MAEEncoder(4, cfg.env.window, cfg.encoder, rngs=nnx.Rngs(7))
    enc_params = nnx.split(pretrained, nnx.Param, ...)[1]
    state = trainer.init(jax.random.key(0), data, enc_params, hyper=trainer.default_hyper,
                         seeds=[0])
    got = [np.asarray(x)[0] for x in jax.tree.leaves(state.agent.params["encoder"])]
    for a, b in zip(got, [np.asarray(x) for x in jax.tree.leaves(enc_params)], strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_trainer_counts_the_budget_as_the_dry_run_does():
    """An update is n_envs x horizon env steps; a chunk is steps_per_chunk updates, or the
    fewer a small budget needs (no compilation: the trainer is only built)."""
    from cryptorl_jax.walkforward.plan import training_budget

    for total, chunk in ((100_000, 16), (1_000, 8), (6_144, 16)):
        cfg = tiny_config(*DIRECT, f"train.total_env_steps={total}")
        trainer = trainer_for(cfg, 4)
        b = training_budget(cfg)
        assert trainer.env_steps_per_chunk == chunk * 4 * 32, total
        assert (trainer.n_chunks, trainer.n_chunks * trainer.env_steps_per_chunk) == (
            b.chunks, b.env_steps), total


def test_the_direct_step_without_noise_trains_as_the_noisy_step_at_zero():
    """The direct learner's chunk takes MemberStep's static `noisy` too: with every obs_noise 0
    the trainer runs the step that draws no noise, bit-identical to the noisy step at sd 0."""
    cfg = tiny_config(*DIRECT, f"train.total_env_steps={2 * 16 * 4 * 32}")
    trainer = trainer_for(cfg, 4)
    data = trainer.put_data(synthetic_data(cfg))
    hyper = trainer.default_hyper
    assert not needs_obs_noise(hyper)
    seeds = [m.seed for m in trainer.default_members]

    def run(noisy):
        state = trainer.init(jax.random.key(5), data, hyper=hyper, seeds=seeds)
        state, metrics = trainer.train_chunk(state, data, hyper, noisy=noisy)
        return jax.tree.leaves(jax.device_get((state.agent, metrics)))

    for a, b in zip(run(None), run(True), strict=True):
        np.testing.assert_array_equal(a, b)
