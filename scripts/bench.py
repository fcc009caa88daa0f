"""Benchmarks, as ratios against a baseline measured in the same run (`cryptorl bench NAME`, or
`python scripts/bench.py NAME` in a checkout). Each sub-benchmark lives in
scripts/benches/<name>.py and ends with one JSON line; `cryptorl bench NAME --help` gives its
options. Never put speed into a timed test: this script is where speed is measured.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from cryptorl_jax.cli.style import command_parser, epilog

BENCH_PACKAGES = ("the peers (sb3-contrib, sbx, gymnax, ...) need the 'bench' extra:\n"
                  '    pip install -e ".[bench]" in the checkout')

BENCHES = ("env", "pendulum", "train", "tune", "cost")
EXAMPLES = (
    "cryptorl bench env        # jitted vmapped env vs a lean numpy env loop",
    "cryptorl bench pendulum   # TQC learning quality and speed on Pendulum-v1",
    "cryptorl bench train      # the fused training step (env + replay + TQC [+ MAE])",
    "cryptorl bench train --population 4   # P members in one step vs P = 1",
    "cryptorl bench tune       # an 8-trial study: one trial at a time vs populations",
    "cryptorl bench cost --config configs/full.yaml --population 32   # XLA's counts, no run",
)


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    parser = command_parser("bench", __doc__, EXAMPLES, (BENCH_PACKAGES,))
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(BENCHES) + "}",
                                help="the benchmark to run")
    modules = {}
    for name in BENCHES:
        module = importlib.import_module(f"benches.{name}")
        modules[name] = module
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc,
                           epilog=epilog([e for e in EXAMPLES if e.split()[2] == name],
                                         (BENCH_PACKAGES,)),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    modules[args.bench].main(args)


if __name__ == "__main__":
    main()
