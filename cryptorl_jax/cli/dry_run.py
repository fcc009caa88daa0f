"""`--dry-run` of `cryptorl wfo`, `tune`, `power` and `study`: print what the command would do
(the resolved config and its digest, the segments, the training budget, the run directories,
what --resume would skip and an estimate of the time) without training, compiling or writing
anything (walkforward.plan, tuning.plan, studies.plan). wfo, power and study import no JAX;
tune imports the training step's declarations to check its search space."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptorl_jax.cli.common import load_cli_config

HELP = ("print the resolved config, its digest, the segments, the training budget, the run "
        "directory, what --resume would skip and an estimate of the time; train, compile and "
        "write nothing")


def _header(name: str) -> None:
    print(f"{name} --dry-run: nothing is trained, compiled or written")


def wfo(args: argparse.Namespace) -> int:
    from cryptorl_jax.walkforward.plan import format_run_plan, plan_run

    if args.report_only:
        raise ValueError("--dry-run plans a run; --report-only rebuilds a report: give one")
    cfg = load_cli_config(args, [f"wfo.segments=[{args.segments}]"] if args.segments else [])
    plan = plan_run(cfg, Path(args.out or cfg.output.dir) / cfg.run_name, resume=args.resume)
    _header("wfo")
    print(format_run_plan(plan))
    return 0


def tune(args: argparse.Namespace) -> int:
    from cryptorl_jax.tuning.plan import format_tune_plan, plan_tune
    from cryptorl_jax.tuning.storage import study_digest

    cfg = load_cli_config(args)
    plan = plan_tune(cfg, Path(args.out or cfg.output.dir) / f"{cfg.run_name}-tune",
                     args.trials, population=args.population, storage=args.study_db,
                     study_name=args.study_name)
    _header("tune")
    print(format_tune_plan(plan))
    print(f"base config digest: {study_digest(cfg)} (what the study records and a resumed "
          "study must match)")
    return 0


def power(args: argparse.Namespace, families: list[str], strengths: list[float],
          repeats: int | dict[str, int], sets: tuple[str, ...] = ("selection",)) -> int:
    from cryptorl_jax.studies.plan import format_study_plan, plan_power

    cfg = load_cli_config(args)
    plan = plan_power(cfg, Path(args.out or cfg.output.dir), families, strengths, repeats,
                      resume=args.resume, sets=sets)
    _header("power")
    print(format_study_plan(plan))
    return 0


def study(args: argparse.Namespace) -> int:
    from cryptorl_jax.studies.plan import format_study_plan, plan_study

    cfg = load_cli_config(args)
    plan = plan_study(cfg, Path(args.out or cfg.output.dir), resume=args.resume, doc=args.doc)
    _header("study")
    print(format_study_plan(plan))
    return 0
