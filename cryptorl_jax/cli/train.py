"""Quick single-split demo (the original's train_demo): one segment, end to end.

    cryptorl train --config configs/quick.yaml [--segment K] [--set key=value ...]

Fits the features' transforms, pre-trains the MAE, trains TQC on the segment's train rows and
backtests the test rows, writing the usual outputs to <out>/<run_name>-demo/. It is
`cryptorl wfo` restricted to one segment; use `cryptorl wfo` for the walk-forward study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, out_help="results directory (default: output.dir); the run goes "
                                     "to <out>/<run_name>-demo/")
    p.add_argument("--segment", type=int, default=0)
    args = p.parse_args(argv)
    return run_command("train", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.walkforward import driver

    base = load_cli_config(args)
    cfg = load_cli_config(args, [f"wfo.segments=[{args.segment}]", "wfo.max_segments=null",
                                 f"run_name={base.run_name}-demo"])
    workdir = Path(args.out or cfg.output.dir) / cfg.run_name
    result = driver.run(cfg, workdir)
    rep = result.report
    print(f"train: segment {args.segment} in {result.seconds:.0f} s: OOS sharpe "
          f"{rep['sharpe']:.2f}, total return {100 * rep['total_return']:.2f}%; "
          f"outputs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
