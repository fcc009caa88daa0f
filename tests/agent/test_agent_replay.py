"""Replay buffer: wraparound, uniform sampling over valid entries, purity under jit/vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.agent import replay


def _items(start: int, n: int) -> dict:
    ids = jnp.arange(start, start + n)
    return {"id": ids.astype(jnp.int32), "obs": jnp.stack([ids, -ids], 1).astype(jnp.float32),
            "done": (ids % 2 == 0)}


def _example() -> dict:
    return {"id": jnp.zeros((), jnp.int32), "obs": jnp.zeros((2,), jnp.float32),
            "done": jnp.zeros((), bool)}


def test_init_shapes_and_dtypes():
    state = replay.init(_example(), 7)
    assert state.capacity == 7
    assert state.data["obs"].shape == (7, 2) and state.data["obs"].dtype == jnp.float32
    assert state.data["id"].dtype == jnp.int32 and state.data["done"].dtype == jnp.bool_
    assert int(state.size) == 0 and int(state.position) == 0
    with pytest.raises(ValueError, match="capacity"):
        replay.init(_example(), 0)


@pytest.mark.parametrize("n", [1, 3])
def test_add_wraps_around(n):
    capacity = 5
    state = replay.init(_example(), capacity)
    add = jax.jit(replay.add)
    written = []
    for step in range(4):
        state = add(state, _items(100 + step * n, n))
        written += list(range(100 + step * n, 100 + (step + 1) * n))
        assert int(state.size) == min(len(written), capacity)
        assert int(state.position) == len(written) % capacity
    expected = np.zeros(capacity, np.int64)
    for i, item_id in enumerate(written):  # later writes overwrite slot i % capacity
        expected[i % capacity] = item_id
    np.testing.assert_array_equal(np.asarray(state.data["id"]), expected)
    np.testing.assert_array_equal(np.asarray(state.data["obs"][:, 1]), -expected)
    filled = np.arange(capacity) < len(written)  # unwritten slots keep their zero init
    np.testing.assert_array_equal(np.asarray(state.data["done"]), (expected % 2 == 0) & filled)


def test_add_rejects_bad_batches():
    state = replay.init(_example(), 4)
    with pytest.raises(ValueError, match="capacity 4"):
        replay.add(state, _items(0, 5))
    bad = _items(0, 2)
    bad["id"] = bad["id"][:1]
    with pytest.raises(ValueError, match="leading batch size"):
        replay.add(state, bad)


def test_sample_is_uniform_over_valid_entries_only():
    state = replay.add(replay.init(_example(), 100), _items(0, 10))  # 10 of 100 slots valid
    batch = jax.jit(replay.sample, static_argnums=2)(state, jax.random.key(0), 20_000)
    ids = np.asarray(batch["id"])
    assert ids.min() >= 0 and ids.max() <= 9
    counts = np.bincount(ids, minlength=10)
    # chi-square test of uniformity at a generous level (9 dof; 99.9% quantile is 27.9)
    chi2 = ((counts - 2000.0) ** 2 / 2000.0).sum()
    assert chi2 < 27.9, counts
    np.testing.assert_array_equal(np.asarray(batch["obs"][:, 0]), ids)  # rows stay together


def test_sample_after_wraparound_covers_the_whole_buffer():
    state = replay.init(_example(), 8)
    for step in range(3):
        state = replay.add(state, _items(step * 5, 5))  # 15 items into 8 slots
    ids = np.asarray(replay.sample(state, jax.random.key(1), 4000)["id"])
    assert set(ids.tolist()) == set(range(7, 15))  # exactly the 8 most recent items


def test_vmap_over_independent_buffers_and_scan():
    states = jax.vmap(lambda _: replay.init(_example(), 6))(jnp.arange(3))

    def fill(state, offset):
        def body(s, i):
            return replay.add(s, _items(0, 1) | {"id": jnp.array([offset + i], jnp.int32)}), None
        return jax.lax.scan(body, state, jnp.arange(4))[0]

    states = jax.jit(jax.vmap(fill))(states, jnp.array([0, 100, 200]))
    np.testing.assert_array_equal(np.asarray(states.size), [4, 4, 4])
    np.testing.assert_array_equal(np.asarray(states.data["id"][:, :4]),
                                  [[0, 1, 2, 3], [100, 101, 102, 103], [200, 201, 202, 203]])
    samples = jax.vmap(replay.sample, in_axes=(0, 0, None))(
        states, jax.random.split(jax.random.key(0), 3), 50)
    for row, offset in zip(np.asarray(samples["id"]), (0, 100, 200)):
        assert set(row.tolist()) <= set(range(offset, offset + 4))


def test_nbytes_and_compact_trading_buffer_fits():
    state = replay.init(_example(), 10)
    assert replay.nbytes(state) == 10 * (4 + 8 + 1)
    f32 = jnp.zeros((), jnp.float32)
    compact = {"t": jnp.zeros((), jnp.int32), "prev_action": f32, "prev_exposure": f32,
               "nav": f32, "peak_nav": f32, "action": f32, "terminated": jnp.zeros((), bool),
               "truncated": jnp.zeros((), bool)}
    abstract = jax.eval_shape(lambda: replay.init(compact, 2_500_000))
    assert replay.nbytes(abstract) == 2_500_000 * 26
    assert replay.nbytes(abstract) <= 200e6
