"""backtest: deterministic out-of-sample replay, metrics, baselines and the honesty statistics
(the timing null, the run registry of the OOS Deflated Sharpe, the PBO of a tuning study)."""

from cryptorl_jax.backtest import baselines
from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    deflated_sharpe,
    expected_max_sharpe,
    probabilistic_sharpe,
)
from cryptorl_jax.backtest.nulls import timing_null
from cryptorl_jax.backtest.overfitting import pbo_cscv
from cryptorl_jax.backtest.simulate import simulate

__all__ = ["baselines", "compute_metrics", "deflated_sharpe", "expected_max_sharpe",
           "pbo_cscv", "probabilistic_sharpe", "simulate", "timing_null"]
