"""training.cost reads a compiled loop op by op: in-place updates at the update's size, the
conditionals and host transfers of the loop body (hand-written jitted loops, known answers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cryptorl_jax.training.cost import loop_cost, type_bytes

ROWS, COLS, UPD = 100_000, 8, 4  # a 3.2 MB float32 buffer, 128-byte updates


def _compiled(f, *args, donate=()):
    return jax.jit(f, donate_argnums=donate).lower(*args).compile().as_text()


def test_type_bytes():
    assert type_bytes("f32[4,16]{1,0}") == 256
    assert type_bytes("(f32[2]{0}, pred[3], /*index=2*/s32[], bf16[4,4]{1,0})") == 8 + 3 + 4 + 32
    assert type_bytes("token[]") == 0


def test_in_place_update_counted_at_the_update_size():
    """A scan writing a [4, 8] row block into a [100000, 8] buffer each step: the buffer is
    updated in place, so one iteration moves ~2 x 128 bytes (read the update, write it), not
    the buffer's 3.2 MB. The same loop adding 1 to the whole buffer moves >= 2 x 3.2 MB."""
    buf = jnp.zeros((ROWS, COLS), jnp.float32)
    u = jnp.ones((UPD, COLS), jnp.float32)

    def write(b, u):
        def body(b, i):
            return jax.lax.dynamic_update_slice(b, u * i.astype(jnp.float32), (i * UPD, 0)), None
        return jax.lax.scan(body, b, jnp.arange(8))[0]

    cost = loop_cost(_compiled(write, buf, u, donate=(0,)), trip_count=8)
    update = UPD * COLS * 4
    dus = [b for b, _, _, name in cost.items if "dynamic_update_slice" in name]
    assert len(dus) == 1 and 2 * update <= dus[0] <= 2 * update + 16, cost.items
    assert cost.bytes < 1_000  # the counter and the index: a few scalars more
    assert cost.kernels >= 1 and cost.conditionals == 0 and cost.host_transfers == 0

    def add(b):
        return jax.lax.scan(lambda b, _: (b + 1.0, None), b, None, length=8)[0]

    whole = loop_cost(_compiled(add, buf, donate=(0,)), trip_count=8)
    assert whole.bytes >= 2 * ROWS * COLS * 4


def test_conditional_and_host_transfer_in_a_loop():
    """A lax.cond on the loop counter (kept by XLA: a matmul in one branch) is one conditional
    per iteration, counted at its heavier branch; a host callback is a host transfer."""
    w = jnp.asarray(np.eye(64, dtype=np.float32))

    def f(x, w):
        def body(x, i):
            x = jax.lax.cond(i % 2 == 0, lambda x: jnp.tanh(x @ w), lambda x: x * 2.0, x)
            return x, None
        return jax.lax.scan(body, x, jnp.arange(6))[0]

    x = jnp.ones((64, 64), jnp.float32)
    cost = loop_cost(_compiled(f, x, w), trip_count=6)
    assert cost.conditionals == 1 and cost.host_transfers == 0
    assert cost.bytes >= 3 * 64 * 64 * 4  # the matmul branch: x and w read, x written

    def g(x):
        def body(x, _):
            jax.debug.callback(lambda v: None, x[0])
            return x + 1.0, None
        return jax.lax.scan(body, x, None, length=3)[0]

    assert loop_cost(_compiled(g, jnp.ones(4)), trip_count=3).host_transfers == 1


def test_slicing_read_counted_at_the_slice_size():
    """A loop reading a [4, 8] dynamic slice of the 3.2 MB buffer counts the slice, not the
    buffer; a module without a loop is refused with a clear error."""
    buf = jnp.arange(ROWS * COLS, dtype=jnp.float32).reshape(ROWS, COLS)

    def f(b):
        def body(acc, i):
            return acc + jax.lax.dynamic_slice(b, (i * UPD, 0), (UPD, COLS)) * 2.0, None
        return jax.lax.scan(body, jnp.zeros((UPD, COLS)), jnp.arange(8))[0]

    cost = loop_cost(_compiled(f, buf), trip_count=8)
    assert 0 < cost.bytes < 2_000, cost.items
    try:
        loop_cost(_compiled(lambda x: x * 2.0, buf))
    except ValueError as exc:
        assert "no while loop" in str(exc)
    else:
        raise AssertionError("a module without a loop was not refused")
