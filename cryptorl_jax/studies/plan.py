"""The dry runs of the studies (`cryptorl power --dry-run`, `cryptorl study --dry-run`): the
study's plan (its runs: families x strengths x repeats of planted markets, or study.runs), each
run's directory and what --resume would skip, the segment table and training budget once for
the runs that share them, and an estimate from a rate recorded on this machine. Nothing is
trained, compiled or written, and nothing here imports JAX."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import Config, ConfigError
from cryptorl_jax.market import load_market
from cryptorl_jax.market.planted import META_FILE
from cryptorl_jax.studies.cells import cells, market_dir, run_config, study_configs
from cryptorl_jax.walkforward.layout import run_layout
from cryptorl_jax.walkforward.plan import (
    RunPlan,
    budget_lines,
    data_line,
    plan_run,
    resume_lines,
    text_table,
)
from cryptorl_jax.walkforward.rates import duration_text, estimate_text


@dataclass
class StudyPlan:
    kind: str  # "power" or "study"
    cfg: Config
    out_dir: Path
    outputs: list[str]  # what the study writes besides its runs
    runs: pd.DataFrame  # one row per run
    plans: list[RunPlan]  # one per run, in order
    names: list[str]


def _run_row(plan: RunPlan) -> dict[str, object]:
    r = plan.resume
    state = ("refused: another config" if r.refused else
             f"{len(r.finished)} DONE" + (f", {len(r.started)} started" if r.started else "")
             if r.exists else "new")
    return {"run directory": str(plan.workdir), "config digest": plan.digest,
            "segments": len(plan.layout.segments),
            "to run": len(plan.pending), "in run dir": state}


def plan_power(cfg: Config, out_dir: str | Path, families: Sequence[str],
               strengths: Sequence[float], repeats: int | Mapping[str, int], *,
               resume: bool = False, market: pd.DataFrame | None = None,
               rate_roots: list[Path] | None = None,
               sets: Sequence[str] = ("selection",)) -> StudyPlan:
    """The dry run of `studies.power.run_power`: every cell's market and run, set by set. The
    segments are laid out on the template data (config's data.data_dir): a planted market
    keeps its timestamps, so every run has the same segments."""
    out_dir = Path(out_dir)
    todo = cells(families, strengths, repeats, sets)
    if cfg.data.data_dir is None:
        raise ConfigError("data.data_dir", "the power study needs a template data directory",
                          cfg.source)
    market = load_market(cfg.data, write_cache=False) if market is None else market
    layout = run_layout(cfg, market)
    rows, plans = [], []
    for cell in todo:
        data_dir = market_dir(out_dir, cfg, cell)
        run_cfg = run_config(cfg, cell, data_dir)
        plan = plan_run(run_cfg, out_dir / run_cfg.run_name, resume=resume, layout=layout,
                        rate_roots=rate_roots if rate_roots is not None else [out_dir])
        plans.append(plan)
        rows.append({"set": cell.set, "family": cell.family, "strength": cell.strength,
                     "repeat": cell.repeat, "seed": cell.seed,
                     "market": "written" if (data_dir / META_FILE).is_file() else "to write",
                     **_run_row(plan)})
    outputs = [f"markets in {out_dir / (cfg.run_name + '-markets')}/",
               f"power.csv, power_summary.csv, power.md, power.png in "
               f"{out_dir / (cfg.run_name + '-power')}/"]
    return StudyPlan("power", cfg, out_dir, outputs, pd.DataFrame(rows), plans,
                     [c.tag for c in todo])


def plan_study(cfg: Config, out_dir: str | Path, *, resume: bool = False,
               doc: str | Path | None = None,
               rate_roots: list[Path] | None = None) -> StudyPlan:
    """The dry run of `studies.study.run_study`: every run of study.runs."""
    out_dir = Path(out_dir)
    rows, plans, names = [], [], []
    markets: dict[object, pd.DataFrame] = {}  # one load per distinct data section
    for name, run_cfg in study_configs(cfg):
        if run_cfg.data not in markets:
            markets[run_cfg.data] = load_market(run_cfg.data, write_cache=False)
        plan = plan_run(run_cfg, out_dir / run_cfg.run_name, resume=resume,
                        market=markets[run_cfg.data],
                        rate_roots=rate_roots if rate_roots is not None else [out_dir])
        plans.append(plan)
        names.append(name)
        sets = " ".join(next(r.set for r in cfg.study.runs if r.name == name)) or "(none)"
        rows.append({"run": name, "set": sets, **_run_row(plan)})
    page = doc if doc is not None else cfg.study.doc
    outputs = [f"comparison in {out_dir / (cfg.run_name + '-compare')}/"
               + (f"; the study's page {page}" if page else "")]
    return StudyPlan("study", cfg, out_dir, outputs, pd.DataFrame(rows), plans, names)


def format_study_plan(plan: StudyPlan, *, with_config: bool = True) -> str:
    """The plan, then each distinct segment table and budget once (naming the runs that share
    it), what --resume would skip per run, and the estimate of all runs."""
    cfg = plan.cfg
    lines = []
    if with_config:
        lines += [f"# resolved config ({cfg.source or 'defaults'})", cfg.to_yaml().rstrip(), ""]
    what = ("families x strengths x repeats of planted markets" if plan.kind == "power"
            else "study.runs")
    n = len(plan.plans)
    lines += [f"{plan.kind}: {n} walk-forward run{'s' if n != 1 else ''} ({what}) in "
              f"{plan.out_dir}; "
              + "; ".join(plan.outputs), text_table(plan.runs)]
    source = (" (laid out on the template data, config's data.data_dir: a planted market "
              "keeps its timestamps)" if plan.kind == "power" else "")
    tables: dict[str, list[int]] = {}
    budgets: dict[tuple[str, ...], list[int]] = {}
    for i, p in enumerate(plan.plans):
        tables.setdefault(p.table.drop(columns="in run dir").to_json(), []).append(i)
        budgets.setdefault(tuple(budget_lines(p.cfg, p.budget)), []).append(i)
    for members in tables.values():
        p = plan.plans[members[0]]
        data_cfg = cfg if plan.kind == "power" else p.cfg
        lines += [f"segments of {_who(plan, members)}{source}:", data_line(data_cfg, p.layout),
                  text_table(p.table.drop(columns="in run dir"))]
    for text, members in budgets.items():
        lines += [f"training of {_who(plan, members)}:", *text]
    for name, p in zip(plan.names, plan.plans):
        if p.resume.exists:
            lines += [f"{name}: {line}" for line in resume_lines(p)]
    lines.append(study_estimate(plan.plans))
    if plan.kind == "power":
        lines.append(target_line(plan))
    return "\n".join(lines)


TARGET_SECONDS = 3600.0  # the power page's target: about an hour on the 2-core CPU (issue 40)


def target_line(plan: StudyPlan) -> str:
    """How the plan compares with the page's ~1-hour target: per set the runs and their
    estimate, and how many repeats of every (set, family, strength) cell fit in the hour."""
    plans = plan.plans
    if not plans or any(p.seconds is None for p in plans):
        return (f"target: about {duration_text(TARGET_SECONDS)} for the page; no estimate to "
                "compare (no rate recorded here)")
    runs = plan.runs.assign(seconds=[p.seconds for p in plans])
    per_set = "; ".join(f"{s}: {len(g)} runs, about {duration_text(float(g['seconds'].sum()))}"
                        for s, g in runs.groupby("set", sort=False))
    n_cells = len(runs.groupby(["set", "family", "strength"]))
    per_run = float(runs["seconds"].mean())
    fit = int(TARGET_SECONDS // (per_run * n_cells))
    total = float(runs["seconds"].sum())
    return (f"target: about {duration_text(TARGET_SECONDS)} for the page on this machine; "
            f"this plan {duration_text(total)} ({total / TARGET_SECONDS:.1f}x; {per_set}); "
            f"at about {duration_text(per_run)} a run, {fit} repeat{'s' if fit != 1 else ''} "
            f"of each of its {n_cells} (set, family, strength) cells fit in the hour (one "
            f"repeat of each: about {duration_text(per_run * n_cells)})")


def _who(plan: StudyPlan, members: list[int]) -> str:
    if len(members) == len(plan.plans):
        return "every run"
    return "run" + ("s " if len(members) > 1 else " ") + ", ".join(plan.names[i]
                                                                 for i in members)


def study_estimate(plans: list[RunPlan]) -> str:
    """The sum of the runs' estimates (each from the rate recorded on this machine)."""
    if not plans or any(p.seconds is None for p in plans):
        return estimate_text(None, None)
    total = sum(p.seconds for p in plans)  # type: ignore[misc]
    return (f"estimate of all {len(plans)} runs: about {duration_text(total)}; each run's "
            + estimate_text(plans[0].rate, plans[0].seconds))
