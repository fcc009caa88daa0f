"""Hyperparameter tuning with Optuna, nested inside the walk-forward train windows.

`run_study(cfg, n_trials, ...)` runs (or resumes) an Optuna study over `cfg.tune.space`. A trial
applies its sampled values as dotted overrides to the base config and, for every walk-forward
segment k in `cfg.tune.segments`, runs the whole segment pipeline on a *nested* split of that
segment's train rows [train_start, train_end):

    inner train  [fit_start, train_end - n_val - gap)   FFD d, scaler, HMM, MAE, TQC fitted here
    gap          [train_end - n_val - gap, train_end - n_val)   read as lookback only
    validation   [train_end - n_val, train_end)          backtest_rows, scored by tune.metric

with n_val = round(tune.val_fraction * train rows) and gap = max(L, wfo.embargo_hours), where
L = max(W - 1, V) + 1 is the lookback of a decision (observation window W = env.window and the
V = env.vol_window returns of the realised vol). With gap >= L, no validation decision's
observation window or realised vol contains a row of the inner train range, whose returns the
agent was trained on and on which every transform was fitted (purging, AFML ch. 7).

The OOS test rows are never read: each segment's trial starts by cutting the market frame to
rows < train_end (a copy), then builds the causal features of that cut frame; every later stage
receives only the cut frame and arrays derived from it. Only the segment layout (row indices)
is taken from the full frame, as cryptorl wfo makes it.

Use tune.segments = [0] (the default) for a clean walk-forward afterwards: a later segment's
train rows hold earlier segments' test rows, so tuning on it validates on rows that are OOS for
those earlier segments (run_study warns and says so in best.yaml).

The objective is the mean of the per-segment validation scores (maximised). The median pruner
is fed the training `pnl` (mean per-step log return of the training envs) after every chunk:
unlike `reward`, it does not change with env.reward_scale or the curriculum, which may be
searched. Every trial of one study uses the base seed (common random numbers across trials).

Outputs in `workdir`: the study (SQLite by default, `study.db`), `trials.jsonl` (one record per
finished trial, rebuilt from the storage after every trial, so several processes on one storage
keep it complete) and `best.yaml` (the base config with the best trial's values applied and
`wfo.trial_log` pointing to the trial log, which the WFO report reads), and `overfitting.json`
(the best trial's Deflated Sharpe on its validation rows and the PBO, `study_overfitting`).

Compilation: the trainer cache (`pipeline.get_trainer`) is keyed on the `TrainerSpec`, so the
dynamic hyperparameters (`training.spec.HYPER_KEYS`: learning rates, gamma, tau, entropy, grad
norm, reward scale, curriculum schedules) never recompile; a searched key that sets a shape or
a code path (net width, batch, encoder settings, ...) compiles the training step once per
distinct value; keys of data, features, regimes and wfo do not, unless they change the number
of feature columns (regimes.n_states, feature groups) or lengthen the feature warm-up past the
segment's train start (a shorter inner train slice: a new shape).

One trial path. Every trial, sequential or population, is asked (`begin_trial`: its values as
user attrs), trained and scored by `train_trials` (no Optuna: a `BatchOutcome` of per-trial
scores, validation returns, the pruner's per-chunk values, a stop step or an error) and told
by `record_trial`. A sequential study is a batch of one trial trained alone on its own config,
whose per-chunk callback reports to the pruner live and stops it there; a population study
(`run_study(..., population=P)`, `cryptorl tune --population P`) asks P trials at a time,
trains them as ONE population through an executor (`walkforward.executor`: local, or a Ray
task) and replays the pruner's decisions when it records them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import jax
import numpy as np
import pandas as pd

from cryptorl_jax.backtest.overfitting import selection_overfitting
from cryptorl_jax.config import (
    Config,
    ConfigError,
    SearchParam,
    load_config,
    with_overrides,
)
from cryptorl_jax.io import write_atomic, write_json
from cryptorl_jax.market import load_market
from cryptorl_jax.training.spec import HYPER_KEYS, Hyper, Member, enters_the_step, is_hyper_key
from cryptorl_jax.training.train import TrainingDivergedError, train
from cryptorl_jax.walkforward.executor import Executor, LocalExecutor
from cryptorl_jax.walkforward.pipeline import (
    STAGE_TRAIN,
    RunData,
    SegmentControls,
    SegmentInputs,
    backtest_rows,
    get_trainer,
    lookback_rows,
    prepare_run,
    prepare_segment,
    run_segment,
    segment_key,
    strategy_metrics,
)
from cryptorl_jax.walkforward.segments import Segment

log = logging.getLogger("cryptorl_jax.tune")

TRIAL_LOG = "trials.jsonl"
BEST_CONFIG = "best.yaml"
OVERFITTING = "overfitting.json"
VAL_RETURNS = "val_returns"  # trial user attr: {segment: [hourly validation returns]}
PRUNE_METRIC = "pnl"  # train() history key fed to the pruner
SCORE_KEYS = ("sharpe", "sortino", "total_return", "calmar", "max_drawdown", "cagr",
              "volatility", "turnover", "exposure")


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key (already known to exist)."""
    cls: Any = Config
    tp: Any = None
    for part in key.split("."):
        tp = get_type_hints(cls)[part]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        cls = inner[0] if inner else tp
    return tp


