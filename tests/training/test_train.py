"""The fused training step: compiles once, resumes exactly, guards NaN, keeps replicas equal."""

from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest

from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.training.loop import (
    TrainControls,
    TrainingDivergedError,
    _finite_or_raise,
    train,
)
from cryptorl_jax.training.result import ENTROPY_TOLERANCE, entropy_summary
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import run_on_two_cpu_devices, synthetic_data, tiny_config


def _members(trainer):
    return {"hyper": trainer.default_hyper, "seeds": [m.seed for m in trainer.default_members]}


@pytest.fixture(scope="module")
def tiny():
    """One trainer (one compilation) shared by the tests of this module."""
    cfg = tiny_config()
    return cfg, trainer_for(cfg, 4)


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.agent)]


def test_train_chunk_traced_once_across_chunks_and_markets(tiny):
    cfg, trainer = tiny
    traced = trainer.trace_counts["train_chunk"]
    a, b = synthetic_data(cfg, seed=1), synthetic_data(cfg, seed=2)
    state = trainer.init(jax.random.key(0), trainer.put_data(a), **_members(trainer))
    for data in (a, b, a, b):
        state, metrics = trainer.train_chunk(state, trainer.put_data(data),
                                             trainer.default_hyper)
    jax.block_until_ready(metrics)
    assert trainer.trace_counts["train_chunk"] - traced <= 1
    assert trainer.trace_counts["train_chunk"] == 1
    assert set(metrics) >= {"reward", "pnl", "cost", "churn_penalty", "smooth_penalty",
                            "turnover", "exposure", "episode_nav", "critic_loss", "actor_loss",
                            "alpha", "q_mean", "churn_coef", "smooth_coef"}
    assert np.asarray(metrics["reward"]).shape == (cfg.train.n_seeds,)
    # learning started (learning_starts=64 env steps = 16 iterations of 4 envs)
    assert np.all(np.asarray(metrics["updates"]) == cfg.train.steps_per_chunk)
    # the seeds are independent agents
    actor = jax.tree.leaves(state.agent.actor_params)[0]
    assert not np.allclose(np.asarray(actor[0]), np.asarray(actor[1]))


def test_resume_gives_the_uninterrupted_parameters(tmp_path, tiny):
    cfg, trainer = tiny  # one compilation serves all four runs
    data = synthetic_data(cfg)
    full = train(cfg, data, tmp_path / "full", controls=TrainControls(resume=False),
                 trainer=trainer)
    assert full.env_steps == cfg.train.total_env_steps
    # a run killed after chunk 2, then resumed from its checkpoint
    part = train(cfg, data, tmp_path / "part",
                 controls=TrainControls(hooks=Hooks(stop_after_chunk=2)), trainer=trainer)
    assert part.env_steps == 2 * cfg.train.steps_per_chunk * cfg.train.n_envs
    resumed = train(cfg, data, tmp_path / "part", trainer=trainer)
    assert len(resumed.history) == len(full.history)
    for x, y in zip(leaves(full.state), leaves(resumed.state)):
        np.testing.assert_array_equal(x, y)
    assert resumed.entropy == full.entropy  # from the restored history's last record
    assert full.entropy["members"]["final_alpha"] == full.history[-1]["members"]["alpha"]
    assert full.entropy["members"]["target_entropy"] == [-1.0, -1.0]  # "auto": -action_dim
    # and a third identical run gives the same numbers (determinism)
    again = train(cfg, data, tmp_path / "again", controls=TrainControls(resume=False),
                  trainer=trainer)
    assert trainer.trace_counts["train_chunk"] == 1
    for x, y in zip(leaves(full.state), leaves(again.state)):
        np.testing.assert_array_equal(x, y)


def test_nan_in_features_is_refused_with_row_and_column(tmp_path):
    cfg = tiny_config()
    data = synthetic_data(cfg)
    features = np.asarray(data.market.features).copy()
    features[300, 2] = np.nan
    bad = data.replace(market=data.market.replace(features=features))
    with pytest.raises(ValueError, match=r"features is not finite at row 300, column 2"):
        train(cfg, bad, tmp_path)


