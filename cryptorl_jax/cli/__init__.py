"""`cryptorl SUBCOMMAND ...`: the command line of cryptorl_jax (`cryptorl --help` lists them).

Each subcommand is a module of this package with `main(argv) -> int`; the scripts in
scripts/ (`python scripts/wfo.py ...`) call the same functions.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "wfo": "walk-forward study of one config (fit on train rows, backtest out of sample)",
    "tune": "Optuna tuning nested inside the walk-forward train windows",
    "evaluate": "backtest a saved segment's agent on any window of the data",
    "compare": "compare finished runs over the same OOS window (table, equity, tearsheet, DSR)",
    "runs": "list the runs of an output directory: window, Sharpe, DSR, flags, verdict (read only)",
    "show": "one finished run: its verdict paragraph and headline figures (read only)",
    "study": "run the runs of a config's study: section, then compare them and write its doc",
    "power": "the power study: walk-forward runs on planted-edge markets against their oracle",
    "paper": "paper trading: a finished run's agent on live hourly bars, booked like the backtest",
    "download": "download hourly OHLCV (ccxt, yfinance) in the loader's format",
    "bench": "benchmarks as ratios against a baseline measured in the same run (checkout)",
    "train": "one segment end to end (the quick single-split demo)",
    "init": "start a project folder: the bundled configs with absolute paths, and the data",
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: cryptorl SUBCOMMAND [ARGS ...]   (cryptorl SUBCOMMAND --help for its options)",
             "       cryptorl --version               (version, git commit, JAX backend, devices)",
             "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from cryptorl_jax.cli.version import version_text

        print(version_text())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"cryptorl: error: unknown subcommand '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"cryptorl_jax.cli.{name}")
    sys.argv[0] = f"cryptorl {name}"  # argparse's prog in the subcommand's usage line
    rc = module.main(rest)
    return 0 if rc is None else int(rc)


def entry() -> None:  # [project.scripts] cryptorl
    sys.exit(main())
