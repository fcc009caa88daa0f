"""Segments as members (issue 25): K walk-forward segments x S seeds in one compiled step, each
member reading its own segment's market arrays; a segment trained inside a batch trains as it
would alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.training.data import stack_segments
from cryptorl_jax.training.loop import TrainControls, train
from cryptorl_jax.training.member import make_member_step
from cryptorl_jax.training.placement import Placement
from cryptorl_jax.training.result import segment_results
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import synthetic_data, tiny_config


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    cfg = tiny_config("train.total_env_steps=1200", "train.checkpoint_every_chunks=100")
    datas = [synthetic_data(cfg, seed=k) for k in range(3)]  # three segments, other markets
    keys = jnp.stack([jax.random.key(100 + k) for k in range(3)])
    trainer = trainer_for(cfg, 4, segments=3)
    res = train(cfg, stack_segments(datas), tmp_path_factory.mktemp("batch"), key=keys,
                trainer=trainer, controls=TrainControls(resume=False))
    return cfg, datas, keys, trainer, res


def test_a_segment_in_a_batch_trains_as_it_would_alone(batch_run, tmp_path):
    cfg, datas, keys, trainer, res = batch_run
    assert trainer.trace_counts["train_chunk"] == 1 and trainer.population == 6
    assert res.history[-1]["updates"] * len(res.history) > 200  # a few hundred updates
    parts = segment_results(res, 3)
    alone_trainer = trainer_for(cfg, 4)
    for k in (0, 2):
        alone = train(cfg, datas[k], tmp_path / f"alone{k}", key=keys[k], trainer=alone_trainer,
                      controls=TrainControls(resume=False))
        for x, y in zip(jax.tree.leaves(alone.state.agent), jax.tree.leaves(parts[k].state.agent),
                        strict=True):
            x, y = np.asarray(x), np.asarray(y)
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=2e-5 * max(np.abs(x).max(), 1e-3))
        np.testing.assert_allclose([h["pnl"] for h in parts[k].history],
                                   [h["pnl"] for h in alone.history], rtol=1e-4, atol=1e-7)
        assert parts[k].history[-1].keys() == alone.history[-1].keys()
        assert parts[k].entropy.keys() == alone.entropy.keys()
    assert alone_trainer.trace_counts["train_chunk"] == 1
    # the segments really read their own markets: their agents differ
    a0, a1 = (np.asarray(jax.tree.leaves(p.state.agent)[0]) for p in parts[:2])
    assert not np.allclose(a0, a1)


def test_batch_inputs_are_checked(batch_run, tmp_path):
    cfg, datas, keys, trainer, _ = batch_run
    with pytest.raises(ValueError, match=r"one key per segment"):
        train(cfg, stack_segments(datas), tmp_path / "a", key=keys[0], trainer=trainer,
              controls=TrainControls(resume=False))
    bad = [datas[0], datas[1], synthetic_data(cfg, n_rows=500, seed=2)]
    with pytest.raises(ValueError, match="same shapes"):
        stack_segments(bad)
    poisoned = datas[2].market.replace(
        features=datas[2].market.features.at[300, 1].set(jnp.nan))
    with pytest.raises(ValueError, match=r"segment 2 of the batch: .*features.*row 300"):
        train(cfg, stack_segments([datas[0], datas[1], datas[2].replace(market=poisoned)]),
              tmp_path / "b", key=keys, trainer=trainer, controls=TrainControls(resume=False))


def test_the_member_step_runs_without_a_mesh():
    """The one-member step is a plain function of one member's arrays (no device axis)."""
    cfg = tiny_config()
    trainer = trainer_for(cfg, 4)
    placement = Placement.of(trainer.spec, 1)
    step = make_member_step(trainer.spec, placement, trainer.tqc, trainer.env_params, False)
    data = synthetic_data(cfg)
    hyper = trainer.default_hyper
    one = jax.tree.map(lambda x: x[0], hyper)
    agent, k_env = step.init_member(jax.random.key(0), jnp.int32(0), one, None)
    local = step.init_local(k_env, data)
    agent, local, iteration, metrics = jax.jit(step.chunk)(agent, local, jnp.int32(0), data, one)
    assert int(iteration) == cfg.train.steps_per_chunk
    assert np.isfinite(float(metrics["reward"]))
    assert placement.members_local == 2 and placement.axis_name is None
