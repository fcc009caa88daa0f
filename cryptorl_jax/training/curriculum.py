"""The reward-penalty curriculum: a pure, piecewise-linear function of training progress.

The original system's three phases (docs/reference.md; Discovery 0-20 %, Discipline 20-60 %,
Consolidation 60-100 %) are the default `CurriculumConfig`; each phase ramps linearly from its
start value to its end value.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from cryptorl_jax.config import CurriculumConfig


def penalty_coefficients(progress: jnp.ndarray, curriculum: CurriculumConfig
                         ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(churn_coef, smooth_coef) at `progress` in [0, 1] (clipped); jit- and vmap-safe."""
    return penalty_coefficients_arrays(progress, jnp.asarray(curriculum.phase_ends, jnp.float32),
                                       jnp.asarray(curriculum.churn, jnp.float32),
                                       jnp.asarray(curriculum.smooth, jnp.float32))


def penalty_coefficients_arrays(progress, ends, churn, smooth) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The same schedule on arrays: ends [n_phases], churn / smooth [n_phases, 2] may be traced
    (a population member's Hyper)."""
    starts = jnp.concatenate([jnp.zeros(1, jnp.float32), ends[:-1]])
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    phase = jnp.minimum(jnp.sum(p >= ends), ends.shape[0] - 1)
    frac = jnp.clip((p - starts[phase]) / (ends[phase] - starts[phase]), 0.0, 1.0)

    def ramp(values):
        return values[phase, 0] + frac * (values[phase, 1] - values[phase, 0])

    return ramp(churn), ramp(smooth)


def penalty_coefficients_np(progress: float, curriculum: CurriculumConfig) -> tuple[float, float]:
    """Plain-Python reading of the same schedule (for logs and tests)."""
    p = float(np.clip(progress, 0.0, 1.0))
    start = 0.0
    for end, churn, smooth in zip(curriculum.phase_ends, curriculum.churn, curriculum.smooth):
        if p < end or end == curriculum.phase_ends[-1]:
            frac = min(max((p - start) / (end - start), 0.0), 1.0)
            return (churn[0] + frac * (churn[1] - churn[0]),
                    smooth[0] + frac * (smooth[1] - smooth[0]))
        start = end
    raise AssertionError("unreachable")
