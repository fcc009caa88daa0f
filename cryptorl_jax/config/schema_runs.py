"""The sections that lay out and judge runs: walk-forward, outputs, baselines, tuning, studies.

Each field's docstring is its description in docs/config.md (scripts/config_reference.py): the
text up to its first blank line, on one line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WFOConfig:
    """The walk-forward layout (`walkforward.segments.make_segments`): segment k trains on
    train_months from row k x step_months and tests on the test_months after the embargo."""

    train_months: int = 18
    """Length of each segment's train window in months."""
    test_months: int = 3
    """Length of each segment's out-of-sample test window in months."""
    step_months: int = 3
    """How far each segment starts after the one before, in months."""
    hours_per_month: int = 720
    """Rows (hours) in a month."""
    embargo_hours: int = 0
    """Rows left out between a segment's train and test windows."""
    max_segments: int | None = None
    """Run at most the first this many segments (after wfo.segments); null: all."""
    segments: tuple[int, ...] | None = None
    """Explicit subset of segment numbers to run (the CLI's --segments); null: all."""
    trial_log: str | None = None
    """cryptorl tune's trial log: N trials for the Deflated SR; null: one configuration tried."""
    segments_per_batch: int | Literal["all"] = 1
    """K segments whose agents train as the members of one compiled step (K x train.n_seeds
    members, each on its own segment's rows); 1: one segment after another; 'all': every
    segment of the run in one batch (a GPU). Ray runs each batch as one task."""


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes and shows."""

    dir: str = "results"
    """Results directory of cryptorl wfo, tune and study when --out is not given."""
    tensorboard: bool = True
    """Write TensorBoard logs of training and the run's hyperparameters."""
    plots: bool = True
    """Write the equity curve and each segment's regime plot (PNG)."""
    tearsheet: bool = True
    """Write tearsheet.html of the OOS returns."""
    progress: bool = True
    """Show progress bars."""


@dataclass(frozen=True)
class BaselinesConfig:
    """The baselines that read the market (`backtest.strategies`), fitted on each segment's
    train rows only and traded through the agent's exposure mapping, band, ledger and costs.
    Every grid point counts in the multiple-testing N."""

    enabled: bool = True
    """Fit and trade the market-reading baselines; false: none."""
    momentum_lookbacks: tuple[int, ...] = (24, 72, 168, 336, 720)
    """Grid of lookbacks k (hours) of the momentum and scaled-momentum rules."""
    crossover_windows: tuple[tuple[int, int], ...] = ((24, 168), (72, 336), (168, 720))
    """Grid of [fast, slow] moving-average windows (hours) of the crossover rule."""
    forecast_horizons: tuple[int, ...] = (1, 24, 72)
    """Grid of horizons h (hours) of the ridge / LightGBM target."""
    ridge_alphas: tuple[float, ...] = (1.0e3, 1.0e4, 1.0e5)
    """Grid of ridge penalties: sklearn's alpha on the scaled features (~13k fit rows at 18
    months)."""
    forecast_smoothing_hours: tuple[float, ...] = (24.0,)
    """Grid of causal EMA half-lives (hours) of the forecast before the mapping; 0 =
    unsmoothed."""
    validation_fraction: float = 0.25
    """The inner split of the train rows (forecasters): the last share validates."""
    lightgbm: bool = False
    """Add the LightGBM forecaster; needs the `lightgbm` package (pip install -e
    ".[baselines]")."""
    bootstrap_reps: int = 1000
    """SPA / StepM stationary-bootstrap replications."""


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the tuning space: `key` is a dotted config key."""

    key: str
    """The dotted config key searched."""
    type: Literal["float", "loguniform", "int", "categorical"] = "float"
    """How values are drawn: uniform float, log-uniform float, integer, or one of choices."""
    low: float | None = None
    """Lower bound (float, loguniform, int)."""
    high: float | None = None
    """Upper bound (float, loguniform, int)."""
    choices: tuple[str | float | int | bool, ...] | None = None
    """The values a categorical parameter takes."""


@dataclass(frozen=True)
class TuneConfig:
    """`cryptorl tune`: an Optuna study nested inside the walk-forward train windows
    (`tuning.driver`)."""

    val_fraction: float = 0.2
    """Tail of each segment's train rows used to score a trial."""
    segments: tuple[int, ...] = (0,)
    """Walk-forward segments whose train rows every trial trains and scores on."""
    metric: Literal["sharpe", "sortino", "total_return", "calmar"] = "sharpe"
    """Validation score a trial maximises (the mean over tune.segments); calmar needs >= 90 days
    of validation rows (shorter windows are not annualised)."""
    space: tuple[SearchParam, ...] = ()
    """The search space: one entry per searched key (each entry's keys: tune.space[])."""
    pbo_blocks: int = 16
    """S of the CSCV Probability of Backtest Overfitting (even, 2..24)."""


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: a name and the dotted overrides it applies to the study's config."""

    name: str
    """The run's name: its run_name is `<run_name>-<name>` (letters, digits, '-', '_')."""
    set: tuple[str, ...] = ()
    """Dotted overrides (section.key=value) this run applies."""


@dataclass(frozen=True)
class StudyConfig:
    """`cryptorl study`: several walk-forward runs of one config that differ by `runs[i].set`,
    compared over the same OOS window; the comparison and its reading go to `doc`."""

    runs: tuple[StudyRun, ...] = ()
    """The runs compared (each entry's keys: study.runs[])."""
    doc: str | None = None
    """Markdown file the comparison is written to, e.g. docs/study.md (relative to the working
    directory); null: none."""
