"""The threefry hash lowered as on GPUs, on the CPU (training/lowering.py, what `bench cost`
counts): the random draws compile without loops, and training gives the same bits as under
JAX's CPU loop, so the counts are of the same computation."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cryptorl_jax.training.lowering import threefry_as_on_gpu
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import synthetic_data, tiny_config, train_chunks

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's lowering")


def _split_has_loop() -> bool:
    """Whether a freshly compiled jax.random.split holds a while loop."""
    key = jax.random.key(0)
    return " while(" in jax.jit(lambda k: jax.random.split(k, 3)).lower(key).compile().as_text()


def test_training_gives_the_same_bits_under_both_lowerings():
    cfg = tiny_config("train.n_seeds=2", "tqc.learning_starts=16", "train.steps_per_chunk=6")
    trainer = trainer_for(cfg, 4)
    data = trainer.put_data(synthetic_data(cfg))
    rolled = train_chunks(trainer, data, 3)  # JAX's CPU rule: a loop per hash
    traced = trainer.trace_counts["train_chunk"]
    with threefry_as_on_gpu():
        unrolled = train_chunks(trainer, data, 3)
        assert trainer.trace_counts["train_chunk"] > traced  # the step was built again
    assert float(np.sum(unrolled[1][-1]["updates"])) > 0  # the last chunk learned
    leaves_a, tree_a = jax.tree.flatten(rolled)
    leaves_b, tree_b = jax.tree.flatten(unrolled)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b, strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_draws_compile_without_loops_within_and_with_them_after():
    assert _split_has_loop()
    with threefry_as_on_gpu():
        assert not _split_has_loop()
    assert _split_has_loop()  # JAX's CPU rule is back
