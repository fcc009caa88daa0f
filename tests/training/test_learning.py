"""Learning sanity (slow): with an oracle feature the fused learner must learn to trade it.

The oracle column holds the sign of the NEXT hour's return; it exists only in this test. A
policy that reads it earns a large Sharpe; a random policy loses its costs. The check is on a
deterministic rollout over the train rows, replayed by backtest.simulate.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cryptorl_jax.backtest.baselines import run_baselines
from cryptorl_jax.backtest.metrics import compute_metrics
from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.training.loop import train
from cryptorl_jax.training.rollout import make_rollout
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import synthetic_data, tiny_config


@pytest.mark.slow
def test_oracle_feature_is_learned(tmp_path):
    cfg = tiny_config("env.window=4", "tqc.net_arch=[64, 64]", "tqc.n_quantiles=10",
                      "tqc.top_quantiles_to_drop_per_net=2", "tqc.batch_size=128",
                      "tqc.buffer_size=20000", "tqc.learning_starts=500",
                      "tqc.learning_rate=1e-3", "train.n_envs=8", "train.steps_per_chunk=250",
                      "train.total_env_steps=30000", "train.n_seeds=1",
                      "train.checkpoint_every_chunks=100",
                      "train.curriculum.churn=[[0, 0], [0, 0], [0, 0]]",
                      "train.curriculum.smooth=[[0, 0], [0, 0], [0, 0]]",
                      "env.episode_length=256", "env.reward_scale=100")
    data = synthetic_data(cfg, n_rows=3000, n_features=2, oracle=True)
    trainer = trainer_for(cfg, 2)
    result = train(cfg, data, tmp_path, trainer=trainer, key=jax.random.key(3))
    rollout = make_rollout(trainer)
    first = int(data.start_range.first_start)
    n_steps = int(data.start_range.last_row) - first
    close = np.asarray(data.market.close, np.float64)
    ensemble, _ = rollout(result.state.agent, trainer.put_data(data),
                          first, n_steps)
    actions = np.zeros(len(close))
    actions[first:first + n_steps] = np.asarray(ensemble)
    sim = simulate(close, actions, cfg.env, start=first)
    learned = compute_metrics(sim["returns"])["sharpe"]
    rand = compute_metrics(run_baselines(close, cfg.env, seed=0, start=first)["random"]
                           ["returns"])["sharpe"]
    # the oracle policy's Sharpe on this data is ~50; random loses its costs (negative)
    print(f"oracle test: learned sharpe {learned:.1f}, random {rand:.1f}")
    assert learned > 5.0, (learned, rand)
    assert learned > rand + 5.0
    # the agent follows the oracle's sign on most hours
    oracle = np.asarray(data.market.features)[first:first + n_steps, 0]
    agree = np.mean(np.sign(actions[first:first + n_steps]) == oracle)
    print(f"oracle test: sign agreement {agree:.3f}")
    assert agree > 0.7, agree
