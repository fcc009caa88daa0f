"""Which columns of a backtest frame are which (no JAX: `cryptorl_jax.report.runs` reads
frames with it)."""

from __future__ import annotations

import pandas as pd


def fitted_baselines(frame: pd.DataFrame) -> list[str]:
    """The fitted baselines of a backtest frame: names with a `<name>_action` column and a
    returns column (the agent's seeds' `action_<s>` are not)."""
    return [c[:-len("_action")] for c in frame.columns
            if c.endswith("_action") and c[:-len("_action")] in frame.columns]


def seed_names(frame: pd.DataFrame) -> list[str]:
    return sorted((c for c in frame.columns if c.startswith("seed_") and c[5:].isdigit()),
                  key=lambda c: int(c[5:]))
