"""Baseline policies for the backtest, each an action series run through `simulate`.

- buy_and_hold: exposure 1 at every row (exposure_mode="target": the action is the exposure,
  no vol scaling), so its NAV is the asset's price path less the one entry cost;
- vol_targeted_buy_and_hold: a_t = 1 in the env's mode, i.e. exposure L_t with the same target
  and cap as the agent (flat while realised vol is undefined);
- flat: a_t = 0 (NAV stays 1);
- random: a_t ~ U[-1, 1] i.i.d. every hour, seeded (numpy default_rng(seed)). It trades at
  every close and mostly loses its costs: beating it says little. The fair null for the
  agent's timing is the report's action-rotation test (`backtest.nulls`), which re-simulates
  the agent's own action paths, rotated in time, with the market's leverage and costs.
"""

from __future__ import annotations

import numpy as np

from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.config import EnvConfig

BASELINES = ("buy_and_hold", "vol_targeted_buy_and_hold", "flat", "random")


def buy_and_hold_actions(n: int) -> np.ndarray:
    return np.ones(n)


def vol_targeted_buy_and_hold_actions(n: int) -> np.ndarray:
    return np.ones(n)


def flat_actions(n: int) -> np.ndarray:
    return np.zeros(n)


def random_actions(n: int, seed: int) -> np.ndarray:
    """Seeded uniform actions in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, n)


def run_baselines(close, env_config: EnvConfig, seed: int = 0, *, start: int = 0,
                  cost_multiplier: float = 1.0,
                  tradable=None) -> dict[str, dict[str, np.ndarray]]:
    """Every baseline through `simulate` over the same rows: {name: simulate's output}."""
    n = len(close)
    runs = {
        "buy_and_hold": (buy_and_hold_actions(n), "target"),
        "vol_targeted_buy_and_hold": (vol_targeted_buy_and_hold_actions(n), "action"),
        "flat": (flat_actions(n), "action"),
        "random": (random_actions(n, seed), "action"),
    }
    return {name: simulate(close, actions, env_config, start=start,
                           cost_multiplier=cost_multiplier, exposure_mode=mode,
                           tradable=tradable)
            for name, (actions, mode) in runs.items()}
