"""List the runs of an output directory: every run registered in its runs.jsonl (the registry
that counts the configurations tried over an OOS window) and every run directory in it, with
its OOS window, stitched Sharpe ('flat' when no position was held), Deflated Sharpe, flags, the
verdict's first sentence, config digest and date (UTC), oldest first. An unfinished run or a
registered run whose folder is gone says so in the verdict column. Reads only: nothing is
written, no lock is taken.
"""

from __future__ import annotations

import argparse
import sys

from cryptorl_jax.cli.common import run_command
from cryptorl_jax.cli.style import command_parser

EXAMPLES = ("cryptorl runs                       # the runs under results/",
            "cryptorl runs results/study         # another output directory",
            "cryptorl runs --json > runs.json    # every field, for scripts (NaN as null)")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("runs", __doc__, EXAMPLES)
    p.add_argument("dir", nargs="?", default="results",
                   help="an output directory (default: results, the configs' output.dir)")
    p.add_argument("--json", action="store_true",
                   help="print the rows as a JSON list (full digests, windows and paths)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("runs", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.report.browse import list_runs, runs_json, runs_text

    rows = list_runs(args.dir)
    if args.json:
        print(runs_json(rows))
    elif rows:
        print(runs_text(rows))
    else:
        print(f"runs: no run in {args.dir} (no runs.jsonl record and no run directory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
