"""Compare finished walk-forward runs over the same OOS window. Writes <out> (default: <output
dir of the first run>/compare-<names>/) with comparison.csv and comparison.md (one row per run:
stitched-OOS metrics, PSR, the Deflated Sharpe over the runs compared, timing-null p-value,
seed dispersion), baselines.csv, equity.png (the runs' equity curves overlaid) and
tearsheet.html (one quantstats tearsheet, every run a strategy column).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptorl_jax.cli.common import run_command
from cryptorl_jax.cli.style import command_parser

EXAMPLES = ("cryptorl compare results/study-none results/study-pretrained",
            "cryptorl compare results/a results/b --label A --label B --out /tmp/a-vs-b "
            "--no-tearsheet")


def main(argv: list[str] | None = None) -> int:
    p = command_parser("compare", __doc__, EXAMPLES)
    p.add_argument("runs", nargs="+", help="finished run directories")
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--label", action="append", default=None,
                   help="a name per run, in order (default: each run's run_name)")
    p.add_argument("--no-tearsheet", action="store_true",
                   help="skip the multi-strategy quantstats tearsheet")
    args = p.parse_args(argv)
    return run_command("compare", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.report.markdown import markdown_table
    from cryptorl_jax.report.runs import write_comparison

    runs = [Path(r).resolve() for r in args.runs]  # `compare .` too: beside the runs
    out = Path(args.out) if args.out else (
        runs[0].parent / ("compare-" + "-".join(r.name for r in runs)))
    cmp = write_comparison(args.runs, out, labels=args.label, tearsheet=not args.no_tearsheet)
    print(markdown_table(cmp.table[["total_return", "sharpe", "max_drawdown", "psr",
                                    "dsr_compared", "timing_p_value"]], ".3g"))
    print(f"compare: {cmp.n_runs} runs; outputs in {out}")
    return 0
