"""Populations: dynamic hyperparameters share one compilation, each member of a population
trains as it would alone, and the trainer's cache key is the TrainerSpec."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from cryptorl_jax.config import EncoderConfig, EnvConfig, TQCConfig, TrainConfig, with_overrides
from cryptorl_jax.training.loop import TrainControls, train
from cryptorl_jax.training.spec import HYPER_KEYS, Hyper, Member, TrainerSpec, enters_the_step
from cryptorl_jax.training.trainer import trainer_for
from cryptorl_jax.walkforward.stages import get_trainer
from tests.training.helpers import synthetic_data, tiny_config


def _with(h: Hyper, reward_scale=None, churn=None, **tqc) -> Hyper:
    h = h.replace(tqc=h.tqc.replace(**{k: np.float32(v) for k, v in tqc.items()}))
    if reward_scale is not None:
        h = h.replace(reward_scale=np.float32(reward_scale))
    if churn is not None:
        h = h.replace(churn=np.asarray(churn, np.float32))
    return h


def test_hyper_keys_share_one_trainer_and_one_compilation():
    cfg = tiny_config()
    other = with_overrides(cfg, ["tqc.learning_rate=1e-3", "tqc.gamma=0.9", "tqc.tau=0.01",
                                 "env.reward_scale=30", "tqc.max_grad_norm=null",
                                 "tqc.ent_coef_init=0.5", "tqc.target_entropy=-2",
                                 "train.curriculum.churn=[[0, 1], [1, 1], [1, 1]]",
                                 "seed=3", "train.checkpoint_every_chunks=7"])
    assert TrainerSpec.from_config(cfg, 4) == TrainerSpec.from_config(other, 4)
    first, _ = get_trainer(cfg, 4, None)
    again, _ = get_trainer(other, 4, None)
    assert again is first
    shape = with_overrides(cfg, ["tqc.batch_size=16"])
    assert TrainerSpec.from_config(shape, 4) != TrainerSpec.from_config(cfg, 4)


def test_the_entropy_learning_rate_is_dynamic():
    """Configs that differ only in tqc.ent_coef_learning_rate share one TrainerSpec (one
    compilation); their Hyper differ in alpha_lr alone."""
    assert "tqc.ent_coef_learning_rate" in HYPER_KEYS
    cfg = tiny_config()
    other = with_overrides(cfg, ["tqc.ent_coef_learning_rate=3e-3"])
    assert TrainerSpec.from_config(other, 4) == TrainerSpec.from_config(cfg, 4)
    assert hash(TrainerSpec.from_config(other, 4)) == hash(TrainerSpec.from_config(cfg, 4))
    a, b = Hyper.from_config(cfg), Hyper.from_config(other)
    assert float(a.tqc.alpha_lr) == pytest.approx(cfg.tqc.learning_rate)
    assert float(b.tqc.alpha_lr) == pytest.approx(3e-3)
    for x, y in zip(jax.tree.leaves(a.replace(tqc=a.tqc.replace(alpha_lr=b.tqc.alpha_lr))),
                    jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# a value other than the default for every declared dynamic hyperparameter
_MOVED = {"env.reward_scale": "30", "agent.direct.learning_rate": "1e-2",
          "tqc.learning_rate": "1e-3",
          "tqc.critic_learning_rate": "2e-3", "tqc.gamma": "0.9", "tqc.tau": "0.01",
          "tqc.ent_coef_init": "0.5", "tqc.ent_coef_learning_rate": "3e-3",
          "tqc.target_entropy": "-2", "tqc.max_grad_norm": "null", "tqc.weight_decay": "0.01",
          "train.obs_noise": "0.1", "train.curriculum.churn": "[[0, 1], [1, 1], [1, 1]]",
          "train.curriculum.smooth": "[[0, 1], [1, 1], [1, 1]]"}


def test_every_declared_hyperparameter_moves_the_hyper_and_not_the_spec():
    """Declared once (config.hyper): each key changes the member's Hyper (the step reads it as
    a traced leaf) and leaves the TrainerSpec, so the compilation, as it was."""
    assert set(HYPER_KEYS) == set(_MOVED), "give the new hyperparameter a moved value here"
    cfg = tiny_config()
    base_spec, base = TrainerSpec.from_config(cfg, 4), Hyper.from_config(cfg)
    for key in HYPER_KEYS:
        moved = with_overrides(cfg, [f"{key}={_MOVED[key]}"])
        assert TrainerSpec.from_config(moved, 4) == base_spec, key
        leaves = zip(jax.tree.leaves(Hyper.from_config(moved)), jax.tree.leaves(base),
                     strict=True)
        assert any(not np.array_equal(a, b) for a, b in leaves), key


def test_every_step_setting_is_in_the_spec():
    """Changing any key the step reads (other than a Hyper key) changes the TrainerSpec, so the
    cache can never serve a compilation built for another value."""
    cfg = tiny_config("encoder.mode=pretrained-finetune")
    base = TrainerSpec.from_config(cfg, 4)
    sections = {"env": EnvConfig, "tqc": TQCConfig, "train": TrainConfig,
                "encoder": EncoderConfig}
    checked = 0
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key in HYPER_KEYS or not enters_the_step(key) or key == "train.curriculum":
                continue
            value = getattr(getattr(cfg, section), f.name)
            if isinstance(value, bool):
                new = not value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                new = value + 1
            elif isinstance(value, str):
                new = {"all": 2, "mean": "last", "pretrained-finetune": "random"}.get(value,
                                                                                     value + "x")
            elif isinstance(value, tuple):
                new = (*value, value[-1])
            elif value is None:
                new = 0.5
            else:
                raise AssertionError(f"{key}: no perturbation for {value!r}")
            changed = dataclasses.replace(cfg, **{section: dataclasses.replace(
                getattr(cfg, section), **{f.name: new})})
            assert TrainerSpec.from_config(changed, 4) != base, key
            checked += 1
    assert checked > 30
    curriculum = dataclasses.replace(cfg.train.curriculum, phase_ends=(0.3, 0.6, 1.0))
    moved = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, curriculum=curriculum))
    assert TrainerSpec.from_config(moved, 4) != base


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    cfg = tiny_config("train.total_env_steps=1200", "train.checkpoint_every_chunks=100")
    data = synthetic_data(cfg)
    base = Hyper.from_config(cfg)
    members = [Member(0, base),
               Member(5, _with(base, actor_lr=1e-3, gamma=0.9)),
               Member(2, _with(base, critic_lr=3e-3, tau=0.02, reward_scale=30.0,
                               churn=[[0.5, 0.5], [1.0, 1.0], [1.0, 1.0]])),
               Member(7, _with(base, actor_lr=0.0, critic_lr=0.0, alpha_lr=1e-2))]
    trainer = trainer_for(cfg, 4, population=4)
    pop = train(cfg, data, tmp_path_factory.mktemp("pop"), trainer=trainer, members=members,
                controls=TrainControls(resume=False))
    return cfg, data, members, trainer, pop


def test_each_member_trains_as_it_would_alone(population_run, tmp_path):
    cfg, data, members, trainer, pop = population_run
    assert trainer.trace_counts["train_chunk"] == 1
    updates = pop.history[-1]["updates"] * len(pop.history)
    assert updates > 200  # a few hundred updates
    single = trainer_for(cfg, 4, population=1)
    for i, m in enumerate(members[:3]):
        alone = train(cfg, data, tmp_path / f"alone{i}", trainer=single, members=[m],
                      controls=TrainControls(resume=False))
        for x, y in zip(jax.tree.leaves(alone.state.agent), jax.tree.leaves(pop.state.agent),
                        strict=True):
            x, y = np.asarray(x)[0], np.asarray(y)[i]
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=2e-5 * max(np.abs(x).max(), 1e-3))
        got = [h["members"]["pnl"][i] for h in pop.history]
        np.testing.assert_allclose(got, [h["pnl"] for h in alone.history], rtol=1e-4,
                                   atol=1e-7)
    assert single.trace_counts["train_chunk"] == 1  # three members with other Hyper, one trace


def test_members_follow_their_own_hyperparameters(population_run):
    cfg, data, members, trainer, pop = population_run
    init = trainer.init(jax.random.key(cfg.seed), trainer.put_data(data),
                        hyper=_stack(members),
                        seeds=[m.seed for m in members])
    for tree in ("actor_params", "critic_params"):
        before = jax.tree.leaves(getattr(init.agent, tree))
        after = jax.tree.leaves(getattr(pop.state.agent, tree))
        for b, a in zip(before, after, strict=True):
            b, a = np.asarray(b), np.asarray(a)
            np.testing.assert_array_equal(a[3], b[3])  # learning rates 0: never moved
            assert not np.array_equal(a[0], b[0])  # the config's rates: trained
    last = pop.history[-1]["members"]
    assert last["churn_coef"][2] == pytest.approx(1.0) and last["churn_coef"][0] < 1.0


def _stack(members):
    from cryptorl_jax.training.spec import stack

    return stack([m.hyper for m in members])


def test_the_result_records_each_members_final_entropy(population_run):
    cfg, data, members, trainer, pop = population_run
    last = pop.history[-1]["members"]
    ent = pop.entropy
    assert ent["members"]["final_alpha"] == last["alpha"]
    assert ent["members"]["final_entropy"] == last["entropy"]
    assert ent["members"]["target_entropy"] == [-1.0] * 4
    assert ent["members"]["entropy_reached_target"] == [e <= -1.0 + ent["tolerance"]
                                                        for e in last["entropy"]]
    assert ent["entropy_reached_target"] == all(ent["members"]["entropy_reached_target"])
    # member 3's entropy coefficient steps at 1e-2, member 0's at the actor's 3e-4
    log_alpha = np.log(last["alpha"])
    assert abs(log_alpha[3]) > 10 * abs(log_alpha[0])
