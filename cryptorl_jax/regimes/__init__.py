"""Market regimes: a Gaussian HMM fitted on train rows, forward-filtered, states ordered by vol."""

from cryptorl_jax.regimes.hmm import (
    RegimeModel,
    default_columns,
    forward_filter,
    log_gaussian,
    regime_frame,
    stationary_distribution,
)
from cryptorl_jax.regimes.plot import plot_regimes

__all__ = ["RegimeModel", "default_columns", "forward_filter", "log_gaussian", "plot_regimes",
           "regime_frame", "stationary_distribution"]
