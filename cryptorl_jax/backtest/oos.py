"""The backtest of a range of rows, once: the agent's seeds, every baseline, the cost stress,
and the metrics of each return series.

The segment runner (`walkforward.runner.backtest_rows`) rolls the agents out and hands their
action paths here; everything after the actions (the replay through the ledger at 1x, 2x and
0x costs, the fund of the seeds' books, the baselines that read nothing and those fitted on
the train rows, the benchmark) is computed in this module, and so is the table of metrics per
series that a segment's series_metrics.csv and a run's comparison.csv both are.

Row convention (`replay_rows`): the backtest of rows [start, end) trades at the closes of rows
start - 1 .. end - 2 from a flat book, its vol estimate reading the `lookback` rows before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cryptorl_jax.backtest import baselines as baseline_lib
from cryptorl_jax.backtest import portfolio
from cryptorl_jax.backtest.columns import fitted_baselines, seed_names
from cryptorl_jax.backtest.diagnostics import turnover_attribution
from cryptorl_jax.backtest.metrics import compute_metrics
from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.backtest.strategies import Fitted
from cryptorl_jax.config import EnvConfig
from cryptorl_jax.core.units import HOURS_PER_YEAR

COST_STRESS = (("", 1.0), ("_2x_cost", 2.0), ("_zero_cost", 0.0))
# per-hour columns of the fund (NAV-weighted over the seeds' books) in a backtest frame
FUND_COLUMNS = ("exposure", "turnover", "cost", "financing", "turnover_chosen",
                "turnover_mechanical")
NAIVE_BASELINES = baseline_lib.BASELINES  # read nothing
# per-hour columns of a fitted baseline `<name>` beside its returns
STRATEGY_EXTRAS = ("action", "exposure", "turnover")


@dataclass(frozen=True)
class Rows:
    """The run's arrays a backtest reads (absolute rows) and its lookback."""

    close: np.ndarray
    tradable: np.ndarray
    index: pd.DatetimeIndex
    lookback: int


def replay_rows(env: EnvConfig, rows: Rows, start: int, end: int, actions: np.ndarray,
                cost_multiplier: float = 1.0) -> dict[str, np.ndarray]:
    """`simulate` of the backtest of rows [start, end): `actions` [n] are chosen at the closes
    of rows start - 1 .. end - 2 from a flat book, the vol estimated over the lookback rows."""
    lo, first = start - rows.lookback, rows.lookback - 1
    a = np.zeros(end - lo)
    a[first:first + end - start] = actions
    return simulate(rows.close[lo:end], a, env, start=first, cost_multiplier=cost_multiplier,
                    tradable=rows.tradable[lo:end])


