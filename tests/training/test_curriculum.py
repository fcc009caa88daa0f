"""The curriculum reproduces the original system's three phases (docs/reference.md) with linear
ramps."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from cryptorl_jax.config import CurriculumConfig
from cryptorl_jax.training.curriculum import penalty_coefficients, penalty_coefficients_np

CUR = CurriculumConfig()


@pytest.mark.parametrize("progress, churn, smooth", [
    (0.0, 0.0, 0.0), (0.1, 0.05, 0.0), (0.2, 0.10, 0.0), (0.4, 0.30, 0.01), (0.6, 0.50, 0.02),
    (0.8, 0.50, 0.02), (1.0, 0.50, 0.02), (1.5, 0.50, 0.02), (-1.0, 0.0, 0.0),
])
def test_original_phases(progress, churn, smooth):
    c, s = penalty_coefficients(progress, CUR)
    assert float(c) == pytest.approx(churn, abs=1e-6)
    assert float(s) == pytest.approx(smooth, abs=1e-6)
    assert penalty_coefficients_np(progress, CUR) == pytest.approx((churn, smooth), abs=1e-6)


def test_jit_vmap_and_custom_phases():
    cur = CurriculumConfig(phase_ends=(0.5, 1.0), churn=((1.0, 0.0), (0.0, 2.0)),
                           smooth=((0.0, 0.0), (0.3, 0.3)))
    grid = np.linspace(0, 1, 101, dtype=np.float32)
    c, s = jax.jit(jax.vmap(lambda p: penalty_coefficients(p, cur)))(grid)
    ref = np.array([penalty_coefficients_np(p, cur) for p in grid])
    np.testing.assert_allclose(np.stack([c, s], 1), ref, atol=1e-6)
    assert float(c[25]) == pytest.approx(0.5) and float(c[75]) == pytest.approx(1.0)
