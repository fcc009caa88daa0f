"""The update's fused forms keep the maths: each against the plain formula it replaces (same
numbers to float tolerance) and, where it is about memory, against the compiled program."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from cryptorl_jax.agent import tqc as T
from cryptorl_jax.config import TQCConfig
from tests.reference import numpy_tqc as ref


def _two_sums(current, target, target_mask):
    """The quantile Huber loss and gradient as two separate sums (the form before the fused
    reduction): the same elementwise terms."""
    batch, n_critics, n_quantiles = current.shape
    tau = jnp.tile((jnp.arange(n_quantiles, dtype=jnp.float32) + 0.5) / n_quantiles,
                   n_critics)[:, None]
    delta = target[:, None, :] - current.reshape(batch, n_critics * n_quantiles, 1)
    weight = jnp.where(delta < 0, 1.0 - tau, tau) * target_mask[:, None, :]
    huber = jnp.where(jnp.abs(delta) > 1.0, jnp.abs(delta) - 0.5, 0.5 * delta * delta)
    count = jnp.sum(target_mask) * (n_critics * n_quantiles)
    loss = jnp.sum(weight * huber) / count
    grad = -jnp.sum(weight * jnp.clip(delta, -1.0, 1.0), axis=2) / count
    return loss, grad.reshape(current.shape)


def _tensors(batch=256, n_critics=2, n_quantiles=5, seed=0):
    rng = np.random.default_rng(seed)
    current = jnp.asarray(rng.normal(size=(batch, n_critics, n_quantiles)) * 2, jnp.float32)
    target = jnp.asarray(rng.normal(size=(batch, n_critics * n_quantiles)) * 2, jnp.float32)
    mask = jnp.asarray(rng.random((batch, n_critics * n_quantiles)) > 0.2, jnp.float32)
    return current, target, mask


def test_the_fused_huber_loss_equals_the_two_sums_and_numpy():
    current, target, mask = _tensors()
    loss, grad = jax.value_and_grad(T.quantile_huber_loss)(current, target, mask)
    want_loss, want_grad = _two_sums(current, target, mask)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-9)
    full = jnp.ones_like(mask)  # numpy's form has no mask: every target kept
    loss, grad = jax.value_and_grad(T.quantile_huber_loss)(current, target, full)
    np.testing.assert_allclose(float(loss), ref.quantile_huber_loss(current, target), rtol=1e-5)
    np.testing.assert_allclose(grad, ref.quantile_huber_grad(current, target), rtol=1e-5,
                               atol=1e-9)


def _written_shapes(fn, *args) -> set[tuple[int, ...]]:
    """Shapes of the f32 buffers the compiled program's top-level fusions write."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    entry = text[text.index("ENTRY"):]
    return {tuple(int(d) for d in m.split(","))
            for m in re.findall(r"= f32\[([\d,]+)\]\{[\d,]*\} fusion\(", entry)}


def test_the_fused_huber_loss_writes_no_batch_by_atoms_by_targets_tensor():
    """Loss and gradient from one reduction: no [B, N*M, T] buffer is written (the two sums
    wrote three of them: the test's control)."""
    current, target, mask = _tensors(batch=512, n_critics=2, n_quantiles=25)
    cube = (512, 50, 50)
    fused = _written_shapes(jax.value_and_grad(T.quantile_huber_loss), current, target, mask)
    assert cube not in fused, fused
    assert cube in _written_shapes(_two_sums, current, target, mask)


def test_aligned_policy_delay_runs_the_same_updates_without_a_conditional():
    """policy_delay 2, 4 updates from update count 0: the aligned scan (groups of two updates,
    the actor in the second, statically) makes the same updates as the per-update decision,
    with no conditional in the compiled program (the per-update form's control has one)."""
    cfg = dataclasses.replace(TQCConfig(), net_arch=(16, 16), n_quantiles=5, n_critics=2,
                              top_quantiles_to_drop_per_net=1, batch_size=32,
                              learning_rate=1e-3, max_grad_norm=None, policy_delay=2)
    tqc = T.make_tqc(cfg, jnp.zeros(3), 1)
    state = tqc.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = T.Batch(obs=jnp.asarray(rng.normal(size=(32, 3)), jnp.float32),
                    action=jnp.asarray(rng.uniform(-1, 1, (32, 1)), jnp.float32),
                    reward=jnp.asarray(rng.normal(size=32), jnp.float32),
                    next_obs=jnp.asarray(rng.normal(size=(32, 3)), jnp.float32),
                    terminated=jnp.zeros(32, bool))

    def run(aligned):
        def sample_fn(k):  # a batch that depends on the update's key
            return batch._replace(reward=batch.reward + jax.random.normal(k, (32,)))

        return jax.jit(lambda s, k: tqc.update_many(s, sample_fn, k, 4, aligned=aligned))

    key = jax.random.key(7)
    compiled = {aligned: run(aligned).lower(state, key).compile() for aligned in (True, False)}
    (got, got_m), (want, want_m) = compiled[True](state, key), compiled[False](state, key)
    assert float(got_m["actor_updates"]) == float(want_m["actor_updates"]) == 2.0
    for a, b in zip(jax.tree.leaves((got, got_m)), jax.tree.leaves((want, want_m)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert " conditional(" not in compiled[True].as_text()
    assert " conditional(" in compiled[False].as_text()