def backtest_frame(env: EnvConfig, rows: Rows, start: int, end: int, seed_actions: np.ndarray,
                   *, strategies: Sequence[Fitted] = (), baseline_seed: int = 0,
                   proba: np.ndarray | None = None) -> pd.DataFrame:
    """Hourly returns of rows [start, end) for the ensemble, seeds and baselines.

    `seed_actions` [S, n]: each seed's actions from its own book (the rollout at 1x costs); each
    is replayed by `simulate` (float64) at 1x, 2x and 0x trading costs, so the cost stress keeps
    the decisions fixed. The strategy ("the ensemble") is the equal-weight fund of the seeds'
    books (`backtest.portfolio`). The frame holds, per hour: the fund's returns (`strategy`,
    `strategy_2x_cost`, `strategy_zero_cost`) and its NAV-weighted exposure, turnover (split
    into `turnover_chosen` and `turnover_mechanical`, `backtest.diagnostics`), cost and
    financing; each seed's returns (`seed_<s>`) and action (`action_<s>`); the market's
    leverage L_t and `tradable` (what the timing null re-applies); the naive baselines; each
    fitted baseline's returns at the three costs (`<name>`, `<name>_2x_cost`,
    `<name>_zero_cost`) with its `<name>_action`, `<name>_exposure` and `<name>_turnover`; the
    benchmark (the traded asset's simple return); and with `proba`, the regime in force when
    the position was chosen.
    """
    out: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for label, mult in COST_STRESS:
        books = [replay_rows(env, rows, start, end, a, mult) for a in seed_actions]
        if label == "":
            for b in books:
                b["turnover_chosen"], b["turnover_mechanical"] = turnover_attribution(
                    b["action"], b["leverage"], b["weight"], b["turnover"])
        fund = portfolio.equal_weight(books, keys=("returns", *FUND_COLUMNS))
        out[f"strategy{label}"] = fund["returns"]
        if label == "":
            out.update({f"seed_{s}": b["returns"] for s, b in enumerate(books)})
            extra = {k: fund[k] for k in FUND_COLUMNS}
            extra["leverage"] = books[0]["leverage"]
            extra.update({f"action_{s}": b["action"] for s, b in enumerate(books)})
    lo, first = start - rows.lookback, rows.lookback - 1
    close = rows.close[lo:end]
    tradable = rows.tradable[lo:end]
    for name, sim in baseline_lib.run_baselines(close, env, seed=baseline_seed, start=first,
                                                tradable=tradable).items():
        out[name] = sim["returns"]
    for f in strategies:
        actions = f.actions(start - 1, end - 1)
        for label, mult in COST_STRESS:
            sim = replay_rows(env, rows, start, end, actions, mult)
            out[f"{f.name}{label}"] = sim["returns"]
            if label == "":
                extra.update({f"{f.name}_{k}": sim[k] for k in STRATEGY_EXTRAS})
    out["benchmark"] = close[first + 1:] / close[first:-1] - 1.0
    frame = pd.DataFrame(out, index=rows.index[start:end])
    for k, v in extra.items():
        frame[k] = v
    frame["tradable"] = tradable[first:-1]
    if proba is not None:  # the regime in force when the position was chosen (row t - 1)
        p = proba[start - 1:end - 1]
        frame["regime"] = np.where(np.isfinite(p).all(axis=1), np.argmax(p, axis=1), -1)
    frame.index.name = "timestamp"
    return frame


# --------------------------------------------------------------------------------------------
# Which columns are which
# --------------------------------------------------------------------------------------------


def series_names(frame: pd.DataFrame) -> list[str]:
    """Every return series of a frame, in report order: the strategy and its cost variants, the
    seeds, the fitted baselines and their cost variants, the naive baselines, the benchmark."""
    names = ["strategy", "strategy_2x_cost", "strategy_zero_cost", *seed_names(frame)]
    for b in fitted_baselines(frame):
        names += [f"{b}{label}" for label, _ in COST_STRESS]
    names += [*NAIVE_BASELINES, "benchmark"]
    return [n for n in names if n in frame.columns]


def _position_columns(frame: pd.DataFrame, name: str) -> dict[str, np.ndarray]:
    """The exposure and turnover a series' metrics read: its own book's (the cost variants
    replay the same trades, so they share them)."""
    base = name
    for label, _ in COST_STRESS[1:]:
        if name.endswith(label):
            base = name[: -len(label)]
    if base == "strategy":
        cols = ("exposure", "turnover")
    else:
        cols = (f"{base}_exposure", f"{base}_turnover")
    if all(c in frame.columns for c in cols):
        return {"exposure": frame[cols[0]].to_numpy(np.float64),
                "turnover": frame[cols[1]].to_numpy(np.float64)}
    return {}


def series_table(frame: pd.DataFrame) -> pd.DataFrame:
    """compute_metrics of every return series of a backtest frame (rows: series). A segment's
    series_metrics.csv and a run's comparison.csv (the stitched frame) are this table."""
    bench = frame["benchmark"].to_numpy(np.float64)
    rows = {n: compute_metrics(frame[n].to_numpy(np.float64), bench, HOURS_PER_YEAR,
                               **_position_columns(frame, n))
            for n in series_names(frame)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "series"
    return out


def strategy_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """compute_metrics of the ensemble (`strategy`) with its exposure and turnover."""
    return compute_metrics(frame["strategy"].to_numpy(np.float64),
                           frame["benchmark"].to_numpy(np.float64), HOURS_PER_YEAR,
                           **_position_columns(frame, "strategy"))
