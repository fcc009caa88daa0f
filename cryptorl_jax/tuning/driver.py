"""Hyperparameter tuning with Optuna, nested inside the walk-forward train windows.

`run_study(cfg, n_trials, ...)` runs (or resumes) an Optuna study over `cfg.tune.space`. A trial
applies its sampled values as dotted overrides to the base config and, for every walk-forward
segment k in `cfg.tune.segments`, runs the segment runner (walkforward.runner) on a *nested*
split of that segment's train rows [train_start, train_end):

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
receives only the cut frame and arrays derived from it. Only the segments' row indices are
taken from the full frame, as cryptorl wfo makes them.

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

Compilation: the trainer cache (`stages.get_trainer`) is keyed on the `TrainerSpec`, so the
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
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.config import Config, ConfigError
from cryptorl_jax.core.io import check_writable
from cryptorl_jax.market import load_market
from cryptorl_jax.tuning.space import check_study
from cryptorl_jax.tuning.split import (
    all_wfo_segments,
    nested_split,
    outer_segments,
    seen_by_tuning,
)
from cryptorl_jax.tuning.storage import (
    BEST_CONFIG,
    OVERFITTING,
    TRIAL_LOG,
    export_best,
    legacy_study_digest,
    make_storage,
    storage_lock,
    study_digest,
    write_overfitting,
    write_trial_log,
)
from cryptorl_jax.tuning.trials import (
    begin_trial,
    default_pruner,
    error_text,
    record_trial,
    tell_trial,
    train_trials,
    train_trials_in_scratch,
)
from cryptorl_jax.walkforward.executor import Executor, LocalExecutor
from cryptorl_jax.walkforward.segments import Segment

log = logging.getLogger("cryptorl_jax.tune")


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
        trial.set_user_attr("error", error_text(exc))
        tell_trial(study, trial, None, "FAIL")
        raise
    record_trial(cfg, study, trial, overrides, outcome, segments, live=True)
    return trial.number


def _population_trials(cfg: Config, market: pd.DataFrame, segments: list[Segment], study: Any,
                       workdir: Path, population: int, n_trials: int, executor: Executor,
                       trial_log: Path, progress: bool, keep_dirs: bool) -> list[int]:
    """Ask P trials at a time, send each batch to the executor (`train_trials`, keeping
    `executor.slots` in flight), and record the outcomes in the order the batches were asked
    for. Returns the trials run. If the executor fails (not a trial's own error), every trial
    asked and not yet told fails with the error, so that none stays RUNNING in the storage.
    A batch trains in workdir/trials/batch_<first trial> where the executor's calls see this
    filesystem (kept with keep_dirs), else in scratch space of its own
    (`train_trials_in_scratch`)."""
    ran: list[int] = []
    market_ref = executor.put(market)
    left = n_trials
    in_flight: collections.deque = collections.deque()
    while left > 0 or in_flight:
        while left > 0 and len(in_flight) < executor.slots:
            batch = _ask(study, min(population, left))
            try:
                overrides = [begin_trial(cfg, t, population) for t in batch]
            except ConfigError as exc:  # a bad combination: no trial stays RUNNING
                for trial in batch:
                    trial.set_user_attr("error", error_text(exc))
                    tell_trial(study, trial, None, "FAIL")
                raise
            if executor.shared_fs:
                handle = executor.submit(train_trials, cfg, market_ref, segments, overrides,
                                         population, workdir / "trials" /
                                         f"batch_{batch[0].number}",
                                         progress and not executor.remote, keep_dir=keep_dirs)
            else:
                handle = executor.submit(train_trials_in_scratch, cfg, market_ref, segments,
                                         overrides, population)
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
                    tell_trial(study, trial, None, "FAIL")
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


def no_completed_trial_text(study: Any) -> str:
    """Why a study has no best trial: its trials by state and each distinct error with the
    trials it failed."""
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials)
    errors: dict[str, list[int]] = {}
    for t in trials:
        if t.state.name == "FAIL":
            errors.setdefault(t.user_attrs.get("error") or t.user_attrs.get("executor_error")
                              or "no error recorded (the process died?)", []).append(t.number)
    words = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}
    text = ", ".join(f"{n} {words.get(state, state.lower())}"
                     for state, n in sorted(states.items())) or "no trial"
    return text + "".join(f"; trial(s) {nums} failed: {err}" for err, nums in errors.items())


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
    check_study(cfg, n_trials, population)
    if executor is not None and population is None:
        raise ValueError("tuning on a Ray executor sends population batches to the tasks: give "
                         "--population P (P trials per task)")
    workdir = Path(workdir)
    check_writable(workdir, "the study directory")  # before any trial is trained
    workdir.mkdir(parents=True, exist_ok=True)
    storage_url = storage or f"sqlite:///{(workdir / 'study.db').absolute()}"
    study_name = study_name or f"{cfg.run_name}-tune"
    progress = cfg.output.progress if progress is None else progress
    if market is None:
        market = load_market(cfg.data)
    wfo_segments = all_wfo_segments(cfg, market)
    segments = outer_segments(cfg, market, wfo_segments)
    seen = seen_by_tuning(wfo_segments, segments)
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
        if held is not None and held != digest and held == legacy_study_digest(cfg):
            study.set_user_attr("base_config_digest", digest)  # a study from before identity
            held = digest
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
            ex = executor if executor is not None else LocalExecutor()
            ran.extend(_population_trials(cfg, market, segments, study, workdir, population,
                                          n_trials, ex, trial_log, progress, keep_trial_dirs))
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
        log.warning("study '%s': no trial completed; %s not written (%s)", study_name,
                    BEST_CONFIG, no_completed_trial_text(study))
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

