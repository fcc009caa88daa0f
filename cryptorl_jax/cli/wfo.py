"""Walk-forward study of one config: for each segment, fit the features' transforms, the regime
model, the encoder and the agents on its train rows only, then backtest its test rows out of
sample; the test windows are stitched into one OOS series and reported against baselines, a
timing null and the runs tried over the same window. Results go to <out>/<run_name>/ (default
out: the config's output.dir, results/); the last lines printed are the verdict and where
report.html is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli import dry_run
from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.executor_args import add_executor_arguments, executor_kwargs
from cryptorl_jax.cli.style import LIGHTGBM, RAY, TENSORBOARD, command_parser

EXAMPLES = (
    "cryptorl wfo --config configs/quick.yaml                     # minutes on a 2-core CPU",
    "cryptorl wfo --config configs/quick.yaml --resume            # continue where it stopped",
    "cryptorl wfo --config configs/quick.yaml --set seed=1 --set run_name=quick-s1",
    "cryptorl wfo --config configs/quick.yaml --segments 0,1      # two processes may split",
    "cryptorl wfo --config configs/quick.yaml --segments 2 --resume   # ... the segments",
    "cryptorl wfo --config configs/quick.yaml --report-only       # rebuild the report",
    "cryptorl wfo --config configs/full.yaml --executor ray --address HEAD_IP:6379",
    "cryptorl wfo --config configs/quick.yaml --dry-run           # the plan only",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser("wfo", __doc__, EXAMPLES, (RAY, LIGHTGBM, TENSORBOARD))
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="skip finished segments; resume an unfinished one from its checkpoint")
    p.add_argument("--segments", default=None, help="comma-separated segment numbers, e.g. 0,3")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the aggregate report from the finished segments")
    p.add_argument("--dry-run", action="store_true", help=dry_run.HELP)
    add_executor_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return run_command("wfo", lambda: dry_run.wfo(args))
    from cryptorl_jax.cluster import ClusterError
    from cryptorl_jax.walkforward.writer import SegmentArchiveError

    return run_command("wfo", lambda: _run(args), errors=(ClusterError, SegmentArchiveError))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.cluster import maybe_executor
    from cryptorl_jax.walkforward import driver

    cfg = load_cli_config(args, [f"wfo.segments=[{args.segments}]"] if args.segments else [])
    workdir = Path(args.out or cfg.output.dir) / cfg.run_name
    with maybe_executor(args.executor if not args.report_only else "local",
                        **executor_kwargs(args)) as executor:
        result = driver.run(cfg, workdir, resume=args.resume, report_only=args.report_only,
                            executor=executor)
    print("\n".join(result_lines(result)))
    return 0


def result_lines(result) -> list[str]:
    """What wfo prints at the end: segments run, the stitched figures ('flat' where no position
    was held and the Sharpe is undefined), then the verdict's first sentence (recomputed from
    the written metrics.csv and diagnostics.csv) and where report.html is."""
    import math

    from cryptorl_jax.report import Run
    from cryptorl_jax.report.browse import verdict_sentence, written_verdict

    lines = [f"wfo: {len(result.segments_run)} segment(s) run, {len(result.segments_skipped)} "
             f"skipped, {result.seconds:.0f} s"]
    rep = result.report
    if not rep.get("segments"):
        return [*lines, f"wfo: no finished segment in {result.workdir}, so no report"]
    sr = float(rep["sharpe"])
    dsr = math.nan if rep.get("dsr") is None else float(rep["dsr"])
    ret = f"total return {100 * rep['total_return']:.2f}%"
    lines.append(f"wfo: OOS sharpe {sr:.2f}, {ret}, deflated sharpe {dsr:.3f}"
                 if math.isfinite(sr) else
                 f"wfo: OOS flat: no position held, so the Sharpe and DSR are undefined; {ret}")
    run = Run(result.workdir)
    lines.append(f"wfo: {verdict_sentence(written_verdict(run)[1])}")
    lines.append(f"wfo: report {run.dir.report}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
