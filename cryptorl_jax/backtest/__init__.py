"""backtest: deterministic out-of-sample rollout and baselines."""

from cryptorl_jax.backtest import baselines
from cryptorl_jax.backtest.simulate import simulate

__all__ = ["baselines", "simulate"]
