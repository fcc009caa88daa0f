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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--segment", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from cryptorl_jax.training.logging import configure_cli_logging

    configure_cli_logging()
    from cryptorl_jax.config import ConfigError, load_config, with_overrides
    from cryptorl_jax.market import DataValidationError
    from cryptorl_jax.walkforward import driver

    try:
        cfg = load_config(args.config, args.overrides)
        cfg = with_overrides(cfg, [f"wfo.segments=[{args.segment}]", "wfo.max_segments=null",
                                   f"run_name={cfg.run_name}-demo"])
        workdir = Path(args.out or cfg.output.dir) / cfg.run_name
        result = driver.run(cfg, workdir)
    except (ConfigError, DataValidationError, FileNotFoundError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    rep = result.report
    print(f"train: segment {args.segment} in {result.seconds:.0f} s: OOS sharpe "
          f"{rep['sharpe']:.2f}, total return {100 * rep['total_return']:.2f}%; "
          f"outputs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