def _accepts(tp: Any, kind: type) -> bool:
    if tp is kind:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(_accepts(a, kind) for a in get_args(tp))
    return False


def override_text(key: str, value: Any) -> str:
    """`key=value` for config.with_overrides; a string choice is YAML text (e.g. "[64, 64]")."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{key}={text}"


def check_space(cfg: Config) -> None:
    """Raise ConfigError naming tune.space[i] if a bound or choice gives an invalid config."""
    src = cfg.source
    if not cfg.tune.space:
        raise ConfigError("tune.space", "is empty: declare the search space (see "
                          "configs/tune_quick.yaml)", src)
    keys = [p.key for p in cfg.tune.space]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError("tune.space", f"key(s) {dup} appear more than once", src)
    for i, p in enumerate(cfg.tune.space):
        name = f"tune.space[{i}]"
        tp = _field_type(p.key)
        if p.type in ("float", "loguniform") and not _accepts(tp, float) and _accepts(tp, int):
            raise ConfigError(f"{name}.type", f"'{p.key}' is an integer key: use type int", src)
        if p.type == "int":
            if not _accepts(tp, int):
                raise ConfigError(f"{name}.type", f"'{p.key}' is not an integer key", src)
            if not (float(p.low).is_integer() and float(p.high).is_integer()):
                raise ConfigError(f"{name}.low", f"int bounds must be whole numbers, got "
                                  f"[{p.low}, {p.high}]", src)
            values: Sequence[Any] = (int(p.low), int(p.high))
        elif p.type == "categorical":
            values = p.choices or ()
        else:
            values = (float(p.low), float(p.high))
        for v in values:
            try:
                with_overrides(cfg, [override_text(p.key, v)])
            except ConfigError as exc:
                raise ConfigError(name, f"{p.key} = {v!r} is not a valid value: {exc}",
                                  src) from None


def suggest_overrides(trial: Any, space: Sequence[SearchParam]) -> list[str]:
    """Sample every dimension of the space with the trial; returns dotted overrides."""
    out = []
    for p in space:
        if p.type == "categorical":
            value = trial.suggest_categorical(p.key, list(p.choices or ()))
        elif p.type == "int":
            value = trial.suggest_int(p.key, int(p.low), int(p.high))
        else:
            value = trial.suggest_float(p.key, float(p.low), float(p.high),
                                        log=p.type == "loguniform")
        out.append(override_text(p.key, value))
    return out


# --------------------------------------------------------------------------------------------
# The nested split and one segment's validation score
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NestedSplit:
    """Rows of a trial inside one segment's train rows (half-open, absolute indices)."""

    segment: int
    fit_start: int  # first row the transforms are fitted on and episodes start at
    inner_train_end: int
    val_start: int
    val_end: int  # = the outer segment's train_end: nothing at or after it is read

    @property
    def gap(self) -> int:
        return self.val_start - self.inner_train_end

    def inner_segment(self) -> Segment:
        """A Segment whose train rows are the inner train and whose test rows are validation."""
        return Segment(self.segment, self.fit_start, self.inner_train_end, self.val_start,
                       self.val_end)


def nested_split(cfg: Config, seg: Segment, offset: int = 0) -> NestedSplit:
    """Inner train / gap / validation inside seg's train rows (see the module docstring).

    offset: the first row whose features and lookback exist (RunData.offset); the inner train
    starts at max(seg.train_start, offset).
    """
    n_rows = seg.train_end - seg.train_start
    n_val = int(round(cfg.tune.val_fraction * n_rows))
    gap = max(lookback_rows(cfg), cfg.wfo.embargo_hours)
    fit_start = max(seg.train_start, offset)
    val_start = seg.train_end - n_val
    inner_end = val_start - gap
    min_inner = cfg.env.window + cfg.env.vol_window + 2
    if n_val < 2:
        raise ConfigError("tune.val_fraction", f"segment {seg.index}: {cfg.tune.val_fraction:g}"
                          f" of {n_rows} train rows leaves {n_val} validation rows (need >= 2)",
                          cfg.source)
    if inner_end - fit_start < min_inner:
        raise ConfigError(
            "tune.val_fraction",
            f"segment {seg.index}: train rows [{seg.train_start}, {seg.train_end}) minus "
            f"{n_val} validation rows and a {gap}-row gap leave {inner_end - fit_start} inner "
            f"train rows from row {fit_start} (need >= env.window + env.vol_window + 2 = "
            f"{min_inner})", cfg.source)
    return NestedSplit(seg.index, fit_start, inner_end, val_start, seg.train_end)


def cut_run(cfg: Config, market: pd.DataFrame, end: int) -> RunData:
    """RunData of a copy of market rows [0, end): later rows do not exist for what follows."""
    cut = market.iloc[:end].copy()
    cut.attrs = dict(market.attrs)
    return RunData.build(cfg, cut, layout=False)