def test_nan_metrics_stop_training_and_keep_last_checkpoint(tmp_path, tiny):
    cfg, trainer = tiny
    data = synthetic_data(cfg)
    features = np.asarray(data.market.features).copy()
    features[:] = np.nan  # unchecked: the guard after the chunk must catch it
    bad = data.replace(market=data.market.replace(features=features))
    # chunk 0 only collects random actions (learning_starts); chunk 1 learns on NaN windows
    with pytest.raises(TrainingDivergedError,
                       match=r"chunk 1: metric '.*' is nan .*last good checkpoint is .*/1"):
        train(cfg, bad, tmp_path, controls=TrainControls(check_inputs=False), trainer=trainer)
    assert (tmp_path / "checkpoints" / "1").is_dir()
    assert not (tmp_path / "checkpoints" / "2").exists()
    with pytest.raises(TrainingDivergedError, match="chunk 7: metric 'critic_loss' is inf"):
        _finite_or_raise({"reward": np.zeros(2), "critic_loss": np.array([0.0, np.inf])}, 7,
                         "x")


TWO_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from tests.training.helpers import synthetic_data, tiny_config
    from cryptorl_jax.training.trainer import trainer_for
    assert jax.device_count() == 2, jax.devices()
    cfg = tiny_config("train.devices=all")
    trainer = trainer_for(cfg, 4)
    assert trainer.n_devices == 2 and trainer.n_envs_local == 2
    data = trainer.put_data(synthetic_data(cfg))
    state = trainer.init(jax.random.key(0), data, hyper=trainer.default_hyper,
                         seeds=[m.seed for m in trainer.default_members])
    for _ in range(6):
        state, metrics = trainer.train_chunk(state, data, trainer.default_hyper)
    jax.block_until_ready(state)
    n = 0
    for leaf in jax.tree.leaves(state.agent):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(shards) == 2
        np.testing.assert_array_equal(shards[0], shards[1])
        n += 1
    # the envs differ per device (own keys), so the replicas agree because of pmean
    env_t = [np.asarray(s.data) for s in state.local.env.t.addressable_shards]
    assert not np.array_equal(env_t[0], env_t[1])
    assert float(np.asarray(metrics["updates"]).mean()) > 0
    print("OK", n)
