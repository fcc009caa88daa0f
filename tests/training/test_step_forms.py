"""The step in the GPU's form (critics batched, parameters flat through the chunk's loops, the
threefry hash straight-line), built on the CPU, trains as the CPU's own form to float rounding;
the state in and out of a chunk keeps its trees (checkpoints are the same either way)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cryptorl_jax.training.lowering import threefry_as_on_gpu
from cryptorl_jax.training.trainer import step_params_form, trainer_for
from tests.training.helpers import synthetic_data, tiny_config, train_chunks


def test_the_gpu_form_trains_as_the_cpu_form():
    cfg = tiny_config("train.n_seeds=2", "tqc.learning_starts=16", "train.steps_per_chunk=6")
    cpu = trainer_for(cfg, 4)
    assert (cpu.critic_form, cpu.params_form) == ("per-critic", "tree")  # the CPU's own
    data = cpu.put_data(synthetic_data(cfg))
    state, history = train_chunks(cpu, data, 3)
    want = (state.agent, history)
    with threefry_as_on_gpu():
        gpu = trainer_for(cfg, 4, critics="batched", params="flat")
        assert (gpu.critic_form, gpu.params_form) == ("batched", "flat")
        state, history = train_chunks(gpu, data, 3)
        got = (state.agent, history)
    assert float(np.sum(got[1][-1]["updates"])) > 0  # the last chunk learned
    assert jax.tree.structure(got[0]) == jax.tree.structure(want[0])  # trees in and out
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_the_parameters_form_by_backend():
    assert step_params_form("cpu") == "tree"
    assert step_params_form("gpu") == step_params_form("cuda") == "flat"


def test_a_form_outside_the_choices_is_refused_by_name():
    cfg = tiny_config("train.n_seeds=1")
    with pytest.raises(ValueError, match="per-critic"):
        trainer_for(cfg, 4, critics="fused")
    with pytest.raises(ValueError, match="'tree', 'flat'"):
        trainer_for(cfg, 4, params="packed")
