"""backtest: deterministic out-of-sample replay, metrics, baselines and the honesty statistics
(the timing null, SPA/StepM and power, the PBO of a tuning study). A run's report, built from
these, is the package above (cryptorl_jax.report).

The names below are imported on first use (PEP 562), so reading a finished run's metrics
(cryptorl_jax.report.runs) does not import JAX: only `simulate`, `simulate_paths`, `baselines`
and a call of `action_timing_null` need it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "baselines": ("cryptorl_jax.backtest.baselines", None),
    "compute_metrics": ("cryptorl_jax.backtest.metrics", "compute_metrics"),
    "deflated_sharpe": ("cryptorl_jax.backtest.metrics", "deflated_sharpe"),
    "expected_max_sharpe": ("cryptorl_jax.backtest.metrics", "expected_max_sharpe"),
    "probabilistic_sharpe": ("cryptorl_jax.backtest.metrics", "probabilistic_sharpe"),
    "action_timing_null": ("cryptorl_jax.backtest.nulls", "action_timing_null"),
    "pbo_cscv": ("cryptorl_jax.backtest.overfitting", "pbo_cscv"),
    "simulate": ("cryptorl_jax.backtest.replay", "simulate"),
    "simulate_paths": ("cryptorl_jax.backtest.replay", "simulate_paths"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cryptorl_jax.backtest' has no attribute '{name}'")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value