""")


def test_two_devices_keep_identical_replicas(repo_root):
    run_on_two_cpu_devices(TWO_DEVICE_SCRIPT, repo_root)


def test_finetune_mode_starts_from_the_pretrained_encoder():
    from flax import nnx

    from cryptorl_jax.encoder.mae import MAEEncoder

    cfg = tiny_config("encoder.mode=pretrained-finetune", "encoder.d_model=8",
                      "encoder.depth=1", "encoder.n_heads=2", "train.n_seeds=1",
                      "encoder.finetune_learning_rate=1e-3")
    trainer = trainer_for(cfg, 4)
    data = trainer.put_data(synthetic_data(cfg))
    pretrained = MAEEncoder(4, cfg.env.window, cfg.encoder, rngs=nnx.Rngs(7))
    enc_params = nnx.split(pretrained, nnx.Param, ...)[1]
    state = trainer.init(jax.random.key(0), data, enc_params, **_members(trainer))
    want = [np.asarray(x) for x in jax.tree.leaves(enc_params)]
    for tree in (state.agent.actor_params, state.agent.critic_params,
                 state.agent.target_critic_params):
        got = [np.asarray(x)[0] for x in jax.tree.leaves(tree["encoder"])]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="exactly when encoder.mode is pretrained-finetune"):
        trainer.init(jax.random.key(0), data, **_members(trainer))
    for _ in range(6):  # learning starts in chunk 2; the encoder then trains at its own lr
        state, metrics = trainer.train_chunk(state, data, trainer.default_hyper)
    assert np.isfinite(np.asarray(metrics["critic_loss"])).all()
    moved = [np.asarray(x)[0] for x in jax.tree.leaves(state.agent.actor_params["encoder"])]
    assert any(not np.array_equal(a, b) for a, b in zip(moved, want))


def test_a_time_limit_truncation_still_bootstraps_in_the_rebuilt_batch():
    """A transition truncated by episode_length comes back from the replay buffer as a batch row
    that is not terminal, whose next observation is the true next state (not the auto-reset),
    so the critic target keeps its gamma * next-value term."""
    import jax
    import jax.numpy as jnp

    from cryptorl_jax.agent import tqc as T
    from cryptorl_jax.env import trading

    cfg = tiny_config("env.episode_length=5", "env.ruin_nav=0.0")
    data = synthetic_data(cfg)
    trainer = trainer_for(cfg, 4)
    params, market = trainer.env_params, data.market
    coeffs = trading.Coeffs.create()
    _, state = trading.reset(jax.random.key(0), params, market, data.start_range)
    records, truncated_at = [], None
    for i in range(5):
        a = jnp.float32(0.5 if i % 2 else -0.7)
        _, nxt, _, term, trunc, _ = trading.step(jax.random.key(i), state, a, params, market,
                                                 coeffs)
        records.append(trading.compact(state, a, term, trunc))
        if bool(trunc):
            truncated_at = (state, nxt)
        state = nxt
    assert truncated_at is not None and not bool(records[-1].terminated)
    cts = jax.tree.map(lambda *x: jnp.stack(x), *records)
    batch = trainer.rebuild(data, cts, coeffs)
    assert not np.asarray(batch.terminated).any()
    before, after_reset = truncated_at
    # the true next state: row t + 1 of the same episode, not the reset's start row
    true_next = trainer.observe(data, before.t + 1, np.asarray(batch.next_obs.agent[-1]))
    np.testing.assert_array_equal(np.asarray(batch.next_obs.window[-1]),
                                  np.asarray(true_next.window))
    assert int(after_reset.step) == 0  # the env itself auto-reset
    # the target bootstraps: r + gamma * (z - alpha log pi), not r alone
    z = jnp.ones((5, 3), jnp.float32)
    target = T.soft_td_target(z, jnp.zeros(5), batch.reward, batch.terminated, 1.0, 0.9)
    np.testing.assert_allclose(np.asarray(target[-1]), float(batch.reward[-1]) + 0.9, rtol=1e-6)


POPULATION_DEVICES_SCRIPT = textwrap.dedent("""
    import tempfile
    import jax, numpy as np
    from tests.training.helpers import synthetic_data, tiny_config
    from cryptorl_jax.training.loop import TrainControls, train
    from cryptorl_jax.training.spec import Hyper, Member
    from cryptorl_jax.training.trainer import trainer_for
    tmp = tempfile.mkdtemp()
    assert jax.device_count() == 2, jax.devices()
    cfg = tiny_config("train.n_seeds=4", "train.checkpoint_every_chunks=100")
    data = synthetic_data(cfg)
    h = Hyper.from_config(cfg)
    fast = h.replace(tqc=h.tqc.replace(actor_lr=np.float32(1e-3), gamma=np.float32(0.9)))
    members = [Member(0, h), Member(1, fast), Member(2, h), Member(9, fast)]
    runs = {}
    for name, extra in (("sharded", ["train.parallel=population", "train.devices=all"]),
                        ("one_device", ["train.parallel=data", "train.devices=1"])):
        c = tiny_config("train.n_seeds=4", "train.checkpoint_every_chunks=100", *extra)
        trainer = trainer_for(c, 4)
        assert trainer.n_devices == (2 if name == "sharded" else 1)
        runs[name] = train(c, data, f"{tmp}/{name}", trainer=trainer, members=members,
                           controls=TrainControls(resume=False))
    sharded = runs["sharded"].state.agent.actor_params
    shards = [s.data.shape[0] for s in jax.tree.leaves(sharded)[0].addressable_shards]
    assert shards == [2, 2], shards  # two members per device
    for x, y in zip(jax.tree.leaves(runs["sharded"].state.agent),
                    jax.tree.leaves(runs["one_device"].state.agent), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    # data-parallel over the two devices (gradients pmean-ed) in the GPU's form (batched
    # critics, flat parameters) trains as in the CPU's form
    c = tiny_config("train.n_seeds=2", "train.checkpoint_every_chunks=100",
                    "train.parallel=data", "train.devices=all")
    forms = {}
    for name, kw in (("cpu", {}), ("gpu", {"critics": "batched", "params": "flat"})):
        trainer = trainer_for(c, 4, **kw)
        assert trainer.n_devices == 2
        forms[name] = train(c, data, f"{tmp}/data_{name}", trainer=trainer,
                            members=members[:2], controls=TrainControls(resume=False))
    for x, y in zip(jax.tree.leaves(forms["gpu"].state.agent),
                    jax.tree.leaves(forms["cpu"].state.agent), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
    print("OK")
""")


def test_population_sharded_over_two_devices_matches_one_device(repo_root):
    run_on_two_cpu_devices(POPULATION_DEVICES_SCRIPT, repo_root)


def test_a_fresh_run_refuses_a_directory_with_checkpoints(tmp_path, tiny):
    cfg, trainer = tiny
    data = synthetic_data(cfg)
    train(cfg, data, tmp_path, trainer=trainer,
          controls=TrainControls(hooks=Hooks(stop_after_chunk=1)))
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(FileExistsError, match="already holds training checkpoints"):
        train(cfg, data, tmp_path, trainer=trainer, controls=TrainControls(resume=False))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_entropy_summary_of_one_agent():
    history = [{"chunk": 0, "alpha": 1.0, "entropy": 0.0, "updates": 0.0},
               {"chunk": 1, "alpha": 0.2, "entropy": -0.95, "updates": 16.0}]
    assert entropy_summary(history, -1.0) == {
        "final_alpha": 0.2, "final_entropy": -0.95, "target_entropy": -1.0,
        "entropy_reached_target": True, "tolerance": ENTROPY_TOLERANCE, "chunk": 1}
    above = [*history[:1], dict(history[1], entropy=-0.85)]  # 0.15 nat above the target
    assert entropy_summary(above, -1.0)["entropy_reached_target"] is False
    assert entropy_summary(above, -1.0, tol=0.2)["entropy_reached_target"] is True
    # a last chunk without updates (learning had not started) has no entropy to judge
    early = entropy_summary(history[:1], -1.0)
    assert early["final_entropy"] is None and early["entropy_reached_target"] is False
    assert early["final_alpha"] == 1.0
    empty = entropy_summary([], -1.0)
    assert empty["final_alpha"] is None and empty["entropy_reached_target"] is False


def test_entropy_summary_of_a_population_needs_every_member_at_its_target():
    members = {"alpha": [0.1, 0.5, 0.05], "entropy": [-1.05, -0.5, -1.95],
               "updates": [16.0, 16.0, 16.0]}
    history = [{"chunk": 4, "alpha": 0.2167, "entropy": -1.1667, "updates": 16.0,
                "members": members}]
    s = entropy_summary(history, [-1.0, -1.0, -2.0])
    assert s["members"] == {"final_alpha": [0.1, 0.5, 0.05],
                            "final_entropy": [-1.05, -0.5, -1.95],
                            "target_entropy": [-1.0, -1.0, -2.0],
                            "entropy_reached_target": [True, False, True]}
    assert s["entropy_reached_target"] is False  # member 1 is 0.5 nat above its target
    assert s["final_alpha"] == pytest.approx(np.mean([0.1, 0.5, 0.05]))
    assert s["final_entropy"] == pytest.approx(np.mean([-1.05, -0.5, -1.95]))
    assert s["target_entropy"] == pytest.approx(-4.0 / 3.0)
    settled = [dict(history[0], members=dict(members, entropy=[-1.05, -0.95, -1.95]))]
    assert entropy_summary(settled, [-1.0, -1.0, -2.0])["entropy_reached_target"] is True
    # one target serves every member; a count that matches neither is refused
    assert entropy_summary(settled, -1.0)["members"]["entropy_reached_target"] == [True] * 3
    with pytest.raises(ValueError, match="2 target entropies for 3 members"):
        entropy_summary(settled, [-1.0, -1.0])