@dataclass
class TrialInputs:
    """What a trial trains and is scored on in one segment: everything before TQC."""

    split: NestedSplit
    inputs: SegmentInputs  # prepare_segment on the inner segment (its run: the cut market)


def trial_run(cfg: Config, market: pd.DataFrame, seg: Segment) -> tuple[RunData, NestedSplit]:
    """The market cut at seg's train end (nothing at or after it exists) and the nested split."""
    run = cut_run(cfg, market, seg.train_end)
    split = nested_split(cfg, seg, run.offset)
    run.segments = [split.inner_segment()]
    return run, split


def _check_cut(sm: Any, run: RunData, seg: Segment) -> None:
    if not sm.matrix.shape[0] == len(run.market) == seg.train_end:  # nothing after train_end
        raise RuntimeError(f"segment {seg.index}: the trial's feature matrix has "
                           f"{sm.matrix.shape[0]} rows, expected exactly the {seg.train_end} "
                           "rows before the train end")


def segment_inputs(cfg: Config, market: pd.DataFrame, seg: Segment, workdir: Path,
                   progress: bool = False) -> TrialInputs:
    """Cut the market at seg's train end, split it, and run the segment runner's preparation
    (transforms and encoder fitted on the inner train rows, the training slice)."""
    run, split = trial_run(cfg, market, seg)
    inputs = prepare_segment(cfg, run, split.inner_segment(), workdir,
                             SegmentControls(progress=progress))
    _check_cut(inputs.sm, run, seg)
    return TrialInputs(split=split, inputs=inputs)


def scores_of(frame: pd.DataFrame, split: NestedSplit, chunks: int) -> dict[str, Any]:
    """A trial's validation scores: compute_metrics' keys, the split's rows and, under
    "returns", the strategy's hourly validation returns (the PBO and DSR inputs)."""
    metrics = strategy_metrics(frame)
    out: dict[str, Any] = {k: float(metrics[k]) for k in SCORE_KEYS if k in metrics}
    out.update({"fit_start": split.fit_start, "inner_train_end": split.inner_train_end,
                "val_start": split.val_start, "val_end": split.val_end, "gap": split.gap,
                "chunks": chunks})
    returns = frame["strategy"].to_numpy()
    out["flat"] = bool(np.nanstd(returns) == 0.0)
    out["returns"] = [float(x) for x in returns]
    return out


def score_agents(cfg: Config, trial: TrialInputs, seg: Segment, trainer: Any, rollout: Any,
                 agents: Any, chunks: int) -> dict[str, Any]:
    """The validation backtest of some agents trained on the trial's inputs (population mode:
    one trial's members)."""
    split, inputs = trial.split, trial.inputs
    frame = backtest_rows(cfg, inputs.run, inputs.sm, inputs.enc, trainer, agents,
                          split.val_start, split.val_end, rollout,
                          baseline_seed=cfg.seed * 1000 + seg.index)
    return scores_of(frame, split, chunks)


