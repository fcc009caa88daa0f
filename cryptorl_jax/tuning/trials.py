"""One trial path (issue 26): `begin_trial` (the ask side), `train_trials` (train and score a
batch of trials, sequential or population, no Optuna) and `record_trial` (the tell side)."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from cryptorl_jax.config import (
    Config,
    ConfigError,
    with_overrides,
)
from cryptorl_jax.training.loop import TrainControls, TrainingDivergedError, train
from cryptorl_jax.training.spec import Hyper, Member
from cryptorl_jax.tuning.space import suggest_overrides
from cryptorl_jax.tuning.split import (
    score_agents,
    segment_inputs,
    validate_segment,
)
from cryptorl_jax.tuning.storage import VAL_RETURNS
from cryptorl_jax.walkforward.data import STAGE_TRAIN, segment_key
from cryptorl_jax.walkforward.segments import Segment
from cryptorl_jax.walkforward.stages import get_trainer

log = logging.getLogger("cryptorl_jax.tune")


PRUNE_METRIC = "pnl"  # train() history key fed to the pruner


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


def tell_trial(study: Any, trial: Any, value: float | None, state: str) -> None:
    import optuna

    states = {"COMPLETE": optuna.trial.TrialState.COMPLETE,
              "PRUNED": optuna.trial.TrialState.PRUNED, "FAIL": optuna.trial.TrialState.FAIL}
    study.tell(trial, value if state == "COMPLETE" else None, state=states[state])


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


def error_text(exc: BaseException) -> str:
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


def train_trials_in_scratch(cfg: Config, market: pd.DataFrame, segments: list[Segment],
                            overrides: list[list[str]], population: int) -> BatchOutcome:
    """`train_trials` of a population batch in a scratch directory of the machine it runs on
    (an executor's call that does not see the study's directory), without progress bars."""
    tmp = Path(tempfile.mkdtemp(prefix="cryptorl-batch-"))
    return train_trials(cfg, market, segments, overrides, population, tmp, False)


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
        out.error = error_text(exc)
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
            trainer, rollout = get_trainer(cfg, *inputs.dims, population=len(members))

            def on_chunk(chunk: int, record: dict[str, Any], pos: int = pos) -> None:
                pnl = record.get("members", {}).get(PRUNE_METRIC, [record[PRUNE_METRIC]])
                for i in range(n):
                    value = float(np.mean(pnl[i * n_seeds:(i + 1) * n_seeds]))
                    outs[i].intermediate.append((pos * n_chunks + chunk, value))

            result = train(cfg, inputs.data, workdir / f"segment_{seg.index}" / "train",
                           key=segment_key(cfg, seg.index, STAGE_TRAIN), trainer=trainer,
                           encoder_params=inputs.enc.finetune_params, members=members,
                           controls=TrainControls(
                               resume=False, progress=progress, on_chunk=on_chunk,
                               desc=f"population of {n} trials, segment {seg.index}"))
            for i in range(n):
                agents = jax.tree.map(lambda x, i=i: x[i * n_seeds:(i + 1) * n_seeds],
                                      result.state.agent)
                seg_scores = score_agents(tcfgs[i], trial_inputs, seg, trainer, rollout, agents,
                                          len(result.history))
                outs[i].val_returns[str(seg.index)] = seg_scores.pop("returns")
                outs[i].scores[str(seg.index)] = seg_scores
    except TrainingDivergedError as exc:
        return BatchOutcome([TrialOutcome(intermediate=o.intermediate, error=error_text(exc))
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
    if outcome.error is not None:
        if outcome.scores:  # the segments it finished before the error
            trial.set_user_attr("segment_scores", outcome.scores)
        trial.set_user_attr("error", outcome.error)
        tell_trial(study, trial, None, "FAIL")
        return "FAIL"
    n_chunks = _chunks_per_segment(with_overrides(cfg, overrides))  # it trained: it is valid
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
        tell_trial(study, trial, None, "PRUNED")
        return "PRUNED"
    trial.set_user_attr(VAL_RETURNS, outcome.val_returns)
    trial.set_user_attr("sharpe", float(np.mean([m["sharpe"] for m in seg_scores.values()])))
    metric = cfg.tune.metric
    value = float(np.mean([score(m, metric) for m in seg_scores.values()]))
    log.info("trial %d: validation %s %.4g (%s)", trial.number, metric, value,
             ", ".join(overrides))
    tell_trial(study, trial, value, "COMPLETE")
    return "COMPLETE"

