"""env: the trading accounting (one definition) and the pure trading env."""

from cryptorl_jax.env import accounting
from cryptorl_jax.env.trading import (
    Coeffs,
    CompactTransition,
    EnvParams,
    EnvState,
    MarketData,
    Observation,
    ReplayedTransition,
    StartRange,
    check_start_range,
    compact,
    make_start_range,
    observe,
    replay,
    reset,
    step,
)

__all__ = [
    "CompactTransition", "Coeffs", "EnvParams", "EnvState", "MarketData", "Observation",
    "ReplayedTransition", "StartRange", "accounting", "check_start_range", "compact",
    "make_start_range", "observe", "replay", "reset", "step",
]
