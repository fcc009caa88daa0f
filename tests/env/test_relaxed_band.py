"""The direct learner's relaxed no-trade band tends to the exact one as its temperature goes to
zero, and lets a gradient through where the exact band has none."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cryptorl_jax.env import accounting


def _grid():
    rng = np.random.default_rng(0)
    n = 2000
    weight = rng.uniform(-2, 2, n)
    action = rng.uniform(-1, 1, n)
    lev = rng.uniform(0, 2, n)
    tradable = rng.uniform(size=n) > 0.1
    return weight, action, lev, tradable


def test_the_relaxed_band_tends_to_the_exact_one():
    weight, action, lev, tradable = (jnp.asarray(x) for x in _grid())
    band = 0.2
    exact = np.asarray(accounting.traded_exposure(weight, action, lev, tradable, band))
    gap = np.abs(np.abs(np.asarray(action * lev - weight)) - band)  # distance to the edge
    errors = []
    for temperature in (0.1, 0.01, 1e-3, 1e-4):
        relaxed = np.asarray(accounting.relaxed_traded_exposure(weight, action, lev, tradable,
                                                                band, temperature))
        far = gap > 20 * temperature  # away from the band's edge the sigmoid has settled
        np.testing.assert_allclose(relaxed[far], exact[far], atol=1e-6)
        errors.append(np.max(np.abs(relaxed - exact)))
    assert np.all(np.diff(errors) <= 0) and errors[0] > 1e-3  # the whole grid converges
    # where the row cannot trade both hold the drifted weight exactly
    off = ~np.asarray(tradable)
    relaxed = np.asarray(accounting.relaxed_traded_exposure(weight, action, lev, tradable,
                                                            band, 0.05))
    np.testing.assert_array_equal(relaxed[off], np.asarray(weight)[off])


def test_the_ledger_takes_the_relaxed_band_only_when_asked():
    weight, action, lev, tradable = (jnp.asarray(x) for x in _grid())
    args = (1.0, weight, action, lev, 0.001, 7e-4, 5e-6, tradable, 0.2)
    exact = accounting.step_accounting(*args)
    same = accounting.step_accounting(*args, band_temperature=None)
    relaxed = accounting.step_accounting(*args, band_temperature=1e-5)
    for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(exact.pnl), np.asarray(
        accounting.step_accounting(*args, band_temperature=0.05).pnl))
    np.testing.assert_allclose(np.asarray(relaxed.pnl), np.asarray(exact.pnl), atol=1e-6)


def test_a_move_inside_the_band_still_has_a_gradient():
    """The exact band's exposure does not move with an action inside the band (zero gradient:
    nothing to learn from); the relaxed one does."""
    def exposure(fn, a):
        return fn(jnp.float32(0.5), a, jnp.float32(1.0), True, 0.2)

    a = jnp.float32(0.6)  # the target 0.6 is 0.1 from the weight 0.5: inside the band
    exact = jax.grad(lambda x: exposure(accounting.traded_exposure, x))(a)
    relaxed = jax.grad(lambda x: exposure(
        lambda *z: accounting.relaxed_traded_exposure(*z, temperature=0.05), x))(a)
    assert float(exact) == 0.0 and float(relaxed) > 0.01