def validate_segment(cfg: Config, market: pd.DataFrame, seg: Segment, workdir: Path, *,
                     on_chunk: Callable[[int, dict[str, Any]], None] | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """The segment runner on the inner train rows of seg, backtested on the validation rows.

    Returns compute_metrics' keys of the validation backtest plus the split's rows, and under
    "returns" the strategy's hourly validation returns (the PBO and DSR inputs).
    """
    run, split = trial_run(cfg, market, seg)
    outcome = run_segment(cfg, run, split.inner_segment(), workdir,
                          eval_rows=(split.val_start, split.val_end),
                          controls=SegmentControls(progress=progress, on_chunk=on_chunk,
                                                   desc=f"trial segment {seg.index}"))
    _check_cut(outcome.inputs.sm, run, seg)
    return scores_of(outcome.oos, split, len(outcome.train.history))


def wfo_layout(cfg: Config, market: pd.DataFrame) -> list[Segment]:
    """Every walk-forward segment of the data (wfo.segments / max_segments not applied)."""
    layout_cfg = dataclasses.replace(cfg, wfo=dataclasses.replace(cfg.wfo, segments=None,
                                                                  max_segments=None))
    return prepare_run(layout_cfg, market).segments


def outer_segments(cfg: Config, market: pd.DataFrame,
                   layout: list[Segment] | None = None) -> list[Segment]:
    """The walk-forward segments named by tune.segments (the layout cryptorl wfo makes)."""
    segments = layout if layout is not None else wfo_layout(cfg, market)
    bad = [k for k in cfg.tune.segments if k >= len(segments)]
    if bad or not cfg.tune.segments:
        raise ConfigError("tune.segments", f"segment(s) {bad or '[]'} do not exist: the data "
                          f"holds segments 0..{len(segments) - 1}", cfg.source)
    return [segments[k] for k in sorted(set(cfg.tune.segments))]


# --------------------------------------------------------------------------------------------
# Storage, trial log, best config
# --------------------------------------------------------------------------------------------


def make_storage(url: str) -> Any:
    """An RDB storage that waits for SQLite's lock (several processes) and fails dead trials.

    A trial whose process died stops sending heartbeats and is marked FAIL after the grace
    period, so a resumed study does not count it as running forever.
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60,
                                          grace_period=180)


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """An exclusive file lock next to a SQLite database while a process sets the study up.

    Two processes creating the same new database race on its tables ("table studies already
    exists"); Optuna handles concurrent trials, not concurrent schema creation.
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock_path = Path(url[len(prefix):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def study_digest(cfg: Config) -> str:
    """Hash of the base config a study tunes (output settings and wfo.trial_log left out)."""
    raw = cfg.to_dict()
    raw.pop("output", None)
    raw["wfo"].pop("trial_log", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trial_record(trial: Any) -> dict[str, Any]:
    """One trial-log line: what report.read_trial_log needs plus params, scores and seeds."""
    a = trial.user_attrs
    value = trial.value if trial.state.name == "COMPLETE" else None
    end = trial.datetime_complete
    start = trial.datetime_start
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": value,
        "metric": a.get("metric"),
        "sharpe": a.get("sharpe") if trial.state.name == "COMPLETE" else None,
        "params": dict(trial.params),
        "overrides": a.get("overrides", []),
        "segment_scores": a.get("segment_scores", {}),
        "seed": a.get("seed"),
        "n_seeds": a.get("n_seeds"),
        "error": a.get("error"),
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
        "datetime_start": start.isoformat() if start else None,
        "datetime_complete": end.isoformat() if end else None,
        "duration_s": (end - start).total_seconds() if start and end else None,
    }


def write_trial_log(study: Any, path: Path) -> int:
    """Rebuild the JSONL trial log from the storage (atomic replace); returns its line count."""
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state.name in ("COMPLETE", "PRUNED", "FAIL")]
    finished.sort(key=lambda t: t.number)
    lines = [json.dumps(trial_record(t), default=_json_default, allow_nan=True)
             for t in finished]
    write_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def seen_by_tuning(layout: list[Segment], tuned: list[Segment]) -> list[int]:
    """WFO segments whose test rows start before the last row a tuning trial read.

    Their OOS results are not out of sample for a config chosen by this study: the tuning
    validated on some of their test rows (a later segment's train rows hold earlier test rows).
    """
    last = max(s.train_end for s in tuned)
    return [s.index for s in layout if s.test_start < last]


def export_best(cfg: Config, trial: Any, path: Path, trial_log: Path, study_name: str,
                note: str = "") -> Config:
    """Write the base config with the trial's values and wfo.trial_log set; load it back."""
    best = with_overrides(cfg, trial.user_attrs.get("overrides")
                          or [override_text(k, v) for k, v in trial.params.items()])
    best = dataclasses.replace(
        best, run_name=f"{cfg.run_name}-tuned",
        wfo=dataclasses.replace(best.wfo, trial_log=str(Path(trial_log).absolute())))
    header = (f"# Written by cryptorl tune: study '{study_name}', best trial {trial.number} "
              f"(validation {trial.user_attrs.get('metric', cfg.tune.metric)} "
              f"{trial.value:.6g}).\n# Run it with: cryptorl wfo --config {path}\n"
              + "".join(f"# {line}\n" for line in note.splitlines()))
    write_atomic(path, header + best.to_yaml())
    loaded = load_config(path)
    if loaded != best:
        raise RuntimeError(f"{path}: the exported config does not load back to the same values")
    return loaded


# --------------------------------------------------------------------------------------------
# Overfitting statistics of the study: the best trial's DSR and the PBO
# --------------------------------------------------------------------------------------------


def trials_tried(trials: Sequence[Any]) -> list[Any]:
    """The trials that count in the N of the deflation: finished COMPLETE or PRUNED, and FAIL
    trials that failed on their own configuration (a caught error, e.g. divergence), not a
    trial whose process died."""
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")
            or (t.state.name == "FAIL" and t.user_attrs.get("error"))]


def _validation_series(trial: Any) -> np.ndarray | None:
    per_segment = trial.user_attrs.get(VAL_RETURNS)
    if not per_segment:
        return None
    return np.concatenate([np.asarray(per_segment[k], dtype=np.float64)
                           for k in sorted(per_segment, key=int)])


def study_overfitting(study: Any, cfg: Config) -> dict[str, Any]:
    """`backtest.overfitting.selection_overfitting` of an Optuna study: the completed trials'
    validation series (their segments' validation hours, in order), the best trial, and N =
    the trials tried (`trials_tried`). The selection was made on the validation rows, so that
    is where it is deflated."""
    tried = trials_tried(study.get_trials(deepcopy=False))
    series = {t.number: _validation_series(t) for t in tried if t.state.name == "COMPLETE"}
    try:
        best = study.best_trial.number
    except ValueError:
        best = None
    return selection_overfitting({k: v for k, v in series.items() if v is not None}, best,
                                 len(tried),
                                 n_pruned=sum(t.state.name == "PRUNED" for t in tried),
                                 n_failed=sum(t.state.name == "FAIL" for t in tried),
                                 pbo_blocks=cfg.tune.pbo_blocks)


def write_overfitting(study: Any, cfg: Config, path: Path) -> dict[str, Any]:
    stats = study_overfitting(study, cfg)
    write_json(path, stats)
    return stats


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    study_name: str
    storage: str
    trials_run: list[int]  # numbers of the trials this call ran
    n_trials: int  # finished trials in the study (all processes)
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    trial_log: Path
    seconds: float
    study: Any
    overfitting: dict[str, Any] = dataclasses.field(default_factory=dict)


def score(metrics: dict[str, Any], metric: str) -> float:
    """The trial's score on one segment. A validation series with no variance (agents that
    never left the no-trade band: no position, no risk, no return) has an undefined Sharpe,
    Sortino and Calmar; it scores 0, the flat strategy's excess return, instead of failing the
    trial. Any other undefined score is an error naming the metric."""
    value = float(metrics[metric])
    if math.isfinite(value):
        return value
    if metrics.get("flat"):
        return 0.0
    raise ValueError(f"tune.metric {metric!r} is undefined ({value}) on a validation series "
                     "that is not flat")


def _chunks_per_segment(cfg: Config) -> int:
    t = cfg.train
    return math.ceil(t.total_env_steps / (t.steps_per_chunk * t.n_envs))


def default_pruner(cfg: Config) -> Any:
    """Median pruner; never prunes before half a segment's chunks or while actions are random."""
    import optuna

    per_chunk = cfg.train.steps_per_chunk * cfg.train.n_envs
    random_chunks = math.ceil(cfg.tqc.learning_starts / per_chunk)
    n = _chunks_per_segment(cfg)
    return optuna.pruners.MedianPruner(n_startup_trials=5,
                                       n_warmup_steps=max(random_chunks + 1, n // 2))


def check_population_space(cfg: Config) -> None:
    """In population mode every searched key must be a dynamic hyperparameter (a Hyper leaf):
    the members share one compiled step and one data pipeline. Names the first key that is not."""
    for i, p in enumerate(cfg.tune.space):
        if not is_hyper_key(p.key):
            what = ("changes a shape or a code path of the training step"
                    if enters_the_step(p.key) else "changes the data the members share")
            raise ConfigError(f"tune.space[{i}].key", f"'{p.key}' {what}, so it cannot be "
                              "searched in population mode (--population); population keys: "
                              f"{', '.join(HYPER_KEYS)}. Search it one trial at a time.",
                              cfg.source)


def _tell(study: Any, trial: Any, value: float | None, state: str) -> None:
    import optuna

    states = {"COMPLETE": optuna.trial.TrialState.COMPLETE,
              "PRUNED": optuna.trial.TrialState.PRUNED, "FAIL": optuna.trial.TrialState.FAIL}
    study.tell(trial, value if state == "COMPLETE" else None, state=states[state])


# --------------------------------------------------------------------------------------------
# One trial path: train a batch of trials (`train_trials`), record each (`record_trial`)
# --------------------------------------------------------------------------------------------


@dataclass
class TrialOutcome:
    """What training one trial produced, before Optuna hears of it (picklable: a Ray task
    returns it). scores / val_returns per segment (those it finished, in order); intermediate:
    the (step, value) pairs for the pruner, in order; stopped_at: the step at which the
    per-chunk callback stopped it (live pruning); error: a caught TrainingDivergedError or
    ConfigError."""

    scores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    val_returns: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    intermediate: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    stopped_at: int | None = None
    error: str | None = None


@dataclass
class BatchOutcome:
    """The outcomes of one batch of trials, in the order of their overrides."""

    trials: list[TrialOutcome]


class _Stopped(Exception):
    """Raised through train() by a trial's per-chunk callback that stops it."""


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def train_trials(cfg: Config, market: pd.DataFrame, segments: list[Segment],
                 overrides: list[list[str]], population: int | None, workdir: Path,
                 progress: bool, *, stop: Callable[[int, float], bool] | None = None,
                 keep_dir: bool = False) -> BatchOutcome:
    """Train the trials given by `overrides` and score each on every segment's validation rows
    (no Optuna): the one path of a tuning trial, sequential or population.

    population None: one trial trained alone on its own config (any key of the space may be
    searched: the segment runner on the nested split, `validate_segment`); `stop(step,
    value)`, called after every chunk with the pruner's value, may stop it (the sequential
    study's live pruning). population P: the trials as ONE population of P slots
    (`_train_population`), the pruner's decisions replayed afterwards (`record_trial`).
    `workdir` holds the trials' scratch state and is removed unless keep_dir.
    """
    try:
        if population is None:
            if len(overrides) != 1:
                raise ValueError(f"a sequential batch is one trial, got {len(overrides)}")
            return BatchOutcome([_train_alone(cfg, market, segments, overrides[0], workdir,
                                              progress, stop)])
        return _train_population(cfg, market, segments, overrides, population, workdir,
                                 progress)
    finally:
        if not keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _train_alone(cfg: Config, market: pd.DataFrame, segments: list[Segment],
                 overrides: list[str], workdir: Path, progress: bool,
                 stop: Callable[[int, float], bool] | None) -> TrialOutcome:
    out = TrialOutcome()
    try:
        tcfg = with_overrides(cfg, overrides)
        n_chunks = _chunks_per_segment(tcfg)
        for pos, seg in enumerate(segments):

            def on_chunk(chunk: int, record: dict[str, Any], pos: int = pos) -> None:
                step, value = pos * n_chunks + chunk, float(record[PRUNE_METRIC])
                out.intermediate.append((step, value))
                if stop is not None and stop(step, value):
                    out.stopped_at = step
                    raise _Stopped(step)

            seg_dir = workdir / f"segment_{seg.index}"
            if seg_dir.exists():
                shutil.rmtree(seg_dir)
            seg_scores = validate_segment(tcfg, market, seg, seg_dir, on_chunk=on_chunk,
                                          progress=progress)
            out.val_returns[str(seg.index)] = seg_scores.pop("returns")
            out.scores[str(seg.index)] = seg_scores
    except _Stopped:
        pass
    except (TrainingDivergedError, ConfigError) as exc:
        out.error = _error_text(exc)
    return out


def _train_population(cfg: Config, market: pd.DataFrame, segments: list[Segment],
                      overrides: list[list[str]], population: int, workdir: Path,
                      progress: bool) -> BatchOutcome:
    """The trials as ONE population: each trial is `train.n_seeds` members (seeds 0..S-1, its
    Hyper); a batch smaller than `population` trials is padded with copies of its last trial
    (those slots compute and are ignored), so every batch of a study runs the same compiled
    step. A NaN in any member stops the population's training: every trial of the batch then
    fails with the error and keeps no scores (its members trained together)."""
    n_seeds = cfg.train.n_seeds
    tcfgs = [with_overrides(cfg, ov) for ov in overrides]
    slots = tcfgs + [tcfgs[-1]] * (population - len(tcfgs))
    members = [Member(seed=s, hyper=Hyper.from_config(c)) for c in slots for s in range(n_seeds)]
    n = len(tcfgs)
    outs = [TrialOutcome() for _ in range(n)]
    n_chunks = _chunks_per_segment(cfg)
    try:
        for pos, seg in enumerate(segments):
            trial_inputs = segment_inputs(cfg, market, seg, workdir / f"segment_{seg.index}",
                                          progress)
            inputs = trial_inputs.inputs
            emb = inputs.enc.embeddings
            trainer, rollout = get_trainer(cfg, inputs.sm.matrix.shape[1],
                                           None if emb is None else emb.shape[1],
                                           population=len(members))

            def on_chunk(chunk: int, record: dict[str, Any], pos: int = pos) -> None:
                pnl = record.get("members", {}).get(PRUNE_METRIC, [record[PRUNE_METRIC]])
                for i in range(n):
                    value = float(np.mean(pnl[i * n_seeds:(i + 1) * n_seeds]))
                    outs[i].intermediate.append((pos * n_chunks + chunk, value))

            result = train(cfg, inputs.data, workdir / f"segment_{seg.index}" / "train",
                           key=segment_key(cfg, seg.index, STAGE_TRAIN), trainer=trainer,
                           encoder_params=inputs.enc.finetune_params, resume=False,
                           progress=progress, tensorboard_dir=None,
                           desc=f"population of {n} trials, segment {seg.index}",
                           on_chunk=on_chunk, members=members)
            for i in range(n):
                agents = jax.tree.map(lambda x, i=i: x[i * n_seeds:(i + 1) * n_seeds],
                                      result.state.agent)
                seg_scores = score_agents(tcfgs[i], trial_inputs, seg, trainer, rollout, agents,
                                          len(result.history))
                outs[i].val_returns[str(seg.index)] = seg_scores.pop("returns")
                outs[i].scores[str(seg.index)] = seg_scores
    except TrainingDivergedError as exc:
        return BatchOutcome([TrialOutcome(intermediate=o.intermediate, error=_error_text(exc))
                             for o in outs])
    return BatchOutcome(outs)


def begin_trial(cfg: Config, trial: Any, population: int | None) -> list[str]:
    """Suggest the trial's values (Optuna's ask side) and record them as user attrs. Returns its
    overrides. In population mode a bad combination fails here, before any training."""
    ov = suggest_overrides(trial, cfg.tune.space)
    trial.set_user_attr("overrides", ov)
    trial.set_user_attr("metric", cfg.tune.metric)
    if population is None:
        try:
            tcfg = with_overrides(cfg, ov)
        except ConfigError:
            return ov  # the trial fails with the error when it is trained
    else:
        tcfg = with_overrides(cfg, ov)
        trial.set_user_attr("population", population)
    trial.set_user_attr("seed", tcfg.seed)
    trial.set_user_attr("n_seeds", tcfg.train.n_seeds)
    return ov


def record_trial(cfg: Config, study: Any, trial: Any, overrides: list[str],
                 outcome: TrialOutcome, segments: list[Segment], *, live: bool) -> str:
    """Tell Optuna one trial's outcome; returns the state told.

    live: the pruner already heard the trial's values while it trained (the sequential study);
    otherwise they are replayed now, and a trial the pruner stops at step s (segment pos =
    s // chunks) keeps the scores of the segments before pos and is told PRUNED, exactly as if
    it had been stopped while training (its slot computed to the end either way).
    """
    if outcome.scores and (outcome.error is not None or outcome.stopped_at is not None):
        trial.set_user_attr("segment_scores", outcome.scores)
    if outcome.error is not None:
        trial.set_user_attr("error", outcome.error)
        _tell(study, trial, None, "FAIL")
        return "FAIL"
    try:
        n_chunks = _chunks_per_segment(with_overrides(cfg, overrides))
    except ConfigError:
        n_chunks = _chunks_per_segment(cfg)
    pruned_at = outcome.stopped_at
    if not live:
        for step, value in outcome.intermediate:
            trial.report(value, step)
            if trial.should_prune():
                pruned_at = step
                break
    kept = segments if pruned_at is None else segments[:pruned_at // n_chunks]
    seg_scores = {str(s.index): outcome.scores[str(s.index)] for s in kept}
    trial.set_user_attr("segment_scores", seg_scores)
    if pruned_at is not None:
        seg = segments[pruned_at // n_chunks]
        log.info("trial %d: pruned at segment %d, chunk %d", trial.number, seg.index,
                 pruned_at % n_chunks)
        _tell(study, trial, None, "PRUNED")
        return "PRUNED"
    trial.set_user_attr(VAL_RETURNS, outcome.val_returns)
    trial.set_user_attr("sharpe", float(np.mean([m["sharpe"] for m in seg_scores.values()])))
    metric = cfg.tune.metric
    value = float(np.mean([score(m, metric) for m in seg_scores.values()]))
    log.info("trial %d: validation %s %.4g (%s)", trial.number, metric, value,
             ", ".join(overrides))
    _tell(study, trial, value, "COMPLETE")
    return "COMPLETE"


def _sequential_trial(cfg: Config, market: pd.DataFrame, segments: list[Segment], study: Any,
                      workdir: Path, study_name: str, progress: bool, keep_dir: bool) -> int:
    """Ask one trial, train it alone with live pruning, record it; returns its number. An
    error that is not the trial's own (not a divergence or a bad configuration) fails the
    trial, naming the error, and stops the study."""
    trial, = _ask(study, 1)
    try:
        overrides = begin_trial(cfg, trial, None)

        def stop(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        outcome = train_trials(cfg, market, segments, [overrides], None,
                               workdir / "trials" / f"{study_name}_{trial.number}", progress,
                               stop=stop, keep_dir=keep_dir).trials[0]
    except BaseException as exc:  # Ctrl-C included: no trial stays RUNNING in the storage
        trial.set_user_attr("error", _error_text(exc))
        _tell(study, trial, None, "FAIL")
        raise
    record_trial(cfg, study, trial, overrides, outcome, segments, live=True)
    return trial.number


def _population_trials(cfg: Config, market: pd.DataFrame, segments: list[Segment], study: Any,
                       workdir: Path, population: int, n_trials: int, executor: Executor,
                       trial_log: Path) -> list[int]:
    """Ask P trials at a time, send each batch to the executor (keeping `executor.slots` in
    flight), and record the outcomes in the order the batches were asked for. Returns the
    trials run. If the executor fails (not a trial's own error), every trial asked and not yet
    told fails with the error, so that none stays RUNNING in the storage."""
    ran: list[int] = []
    left = n_trials
    in_flight: collections.deque = collections.deque()
    while left > 0 or in_flight:
        while left > 0 and len(in_flight) < executor.slots:
            batch = _ask(study, min(population, left))
            overrides = [begin_trial(cfg, t, population) for t in batch]
            handle = executor.submit_batch(cfg, market, segments, overrides, population,
                                           workdir / "trials" / f"batch_{batch[0].number}")
            in_flight.append((batch, overrides, handle))
            left -= len(batch)
        batch, overrides, handle = in_flight.popleft()  # told in the order asked
        try:
            outcome = executor.result(handle, "tuning batch of trials "
                                      f"{[t.number for t in batch]}")
        except Exception as exc:
            for trials in [batch, *(b for b, _, _ in in_flight)]:
                for trial in trials:
                    trial.set_user_attr("executor_error", f"{exc}"[:2000])
                    _tell(study, trial, None, "FAIL")
            raise
        if any(o.error is not None for o in outcome.trials):
            log.warning("population batch %s failed: %s", [t.number for t in batch],
                        outcome.trials[0].error)
        for trial, ov, out in zip(batch, overrides, outcome.trials, strict=True):
            record_trial(cfg, study, trial, ov, out, segments, live=False)
        ran.extend(t.number for t in batch)
        write_trial_log(study, trial_log)
    return ran


def _ask(study: Any, n: int) -> list[Any]:
    with warnings.catch_warnings():  # the heartbeat is optimize()'s; ask/tell here
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return [study.ask() for _ in range(n)]


def run_study(cfg: Config, n_trials: int, storage: str | None = None,
              study_name: str | None = None, workdir: str | Path = "results/tune",
              market: pd.DataFrame | None = None, *, worker: int = 0, pruner: Any = None,
              progress: bool | None = None, keep_trial_dirs: bool = False,
              population: int | None = None, executor: Executor | None = None) -> StudyResult:
    """Run n_trials more trials of the study (created or resumed) and export the best config.

    storage: an Optuna storage URL (default sqlite:///<workdir>/study.db); several processes may
    share it. study_name: default '<run_name>-tune'. worker: distinguishes processes started on
    one storage at the same moment (it enters the sampler seed). The sampler is TPE seeded from
    (seed, trials already in the study, worker), so a resumed study does not replay the random
    start-up trials of the first call.
    population: ask Optuna for that many trials at a time and train each batch as one
    population (`train_trials`); the search space may then hold only dynamic
    hyperparameters (`training.spec.HYPER_KEYS`), and one compilation serves the whole study.
    executor (population mode; None: `LocalExecutor`): a `cluster.RayExecutor` sends each
    population batch to a Ray task and keeps `executor.slots` batches in flight; the results
    are told to Optuna in the order the batches were asked for. With one batch in flight, or
    while the sampler is still in its random start-up trials, the study is the same as a
    local one.
    """
    import optuna

    t0 = time.perf_counter()
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    check_space(cfg)
    if population is not None:
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        check_population_space(cfg)
    if executor is not None and population is None:
        raise ValueError("tuning on a Ray executor sends population batches to the tasks: give "
                         "--population P (P trials per task)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{(workdir / 'study.db').absolute()}"
    study_name = study_name or f"{cfg.run_name}-tune"
    progress = cfg.output.progress if progress is None else progress
    if market is None:
        market = load_market(cfg.data)
    layout = wfo_layout(cfg, market)
    segments = outer_segments(cfg, market, layout)
    seen = seen_by_tuning(layout, segments)
    note = ""
    if seen:
        note = (f"WARNING: the tuning validated on rows up to {max(s.train_end for s in segments)}"
                f" (tune.segments {list(cfg.tune.segments)}), which include the test rows of "
                f"walk-forward segment(s) {seen}: their OOS results are not out of sample for "
                "this config. Tune on segment 0 only, or judge the WFO on the later segments.")
        log.warning(note)
    for seg in segments:  # the base config's split must fit (a trial's is checked per trial)
        nested_split(cfg, seg)

    with storage_lock(storage_url):
        study = optuna.create_study(storage=make_storage(storage_url), study_name=study_name,
                                    direction="maximize", load_if_exists=True,
                                    pruner=pruner or default_pruner(cfg))
        digest = study_digest(cfg)
        held = study.user_attrs.get("base_config_digest")
        if held is None:
            study.set_user_attr("base_config_digest", digest)
            study.set_user_attr("base_config", cfg.to_dict())
        elif held != digest:
            raise ConfigError("tune", f"study '{study_name}' in {storage_url} tunes a different "
                              f"base config (digest {held} != {digest}); use another --study-name "
                              "or storage", cfg.source)
        n_before = len(study.get_trials(deepcopy=False))
        seed = int(np.random.SeedSequence([cfg.seed, n_before, worker]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    log.info("study '%s' (%s): %d trials before, running %d more on segments %s", study_name,
             storage_url, n_before, n_trials, [s.index for s in segments])

    trial_log = workdir / TRIAL_LOG
    ran: list[int] = []
    try:
        if population is None:
            for _ in range(n_trials):
                ran.append(_sequential_trial(cfg, market, segments, study, workdir, study_name,
                                             progress, keep_trial_dirs))
                write_trial_log(study, trial_log)
        else:
            ex = executor if executor is not None else LocalExecutor(
                progress=progress, keep_dirs=keep_trial_dirs)
            ran.extend(_population_trials(cfg, market, segments, study, workdir, population,
                                          n_trials, ex, trial_log))
    finally:
        n_logged = write_trial_log(study, trial_log)
        trials_dir = workdir / "trials"
        if trials_dir.is_dir() and not any(trials_dir.iterdir()):
            with contextlib.suppress(OSError):  # another process may have just used it
                trials_dir.rmdir()
    best_path: Path | None = None
    best = None
    try:
        best = study.best_trial
    except ValueError:
        log.warning("study '%s': no trial completed; %s not written", study_name, BEST_CONFIG)
    if best is not None:
        best_path = workdir / BEST_CONFIG
        export_best(cfg, best, best_path, trial_log, study_name, note)
    overfitting = write_overfitting(study, cfg, workdir / OVERFITTING)
    return StudyResult(overfitting=overfitting, study_name=study_name, storage=storage_url,
                       trials_run=ran,
                       n_trials=n_logged, best_trial=None if best is None else best.number,
                       best_value=None if best is None else float(best.value),
                       best_params={} if best is None else dict(best.params),
                       best_config=best_path, trial_log=trial_log,
                       seconds=time.perf_counter() - t0, study=study)
