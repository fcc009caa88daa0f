"""Quick single-split demo (the original's train_demo): one segment end to end. Fits the
features' transforms, pre-trains the MAE, trains TQC on the segment's train rows and backtests
its test rows, writing the usual outputs to <out>/<run_name>-demo/. It is `cryptorl wfo`
restricted to one segment; use `cryptorl wfo` for the walk-forward study.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.style import LIGHTGBM, TENSORBOARD, command_parser

EXAMPLES = ("cryptorl train --config configs/quick.yaml                # segment 0",
            "cryptorl train --config configs/quick.yaml --segment 2 --set train.n_seeds=1")


def main(argv: list[str] | None = None) -> int:
    p = command_parser("train", __doc__, EXAMPLES, (LIGHTGBM, TENSORBOARD))
    add_config_arguments(p, out_help="results directory (default: output.dir); the run goes "
                                     "to <out>/<run_name>-demo/")
    p.add_argument("--segment", type=int, default=0,
                   help="the walk-forward segment to run, 0 = the first (default 0)")
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
    from cryptorl_jax.report.browse import sharpe_text

    print(f"train: segment {args.segment} in {result.seconds:.0f} s: OOS sharpe "
          f"{sharpe_text(rep['sharpe'])}, total return {100 * rep['total_return']:.2f}%; "
          f"outputs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
