"""cryptorl_jax: walk-forward RL trading research on hourly crypto data, in JAX.

The public API (docs/usage.md, "Python API"):

    from cryptorl_jax import run_walkforward, Run
    run = run_walkforward("configs/quick.yaml")      # trains: the `cryptorl wfo` run
    run = Run.load("results/quick")                   # a finished run, read without JAX
    run.verdict.edge, run.metrics.loc["all", "sharpe"], run.metrics.loc[0]

- `load_config(path, overrides=())`: a YAML config (+ dotted overrides) as a frozen Config.
- `run_walkforward(config_or_path, out=None, *, resume=False, segments=None, overrides=())`:
  the walk-forward study, returning the finished `Run`.
- `evaluate_window(run, segment=None, start=None, end=None, ...)`: a saved segment's agents
  backtested on any window of the data (`cryptorl evaluate`).
- `Run`, `compare_runs`: finished runs as objects, and several compared over one OOS window.

This package root is the facade above every layer (docs/architecture.md): it imports each name
on first use (PEP 562), so `import cryptorl_jax` imports nothing else and `from cryptorl_jax
import Run, compare_runs, load_config` imports no JAX; `run_walkforward` and `evaluate_window`
import JAX when first named. A module of the package imports only `__version__` from here
(tests/test_layers.py).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Run": ("cryptorl_jax.report.runs", "Run"),
    "compare_runs": ("cryptorl_jax.report.runs", "compare_runs"),
    "load_config": ("cryptorl_jax.config.load", "load_config"),
    "run_walkforward": ("cryptorl_jax.walkforward.api", "run_walkforward"),
    "evaluate_window": ("cryptorl_jax.walkforward.evaluate", "evaluate_window"),
}
"""Public name -> (module, attribute), imported on first use."""

__all__ = ["Run", "__version__", "compare_runs", "evaluate_window", "load_config",
           "run_walkforward"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cryptorl_jax' has no attribute '{name}'")
    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
