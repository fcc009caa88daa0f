"""A tuning study's storage and files: the Optuna storage and its lock, the base config's digest,
the trial log (trials.jsonl), the exported best.yaml and overfitting.json."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cryptorl_jax.backtest.overfitting import selection_overfitting
from cryptorl_jax.config import (
    Config,
    digest_dict,
    identity,
    load_config,
    with_overrides,
)
from cryptorl_jax.core.io import write_atomic, write_json
from cryptorl_jax.tuning.space import override_text

TRIAL_LOG = "trials.jsonl"
BEST_CONFIG = "best.yaml"
OVERFITTING = "overfitting.json"
VAL_RETURNS = "val_returns"  # trial user attr: {segment: [hourly validation returns]}


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
    """The digest of the base config a study tunes: `config.identity(cfg, study=True)`."""
    return identity(cfg, study=True).digest()


def legacy_study_digest(cfg: Config) -> str:
    """The digest studies recorded before `config.identity` (the output section and
    wfo.trial_log removed from the dict, not reset): accepted when such a study resumes."""
    raw = digest_dict(cfg.to_dict())
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

