"""The power study on planted-edge markets (cryptorl_jax/studies/power.py): for every market
set, family, strength and repeat, a planted market, the walk-forward on it exactly as
`cryptorl wfo` runs it, and the oracle replayed over the same OOS hours; then power.csv,
power_summary.csv, power.md and power.png in <out>/<run_name>-power/. --market-set: the
selection set (market/planted.py, seed = the repeat; settings may be chosen on it), the
held-out set (market/heldout.py: other processes and parameters, seeds from 1,000,000; no
setting is chosen on it) or both, each in its own table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptorl_jax.cli import dry_run
from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.executor_args import add_executor_arguments, executor_kwargs
from cryptorl_jax.cli.style import LIGHTGBM, RAY, command_parser

EXAMPLES = (
    "cryptorl power --config configs/power.yaml --edge trend,none --strength 2,4 --repeats 3",
    "cryptorl power --config configs/power.yaml --edge trend,lead,regime,none \\",
    "    --repeats trend=3,none=3,lead=1 --doc docs/power.md --resume",
    "cryptorl power --config configs/power.yaml --executor ray --address HEAD_IP:6379",
    "cryptorl power --config configs/power.yaml --market-set both --edge trend,lead,regime,none \\",
    "    --strength 2,4 --repeats 3 --doc docs/power.md   # selection and held-out tables",
    "cryptorl power --config configs/power.yaml --repeats 3 --dry-run   # the plan only",
)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a comma list of numbers, got {text!r}") from exc


def main(argv: list[str] | None = None) -> int:
    p = command_parser("power", __doc__, EXAMPLES, (RAY, LIGHTGBM))
    add_config_arguments(p, config_help="the walk-forward config (configs/power.yaml)",
                         set_help="dotted override applied to every run")
    p.add_argument("--edge", default="trend,none",
                   help="comma list of families: trend, lead, regime, none (default trend,none)")
    p.add_argument("--strength", type=_floats, default=None,
                   help="comma list of strengths (default: the planted default)")
    p.add_argument("--repeats", default="3",
                   help="markets (seeds) per cell: a count (3) or per family, e.g. "
                        "trend=3,none=3,lead=1")
    p.add_argument("--market-set", choices=("selection", "heldout", "both"),
                   default="selection",
                   help="which planted markets: selection (market/planted.py, where settings "
                        "may be chosen; the default), heldout (market/heldout.py, never used to "
                        "choose a setting) or both, each in its own table")
    p.add_argument("--doc", default=None, help="also write the page here (e.g. docs/power.md)")
    p.add_argument("--resume", action="store_true", help="keep finished segments")
    p.add_argument("--dry-run", action="store_true", help=dry_run.HELP)
    add_executor_arguments(p)
    args = p.parse_args(argv)
    if args.dry_run:
        return run_command("power", lambda: dry_run.power(args, *_cells(args)))
    command = "cryptorl power " + " ".join(argv if argv is not None else sys.argv[1:])
    return run_command("power", lambda: _run(args, command))


def _cells(args: argparse.Namespace
           ) -> tuple[list[str], list[float], int | dict[str, int], tuple[str, ...]]:
    """(families, strengths, repeats, sets) of --edge, --strength, --repeats, --market-set."""
    from cryptorl_jax.market import planted
    from cryptorl_jax.studies.cells import parse_repeats, parse_sets

    strengths = args.strength or [planted.DEFAULT_STRENGTH]
    families = [f.strip() for f in args.edge.split(",") if f.strip()]
    return families, strengths, parse_repeats(args.repeats), parse_sets(args.market_set)


def _run(args: argparse.Namespace, command: str) -> int:
    from cryptorl_jax.cluster import maybe_executor
    from cryptorl_jax.studies.power import run_power

    cfg = load_cli_config(args)
    families, strengths, repeats, sets = _cells(args)
    with maybe_executor(args.executor, **executor_kwargs(args)) as executor:
        res = run_power(cfg, Path(args.out or cfg.output.dir), families, strengths,
                        repeats, resume=args.resume, executor=executor,
                        doc=args.doc, command=command, sets=sets)
    cols = ["set", "family", "strength", "oracle_sharpe_mean", "sharpe_mean", "recovered_mean",
            "detection_rate"]
    print(res.summary[cols].to_string(index=False))
    print(f"power: {res.seconds / 60:.1f} min; outputs in {res.out_dir}"
          + (f"; page {res.doc}" if res.doc else ""))
    return 0
