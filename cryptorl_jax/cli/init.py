"""Start a project folder: the package's configs, ready to run from any directory. Writes
DIR/quick.yaml (the starter: a small but real walk-forward run, minutes on a 2-core
CPU) and the other bundled configs beside it (tune_quick.yaml, study.yaml and power.yaml build
on quick.yaml with `base: quick.yaml`; full.yaml and long_history.yaml stand alone), with
data.data_dir pointed at the data (default: the bundled data of a source checkout or editable
install) and output.dir at DIR/results. Without bundled data it says how to download some.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli.common import run_command
from cryptorl_jax.cli.style import command_parser

EXAMPLES = ("cryptorl init myproject                  # configs + where the bundled data is",
            "cryptorl wfo --config myproject/quick.yaml",
            "cryptorl init myproject --data /data/hourly --force   # other data, overwrite")


def main(argv: list[str] | None = None) -> int:
    p = command_parser("init", __doc__, EXAMPLES)
    p.add_argument("dir", help="the project folder (created if missing)")
    p.add_argument("--data", default=None,
                   help="folder of the hourly data files (default: the bundled data if this "
                        "installation has it, else DIR/data)")
    p.add_argument("--force", action="store_true", help="replace configs already in DIR")
    args = p.parse_args(argv)
    return run_command("init", lambda: _run(args), errors=(FileExistsError,))


def download_hint(data_dir: Path) -> list[str]:
    """How to fill data_dir with the files the starter config reads."""
    return [f"no bundled data in this installation (a wheel carries none): download hourly "
            f"bars into {data_dir} (docs/data.md), e.g.",
            f"  cryptorl download ccxt --symbol BTC/USDT --out {data_dir / 'BTC_1h.csv.gz'}",
            f"  cryptorl download ccxt --symbol ETH/USDT --out {data_dir / 'ETH_1h.csv.gz'}",
            f"  cryptorl download yfinance --out-dir {data_dir}   # SPY and DXY proxies: point "
            "data.assets' files at them, or drop those assets from quick.yaml"]


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.config.starter import STARTER, bundled_data_dir, write_starter

    dest = Path(args.dir).absolute()
    bundled = bundled_data_dir()
    data = Path(args.data) if args.data else (bundled or dest / "data")
    starter = write_starter(dest, data, force=args.force)
    print(f"init: wrote {', '.join(p.name for p in starter.files)} to {starter.dest}")
    if args.data:
        print(f"init: data.data_dir is {starter.data_dir}")
    elif bundled is not None:
        print(f"init: data.data_dir is the bundled data, {bundled} (hourly BTC, ETH, SPY, DXY "
              f"and more; {bundled / 'SOURCES.md'})")
    else:
        print("init: " + "\n".join(download_hint(starter.data_dir)))
    starter_cfg = starter.dest / STARTER
    print(f"init: results go to {starter.results}; next:\n"
          f"  cryptorl wfo --config {starter_cfg} --dry-run   # the plan, nothing trained\n"
          f"  cryptorl wfo --config {starter_cfg}             # the run (minutes on 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
