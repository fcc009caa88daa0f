"""Walk-forward study: cryptorl wfo --config FILE [--set key=value ...] [--out DIR]
[--resume] [--segments 0,3] [--report-only] [--dry-run] [--executor ray [--address HOST:PORT]
[--gpus-per-task N] [--shared-fs]]. Results go to DIR/<run_name>/ (default: results).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli import dry_run
from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.executor_args import add_executor_arguments, executor_kwargs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
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
    print(f"wfo: {len(result.segments_run)} segment(s) run, {len(result.segments_skipped)} "
          f"skipped, {result.seconds:.0f} s; report in {result.workdir}")
    rep = result.report
    if rep.get("segments"):
        print(f"wfo: OOS sharpe {rep['sharpe']:.2f}, total return "
              f"{100 * rep['total_return']:.2f}%, deflated sharpe {rep['dsr']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
