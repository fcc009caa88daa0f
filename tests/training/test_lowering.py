"""The straight-line threefry lowering on the CPU (training/lowering.py): the step's random
draws compile without loops, and training gives the same bits as under JAX's CPU loop."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from cryptorl_jax.training import lowering
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import synthetic_data, tiny_config

pytestmark = pytest.mark.skipif(
    os.environ.get("CRYPTORL_ROLLED_THREEFRY", "") not in ("", "0"),
    reason="CRYPTORL_ROLLED_THREEFRY keeps JAX's CPU loop on purpose")


def _split_has_loop() -> bool:
    """Whether a freshly compiled jax.random.split holds a while loop."""
    key = jax.random.key(0)
    return " while(" in jax.jit(lambda k: jax.random.split(k, 3)).lower(key).compile().as_text()


def _train(trainer, data, chunks: int):
    hyper = trainer.default_hyper
    state = trainer.init(jax.random.key(3), data, hyper=hyper, seeds=[0, 1])
    history = []
    for _ in range(chunks):
        state, metrics = trainer.train_chunk(state, data, hyper)
        history.append(metrics)
    return jax.device_get((state, history))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's lowering")
def test_the_step_draws_without_loops_and_the_same_bits():
    cfg = tiny_config("train.n_seeds=2", "tqc.learning_starts=16", "train.steps_per_chunk=6")
    trainer = trainer_for(cfg, 4)  # registers the straight-line rule (once per process)
    data = trainer.put_data(synthetic_data(cfg))
    try:
        lowering.register_threefry(False)  # JAX's own CPU rule: a loop per hash
        jax.clear_caches()
        rolled = _train(trainer, data, 3)
        assert _split_has_loop()  # still JAX's loop after training
        traced = trainer.trace_counts["train_chunk"]
        lowering.register_threefry(True)
        jax.clear_caches()
        unrolled = _train(trainer, data, 3)
        assert not _split_has_loop()
        assert trainer.trace_counts["train_chunk"] > traced  # the step was built again
    finally:
        lowering.register_threefry(True)
        jax.clear_caches()
    assert float(np.sum(unrolled[1][-1]["updates"])) > 0  # the last chunk learned
    leaves_a, tree_a = jax.tree.flatten(rolled)
    leaves_b, tree_b = jax.tree.flatten(unrolled)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b, strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_make_train_registers_it():
    """Building a trainer puts the straight-line rule in force (the step bench cost counts)."""
    trainer_for(tiny_config("train.n_seeds=1"), 4)
    assert lowering.unrolled_threefry()
    jax.clear_caches()
    assert not _split_has_loop()
