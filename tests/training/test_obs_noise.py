"""train.obs_noise: noise on the training observations' market part, in units of each
column's sd over the rows training reads (never rows after the last train row)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.env.trading import Observation, StartRange
from cryptorl_jax.training.noise import add_obs_noise, column_scale
from cryptorl_jax.training.spec import Hyper, TrainerSpec
from cryptorl_jax.training.trainer import needs_obs_noise, trainer_for
from tests.training.helpers import synthetic_data, tiny_config


def test_column_scale_reads_only_the_training_rows():
    cfg = tiny_config()
    data = synthetic_data(cfg, n_rows=300)
    window = cfg.env.window
    data = data.replace(start_range=StartRange.create(100, 180, 200))
    features = np.asarray(data.market.features, np.float64)
    want = features[100 - window + 1:201].std(axis=0)  # the windows' rows .. last_row
    np.testing.assert_allclose(column_scale(data, False, window), want, rtol=1e-5)
    # poisoned rows after last_row (and before the first window) change nothing
    poisoned = features.copy()
    poisoned[201:] = 1e6
    poisoned[:100 - window + 1] = -1e6
    bad = data.replace(market=data.market.replace(features=jnp.asarray(poisoned, jnp.float32)))
    np.testing.assert_array_equal(column_scale(bad, False, window), column_scale(data, False,
                                                                                 window))
    # embeddings: the decision rows first_start .. last_row
    emb = np.random.default_rng(1).normal(size=(300, 3)) * np.array([1.0, 2.0, 5.0])
    edata = data.replace(embeddings=jnp.asarray(emb, jnp.float32))
    np.testing.assert_allclose(column_scale(edata, True, window), emb[100:201].std(axis=0),
                               rtol=1e-5)


def test_noise_has_the_requested_sd_and_leaves_the_agent_state_exact():
    scale = jnp.asarray([1.0, 2.0, 5.0], jnp.float32)
    obs = Observation(window=jnp.zeros((20000, 3), jnp.float32),
                      agent=jnp.ones((20000, 3), jnp.float32))
    out = add_obs_noise(obs, jax.random.key(0), 0.5, scale)
    np.testing.assert_allclose(np.std(np.asarray(out.window), axis=0), [0.5, 1.0, 2.5],
                               rtol=0.03)
    np.testing.assert_array_equal(out.agent, obs.agent)
    window = Observation(window=jnp.zeros((4000, 8, 3)), agent=jnp.zeros((4000, 3)))
    out = add_obs_noise(window, jax.random.key(1), 1.0, scale)  # scale per feature column
    np.testing.assert_allclose(np.std(np.asarray(out.window), axis=(0, 1)), [1.0, 2.0, 5.0],
                               rtol=0.03)
    zero = add_obs_noise(obs, jax.random.key(0), 0.0, scale)
    np.testing.assert_array_equal(zero.window, obs.window)


@pytest.fixture(scope="module")
def noise_trainer():
    """One trainer for the two tests below (its two steps compile once)."""
    cfg = tiny_config()
    trainer = trainer_for(cfg, 4)
    return cfg, trainer, trainer.put_data(synthetic_data(cfg))


def test_noise_is_dynamic_and_changes_training_only_when_on(noise_trainer):
    """obs_noise is a Hyper leaf (one compilation for any non-zero values, one for all zero);
    0 trains exactly as before the key existed; > 0 trains differently."""
    cfg, trainer, data = noise_trainer
    noisy_cfg = tiny_config("train.obs_noise=0.5")
    other_cfg = tiny_config("train.obs_noise=0.25")
    assert TrainerSpec.from_config(noisy_cfg, 4) == TrainerSpec.from_config(cfg, 4)
    seeds = [m.seed for m in trainer.default_members]

    def run(hyper_cfg, noisy=None):
        hyper = jax.tree.map(lambda x: jnp.stack([x] * len(seeds)), Hyper.from_config(hyper_cfg))
        state = trainer.init(jax.random.key(0), data, hyper=hyper, seeds=seeds)
        for _ in range(3):
            state, _ = trainer.train_chunk(state, data, hyper, noisy=noisy)
        return [np.asarray(x) for x in jax.tree.leaves(state.agent)]

    clean, again = run(cfg), run(cfg)
    assert trainer.trace_counts["train_chunk"] == 1
    noisy, other = run(noisy_cfg), run(other_cfg)
    assert trainer.trace_counts["train_chunk"] == 2  # any non-zero values: one more step
    for a, b in zip(clean, again):
        np.testing.assert_array_equal(a, b)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(clean, noisy)) > 1e-4
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(noisy, other)) > 1e-6
    assert dataclasses.replace(noisy_cfg.train, obs_noise=0.0) == cfg.train


def test_the_noise_free_step_trains_as_the_noisy_step_at_zero(noise_trainer):
    """With every obs_noise 0 the step draws no noise (needs_obs_noise False), and its numbers
    are bit-identical to the noisy step's at sd 0: every leaf of the learner, the envs and the
    replay buffer after three chunks (the noise's keys are folded off the others, so skipping
    it moves no other draw). The step without noise has no normal draws of a batch's shape."""
    _, trainer, data = noise_trainer
    hyper = trainer.default_hyper
    assert not needs_obs_noise(hyper)
    one_noisy = hyper.replace(obs_noise=hyper.obs_noise.at[1].set(0.1))
    assert needs_obs_noise(one_noisy)
    seeds = [m.seed for m in trainer.default_members]

    def run(noisy):
        state = trainer.init(jax.random.key(3), data, hyper=hyper, seeds=seeds)
        metrics = []
        for _ in range(3):
            state, m = trainer.train_chunk(state, data, hyper, noisy=noisy)
            metrics.append(m)
        return jax.device_get((state, metrics))

    fast, traced = run(None), run(True)
    state = trainer.init(jax.random.key(3), data, hyper=one_noisy, seeds=seeds)
    with pytest.raises(ValueError, match="obs_noise not 0"):
        trainer.train_chunk(state, data, one_noisy, noisy=False)
    leaves_fast, leaves_traced = jax.tree.leaves(fast), jax.tree.leaves(traced)
    assert len(leaves_fast) == len(leaves_traced)
    for a, b in zip(leaves_fast, leaves_traced, strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert float(np.sum(fast[1][-1]["updates"])) > 0  # learning ran
