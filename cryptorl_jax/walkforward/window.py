"""Where the book of a window [start, end] of a segment's agent starts, and what the run itself
booked over the same hours (`cryptorl evaluate`, `cryptorl paper --replay`).

A backtest of a window from a flat book answers another question than the run did for the same
hours: the run's OOS backtest of segment k starts flat at k's first test hour and carries its
position, drifted weight and drawdown hour after hour; a flat book at a later hour may never
leave the no-trade band. So a window that starts inside segment k's test hours starts by
default from the run's own book at that hour: the roll-out from k's first test hour, through
the same code, cut to the window (its hours then equal the run's rows). Otherwise the book
starts flat:

- the window starts before k's first test hour (in its train rows or earlier): there is no run
  book of this agent yet; `from_run_state=True` is refused;
- the window starts after k's last test hour: flat by default; `from_run_state=True` continues
  the run's book from k's first test hour through the test window and on to the window (the
  agent trading on past its test window, as a paper book started at its first test hour would);
- `from_run_state=False` (`--flat`): flat anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.columns import seed_names
from cryptorl_jax.backtest.metrics import compute_metrics
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report.read import read_frame

RUN_STATE, FLAT = "run", "flat"
FLAT_BOOK = "a flat book (NAV 1, no position)"


@dataclass(frozen=True)
class WindowStart:
    """How the window's book starts: `mode` RUN_STATE (the run's own book at `first`, rolled
    out from `rollout_from`, the segment's first test hour) or FLAT (at `first`), and `reason`,
    one line that says which and why."""

    mode: str
    reason: str
    first: pd.Timestamp
    rollout_from: pd.Timestamp

    @property
    def from_run_state(self) -> bool:
        return self.mode == RUN_STATE


def resolve_start(segment: int, train_period: tuple[pd.Timestamp, pd.Timestamp],
                  test_period: tuple[pd.Timestamp, pd.Timestamp], first: pd.Timestamp,
                  from_run_state: bool | None = None) -> WindowStart:
    """The start of a window whose first hour is `first` for segment `segment`'s agent
    (periods: first and last hour, UTC). `from_run_state`: None chooses (the run's book when
    `first` lies in the segment's test hours, else flat), True asks for the run's book (refused
    before the test window), False forces a flat start. See the module docstring."""
    t0, t1 = test_period
    oos = f"segment {segment}'s OOS hours {t0:%Y-%m-%d %H:%M} .. {t1:%Y-%m-%d %H:%M}"
    hours = int((first - t0) / pd.Timedelta(hours=1))

    def flat(why: str) -> WindowStart:
        return WindowStart(FLAT, f"{FLAT_BOOK} at {first:%Y-%m-%d %H:%M}: {why}", first, first)

    def run(why: str) -> WindowStart:
        return WindowStart(RUN_STATE, f"the run's own book at {first:%Y-%m-%d %H:%M}: {why}",
                           first, t0)

    if from_run_state is False:
        return flat("--flat asked for it" + (
            f" (the run's book there differs: {first:%Y-%m-%d %H:%M} is inside {oos})"
            if t0 <= first <= t1 else ""))
    if first < t0:
        where = ("in its train rows (in-sample for this agent)"
                 if train_period[0] <= first <= train_period[1] else "before its train rows")
        if from_run_state:
            raise ValueError(f"--from-run-state: the window starts at {first}, {where}, before "
                             f"{oos}: the run's book of this agent starts at {t0}; start the "
                             f"window there or later, or drop --from-run-state (a flat start)")
        return flat(f"the window starts {where}, before {oos}: the run has no book of this "
                    f"agent there")
    if first <= t1:
        return run(f"segment {segment}'s OOS roll-out from its first test hour "
                   f"{t0:%Y-%m-%d %H:%M} ({hours} h before), so these hours equal the run's "
                   f"(--flat for a flat start)")
    if from_run_state:
        return run(f"segment {segment}'s roll-out from its first test hour "
                   f"{t0:%Y-%m-%d %H:%M}, continued past its last test hour {t1:%Y-%m-%d %H:%M} "
                   f"({hours} h before the window; --from-run-state)")
    return flat(f"the window starts after {oos} (--from-run-state continues the run's book "
                f"from {t0:%Y-%m-%d %H:%M})")


def window_figures(frame: pd.DataFrame) -> dict[str, float]:
    """The figures printed beside each other for a window: hours, Sharpe (NaN when undefined),
    total return and the mean signed exposure of the ensemble (`strategy`, `exposure`)."""
    m = compute_metrics(frame["strategy"].to_numpy(np.float64))
    return {"hours": int(len(frame)), "sharpe": float(m["sharpe"]),
            "total_return": float(m["total_return"]),
            "mean_exposure": float(frame["exposure"].to_numpy(np.float64).mean())
            if len(frame) else float("nan")}


def run_figures(rd: RunDir, segment: int, index: pd.DatetimeIndex) -> dict[str, float] | None:
    """`window_figures` of the run's own OOS rows of `segment` (its oos.parquet) at the hours
    of `index` that it holds (`hours` counts them); None when it holds none."""
    path = rd.segment(segment).oos
    if not path.is_file():
        return None
    own = read_frame(path)
    part = own.loc[own.index.isin(index)]
    return window_figures(part) if len(part) else None


def format_figures(fig: dict[str, float]) -> str:
    """'sharpe 1.23, total return 0.45%, mean exposure -0.095' (sharpe n/a when undefined)."""
    s = fig["sharpe"]
    sharpe = "n/a" if not math.isfinite(s) else f"{s:.2f}"
    return (f"sharpe {sharpe}, total return {100 * fig['total_return']:.2f}%, mean exposure "
            f"{fig['mean_exposure']:+.3f}")


def traded(frame: pd.DataFrame) -> bool:
    """Whether the book held or traded anything over the window (any exposure or turnover)."""
    return bool(np.any(frame["exposure"].to_numpy() != 0)
                or np.any(frame["turnover"].to_numpy() != 0))


def nothing_traded_reason(frame: pd.DataFrame, band: float) -> str:
    """Why a book that started flat never traded, in one line: every seed's target exposure
    a_t L_t stayed inside the no-trade band `env.no_trade_band` around the flat book, or no
    hour could trade (filled bars), or (else) every target was 0."""
    lev = frame["leverage"].to_numpy(np.float64)
    can = frame["tradable"].to_numpy(bool) if "tradable" in frame else np.ones(len(frame), bool)
    targets = [np.abs(frame[f"action_{s[5:]}"].to_numpy(np.float64) * lev)[can]
               for s in seed_names(frame)]
    biggest = max((float(np.nanmax(t)) for t in targets if t.size), default=0.0)
    head = "nothing traded: the book started flat and every exposure is 0 (every return is 0)"
    if not can.any():
        return f"{head}: no hour of the window could trade (the traded asset's bars were filled)"
    if band > 0 and biggest <= band:
        return (f"{head}: every seed's target exposure (action x leverage, at most "
                f"{biggest:.3f}) stayed inside the no-trade band env.no_trade_band = {band:g} "
                f"around the flat book")
    return f"{head}: every seed's target exposure was 0"


def describe_start(start: WindowStart) -> dict[str, Any]:
    """The start as recorded in metrics.json / the paper book: mode, reason, first hour and the
    hour the roll-out started from."""
    return {"start_state": start.mode, "start_reason": start.reason,
            "rollout_from": str(start.rollout_from)}
