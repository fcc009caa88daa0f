"""The dry run of a tuning study (`cryptorl tune --dry-run`): the trials, the search space, the
nested split of each tuned segment and the training of a trial, computed without Optuna,
training, compiling or writing anything. It checks the search space as `run_study` does
(importing the training step's declarations, which imports JAX, but compiles nothing)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import Config
from cryptorl_jax.market import load_market
from cryptorl_jax.tuning.space import check_study
from cryptorl_jax.tuning.split import nested_split, outer_segments, seen_by_tuning
from cryptorl_jax.tuning.storage import TRIAL_LOG
from cryptorl_jax.walkforward.layout import run_layout
from cryptorl_jax.walkforward.plan import (
    TIME,
    Budget,
    budget_lines,
    data_line,
    text_table,
    training_budget,
)
from cryptorl_jax.walkforward.rates import Rate, estimate_seconds, estimate_text, recorded_rate
from cryptorl_jax.walkforward.segments import make_segments


@dataclass
class TunePlan:
    cfg: Config
    workdir: Path
    storage: str
    study_name: str
    trials: int
    population: int | None
    space: pd.DataFrame
    splits: pd.DataFrame
    seen: list[int]
    budget: Budget
    batches: int  # compiled-step runs per tuned segment: trials, or ceil(trials / P)
    logged: int | None  # trials in the study's trial log (None: no log yet)
    data: str
    rate: Rate | None
    seconds: float | None


def space_table(cfg: Config) -> pd.DataFrame:
    rows = []
    for p in cfg.tune.space:
        values = (" | ".join(str(c) for c in p.choices or ()) if p.type == "categorical"
                  else f"[{p.low:g}, {p.high:g}]")
        rows.append({"key": p.key, "type": p.type, "values": values})
    return pd.DataFrame(rows)


def _logged_trials(workdir: Path) -> int | None:
    path = workdir / TRIAL_LOG
    if not path.is_file():
        return None
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def plan_tune(cfg: Config, workdir: str | Path, trials: int, *, population: int | None = None,
              storage: str | None = None, study_name: str | None = None,
              market: pd.DataFrame | None = None,
              rate_roots: list[Path] | None = None) -> TunePlan:
    """The dry run of `tuning.driver.run_study` with the same arguments."""
    check_study(cfg, trials, population)
    workdir = Path(workdir)
    market = load_market(cfg.data, write_cache=False) if market is None else market
    layout = run_layout(cfg, market)
    # every walk-forward segment of the data (tuning.split.all_wfo_segments, laid out once)
    every = make_segments(len(market), dataclasses.replace(cfg.wfo, segments=None,
                                                           max_segments=None),
                          offset=layout.offset, source=cfg.source)
    tuned = outer_segments(cfg, market, every)
    idx = market.index
    rows = []
    for seg in tuned:
        s = nested_split(cfg, seg, layout.offset)
        rows.append({"segment": seg.index,
                     "inner_train": f"{idx[s.fit_start]:{TIME}} .. "
                                    f"{idx[s.inner_train_end - 1]:{TIME}}",
                     "inner_rows": s.inner_train_end - s.fit_start, "gap_rows": s.gap,
                     "validation": f"{idx[s.val_start]:{TIME}} .. {idx[s.val_end - 1]:{TIME}}",
                     "val_rows": s.val_end - s.val_start})
    p = population or 1
    budget = training_budget(cfg, 1, p)
    batches = math.ceil(trials / p)
    roots = rate_roots if rate_roots is not None else [workdir.parent]
    rate = recorded_rate(cfg.to_dict(), roots)
    seconds = None
    if rate is not None:  # a population batch trains P slots, the padded ones too
        steps = batches * budget.members * budget.env_steps * len(tuned)
        seconds = estimate_seconds(rate, member_env_steps=steps, batches=1,
                                   segments=batches * len(tuned))
    return TunePlan(cfg=cfg, workdir=workdir,
                    storage=storage or f"sqlite:///{(workdir / 'study.db').absolute()}",
                    study_name=study_name or f"{cfg.run_name}-tune", trials=trials,
                    population=population, space=space_table(cfg), splits=pd.DataFrame(rows),
                    seen=seen_by_tuning(every, tuned), budget=budget,
                    batches=batches, logged=_logged_trials(workdir),
                    data=data_line(cfg, layout), rate=rate, seconds=seconds)


def format_tune_plan(plan: TunePlan, *, with_config: bool = True) -> str:
    cfg = plan.cfg
    lines = []
    if with_config:
        lines += [f"# resolved config ({cfg.source or 'defaults'})", cfg.to_yaml().rstrip(), ""]
    how = (f"{plan.population} at a time as one population: {plan.batches} batch(es)"
           if plan.population else "one at a time (each compiles only if it changes a shape)")
    lines += [f"study: '{plan.study_name}' in {plan.storage}; outputs in {plan.workdir} "
              f"(trials.jsonl, best.yaml, overfitting.json)",
              f"trials in this process: {plan.trials}, {how}; objective tune.metric "
              f"{cfg.tune.metric} on the validation rows",
              plan.data, "search space:", text_table(plan.space),
              f"tuned segments (tune.segments {list(cfg.tune.segments)}): each trial trains on "
              f"the inner train rows and is scored on the validation rows; nothing at or after "
              f"a segment's train end is read", text_table(plan.splits),
              *budget_lines(cfg, plan.budget, "trial and segment")]
    if plan.seen:
        lines.append(f"warning: the validation rows hold the test rows of walk-forward "
                     f"segment(s) {plan.seen}: not out of sample for a config chosen here")
    lines.append(f"resume: {plan.workdir / TRIAL_LOG} holds {plan.logged} finished trial(s): "
                 f"the study continues with {plan.trials} more" if plan.logged is not None else
                 f"resume: no trial log in {plan.workdir}: a new study (or one in --study-db)")
    lines.append(estimate_text(plan.rate, plan.seconds))
    return "\n".join(lines)
