"""Optuna tuning nested inside the walk-forward train windows: each trial trains on the first
rows of the configured segments' train windows and is scored on their last rows, so no test
row is seen. Writes <out>/<run_name>-tune/ (study.db, trials.jsonl, best.yaml,
overfitting.json with the best trial's DSR and the study's PBO); run the best config with
`cryptorl wfo --config <out>/<run_name>-tune/best.yaml`. Several processes may share one
--study-db: give each a distinct --worker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli import dry_run
from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.executor_args import add_executor_arguments, executor_kwargs
from cryptorl_jax.cli.style import OPTUNA, RAY, command_parser

EXAMPLES = (
    "cryptorl tune --config configs/tune_quick.yaml --trials 8",
    "cryptorl tune --config configs/tune_quick.yaml --trials 8 --population 4   # 4 at a time",
    "cryptorl tune --config configs/tune_quick.yaml --trials 4 --worker 1 \\",
    "    --study-db sqlite:///results/quick-tune/study.db       # a second process",
    "cryptorl wfo --config results/quick-tune/best.yaml         # then the best config",
    "cryptorl tune --config configs/tune_quick.yaml --trials 8 --dry-run   # the plan only",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser("tune", __doc__, EXAMPLES, (OPTUNA, RAY))
    add_config_arguments(p, config_help="YAML config with a tune: section",
                         set_help="dotted override, e.g. tune.segments=[0,1]",
                         out_help="directory for <run_name>-tune/ (default: output.dir)")
    p.add_argument("--trials", type=int, required=True, help="trials to run in this process")
    p.add_argument("--study-db", default=None,
                   help="Optuna storage URL (default: sqlite:///<out>/study.db)")
    p.add_argument("--study-name", default=None, help="default: <run_name>-tune")
    p.add_argument("--worker", type=int, default=0,
                   help="distinct number per process sharing one storage (sampler seed)")
    p.add_argument("--population", type=int, default=None, metavar="P",
                   help="ask for P trials at a time and train them as one population (one "
                        "compilation for the study; the space may hold only the dynamic "
                        "hyperparameters: learning rates, gamma, tau, entropy, grad norm, "
                        "reward scale, curriculum churn/smooth)")
    p.add_argument("--dry-run", action="store_true", help=dry_run.HELP)
    add_executor_arguments(p, tuning=True)
    return p.parse_args(argv)


def _fmt(x) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def overfitting_text(stats: dict, path: Path) -> str:
    """The study's selection statistics, as tune.py prints them."""
    lines = [f"tune: {stats['n_trials']} trials tried ({stats['n_completed']} completed, "
             f"{stats['n_pruned']} pruned, {stats['n_failed']} failed)",
             f"tune: best trial's Deflated Sharpe on its validation rows (N = "
             f"{stats['n_trials']}): {_fmt(stats.get('best_trial_dsr'))}; its PSR "
             f"{_fmt(stats.get('best_trial_psr'))}"]
    pbo = stats.get("pbo")
    if pbo is not None:
        d = stats["pbo_detail"]
        lines.append(f"tune: Probability of Backtest Overfitting (CSCV, {d['n_blocks']} blocks, "
                     f"{d['n_combinations']} combinations): {pbo:.3f}; logit median "
                     f"{d['logits_summary']['median']:.2f}; degradation slope "
                     f"{_fmt(d['degradation_slope'])}, P[OOS loss of the IS best] "
                     f"{_fmt(d['prob_oos_loss'])}")
    else:
        lines.append("tune: Probability of Backtest Overfitting: undefined")
    lines += [f"tune: note: {n}" for n in stats.get("notes", [])]
    lines.append(f"tune: overfitting statistics in {path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trials < 1:
        print(f"tune: error: --trials must be >= 1, got {args.trials}", file=sys.stderr)
        return 2
    if args.population is not None and args.population < 1:
        print(f"tune: error: --population must be >= 1, got {args.population}", file=sys.stderr)
        return 2
    if args.dry_run:
        return run_command("tune", lambda: dry_run.tune(args))
    from cryptorl_jax.cluster import ClusterError

    return run_command("tune", lambda: _run(args), errors=(ClusterError,),
                       interrupted="run the same command again to continue the study")


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.core.extras import require

    require("optuna", "cryptorl tune")  # before any data is read
    from cryptorl_jax.cluster import maybe_executor
    from cryptorl_jax.tuning.driver import run_study

    cfg = load_cli_config(args)
    workdir = Path(args.out or cfg.output.dir) / f"{cfg.run_name}-tune"
    if args.executor == "ray" and args.population is None:
        raise ValueError("--executor ray sends population batches to the tasks: give "
                         "--population P")
    with maybe_executor(args.executor, **executor_kwargs(args)) as executor:
        result = run_study(cfg, args.trials, storage=args.study_db,
                           study_name=args.study_name, workdir=workdir, worker=args.worker,
                           population=args.population, executor=executor)
    print(f"tune: study '{result.study_name}': ran trials {result.trials_run} in "
          f"{result.seconds:.0f} s; {result.n_trials} finished trials in {result.storage}; "
          f"trial log {result.trial_log}")
    if result.best_config is None:
        from cryptorl_jax.tuning.driver import no_completed_trial_text

        print(f"tune: no trial completed, so no best config was written: "
              f"{no_completed_trial_text(result.study)} (trial log {result.trial_log})",
              file=sys.stderr)
        return 1
    print(f"tune: best trial {result.best_trial}: {cfg.tune.metric} {result.best_value:.4g} "
          f"with {result.best_params}")
    print(overfitting_text(result.overfitting, result.best_config.with_name("overfitting.json")))
    print(f"tune: best config {result.best_config}; run it with: cryptorl wfo "
          f"--config {result.best_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
