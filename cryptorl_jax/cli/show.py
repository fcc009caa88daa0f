"""One finished run in the terminal: the OOS window, the report's verdict paragraph (recomputed
from the written metrics.csv and diagnostics.csv, as summary.md opens with it), the headline
table of the stitched OOS series (metrics.csv's `all` row), PSR, DSR and the timing null's p,
the flags, and where report.html is. RUN is a run directory, or the name of one under results/.
Reads only: nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli.common import run_command
from cryptorl_jax.cli.style import command_parser

EXAMPLES = ("cryptorl show results/quick",
            "cryptorl show quick                 # the same: a name under results/")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("show", __doc__, EXAMPLES)
    p.add_argument("run", metavar="RUN", help="a finished run directory (or a name in results/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("show", lambda: _run(args))


def resolve_run(text: str) -> Path:
    """RUN as a directory: the path itself, else results/RUN."""
    path = Path(text)
    if path.is_dir() or path.is_absolute() or len(path.parts) > 1:
        return path
    under = Path("results") / text
    return under if under.is_dir() else path


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.report import Run
    from cryptorl_jax.report.browse import show_text

    print(show_text(Run.load(resolve_run(args.run))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
