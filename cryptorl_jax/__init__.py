"""cryptorl_jax: walk-forward RL trading research on hourly crypto data, in JAX."""

__version__ = "0.1.0"
