"""The power page's held-out protocol (issue 40): which market set each decision was chosen on.

Settings may be chosen on the **selection** set (market/planted.py's markets, seeds = the
repeats); the **heldout** set (market/heldout.py: other processes and parameters per family,
disjoint seeds) is only reported, in its own table. `DECISIONS` is the record of today's
defaults and the set each was chosen on: the power page's protocol lines and the ablation
section (scripts/power_ablation.py) print it, and `check_decisions` (run on import and by the
tests) refuses a decision that names the held-out set or an unknown one. A decision added to
the defaults gets a row here, with the evidence it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptorl_jax.market.heldout import SETS


@dataclass(frozen=True)
class Decision:
    decision: str  # what was chosen (the config key or the component)
    value: str  # the value the defaults hold
    chosen_on: str  # the market set whose results chose it
    evidence: str  # where the comparison is


_ISSUE28 = "issue 28's screen: docs/power.md's ablation (trend, none r0-r2 at strength 4)"
DECISIONS: tuple[Decision, ...] = (
    Decision("train window (wfo.train_months, data.start)", "18 months", "selection", _ISSUE28),
    Decision("training budget (train.total_env_steps)", "100k env steps", "selection",
             _ISSUE28),
    Decision("observation noise (train.obs_noise)", "0.3", "selection", _ISSUE28),
    Decision("no-trade band (env.no_trade_band)", "0.2", "selection", _ISSUE28),
    Decision("the ridge's grid (baselines.ridge_alphas, forecast_horizons, "
             "forecast_smoothing_hours)", "alphas 1e3, 1e4, 1e5; horizons 1, 24, 72 h; "
             "smoothing 24 h", "selection",
             "b9ef277 (issue 28): chosen on docs/power.md's planted trend and lead markets"),
    Decision("the held-out variants themselves (market/heldout.py)", "VARIANTS", "none",
             "fixed before any held-out run; no run result was read to choose them"),
)


def check_decisions(decisions: Sequence[Decision] = DECISIONS) -> None:
    """Refuse a decision chosen on the held-out set (the protocol forbids it) or on an
    unknown set."""
    for d in decisions:
        if d.chosen_on == "heldout":
            raise ValueError(f"DECISIONS: {d.decision!r} names the held-out set; no decision "
                             f"may be chosen on it (studies/protocol.py)")
        if d.chosen_on not in (*SETS, "none"):
            raise ValueError(f"DECISIONS: {d.decision!r}: unknown set {d.chosen_on!r} "
                             f"(known: {', '.join(SETS)}, none)")


check_decisions()


def protocol_lines() -> list[str]:
    """The protocol's paragraph (Markdown) for the power page."""
    return ["- protocol: the **selection** set (market/planted.py's markets, seeds = the "
            "repeats) is where settings may be chosen; the **held-out** set "
            "(market/heldout.py: every family from other processes and parameters, seeds from "
            "1,000,000 on) is reported in its own table and no setting was chosen on it "
            "(`studies.protocol.DECISIONS`, the table in the ablation section)"]


def decisions_table() -> list[str]:
    """'decision -> the set it was chosen on' as Markdown lines."""
    lines = ["| decision | default | chosen on | evidence |", "|---|---|---|---|"]
    lines += [f"| {d.decision} | {d.value} | {d.chosen_on} | {d.evidence} |"
              for d in DECISIONS]
    return lines
