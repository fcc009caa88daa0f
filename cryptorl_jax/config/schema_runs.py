"""The sections that lay out and judge runs: walk-forward, outputs, baselines, tuning, studies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WFOConfig:
    train_months: int = 18
    test_months: int = 3
    step_months: int = 3
    hours_per_month: int = 720
    embargo_hours: int = 0
    max_segments: int | None = None
    segments: tuple[int, ...] | None = None  # explicit subset (the CLI's --segments)
    trial_log: str | None = None  # cryptorl tune's trial log: N trials for the Deflated SR
    # K segments whose agents train as the members of one compiled step (K x train.n_seeds
    # members, each on its own segment's rows); 1: one segment after another; "all": every
    # segment of the run in one batch (a GPU). Ray runs each batch as one task.
    segments_per_batch: int | Literal["all"] = 1


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "results"
    tensorboard: bool = True
    plots: bool = True
    tearsheet: bool = True
    progress: bool = True


@dataclass(frozen=True)
class BaselinesConfig:
    """The baselines that read the market (`backtest.strategies`), fitted on each segment's
    train rows only and traded through the agent's exposure mapping, band, ledger and costs.
    Every grid point counts in the multiple-testing N."""

    enabled: bool = True
    momentum_lookbacks: tuple[int, ...] = (24, 72, 168, 336, 720)  # k, hours
    crossover_windows: tuple[tuple[int, int], ...] = ((24, 168), (72, 336), (168, 720))
    forecast_horizons: tuple[int, ...] = (1, 24, 72)  # h of the ridge / LightGBM target
    # sklearn's alpha on the scaled features (~13k fit rows at 18 months)
    ridge_alphas: tuple[float, ...] = (1.0e3, 1.0e4, 1.0e5)
    # causal EMA half-lives (hours) of the forecast before the mapping; 0 = unsmoothed
    forecast_smoothing_hours: tuple[float, ...] = (24.0,)
    validation_fraction: float = 0.25  # the inner split of the train rows (forecasters)
    lightgbm: bool = False  # needs the `lightgbm` package (pip install -e ".[baselines]")
    bootstrap_reps: int = 1000  # SPA / StepM stationary-bootstrap replications


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the tuning space: `key` is a dotted config key."""

    key: str
    type: Literal["float", "loguniform", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    choices: tuple[str | float | int | bool, ...] | None = None


@dataclass(frozen=True)
class TuneConfig:
    val_fraction: float = 0.2  # tail of each segment's train rows used to score a trial
    segments: tuple[int, ...] = (0,)
    metric: Literal["sharpe", "sortino", "total_return", "calmar"] = "sharpe"
    space: tuple[SearchParam, ...] = ()
    pbo_blocks: int = 16  # S of the CSCV Probability of Backtest Overfitting (even, 2..24)


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: a name and the dotted overrides it applies to the study's config."""

    name: str
    set: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    """`cryptorl study`: several walk-forward runs of one config that differ by `runs[i].set`,
    compared over the same OOS window; the comparison and its reading go to `doc`."""

    runs: tuple[StudyRun, ...] = ()
    doc: str | None = None  # e.g. docs/study.md (relative to the working directory)

