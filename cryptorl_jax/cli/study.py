"""Run a study (the `study:` section of a config), compare its runs and write its doc. Run i is
the config with study.runs[i].set applied, named <run_name>-<study.runs[i].name>, written to
<out>/<that name>/ (default out: output.dir), exactly as `cryptorl wfo --config FILE --set ...
--set run_name=...` would write it. The comparison goes to <out>/<run_name>-compare/ and the
doc to --doc (default: study.doc). With --resume, finished segments are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptorl_jax.cli import dry_run
from cryptorl_jax.cli.common import add_config_arguments, load_cli_config, run_command
from cryptorl_jax.cli.style import LIGHTGBM, command_parser

EXAMPLES = ("cryptorl study --config configs/study.yaml --resume         # about 69 min on 2 cores",
            "cryptorl study --config configs/study.yaml --out /tmp/study --doc /tmp/study.md")


def main(argv: list[str] | None = None) -> int:
    p = command_parser("study", __doc__, EXAMPLES, (LIGHTGBM,))
    add_config_arguments(p, config_help="a config with a study: section",
                         set_help="dotted override applied to every run")
    p.add_argument("--doc", default=None, help="the study's Markdown page (default: study.doc)")
    p.add_argument("--resume", action="store_true", help="keep finished segments")
    p.add_argument("--dry-run", action="store_true", help=dry_run.HELP)
    args = p.parse_args(argv)
    if args.dry_run:
        return run_command("study", lambda: dry_run.study(args))
    return run_command("study", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.studies.study import run_study

    cfg = load_cli_config(args)
    res = run_study(cfg, Path(args.out or cfg.output.dir), resume=args.resume, doc=args.doc)
    for name, s in res.seconds.items():
        print(f"study: run {name}: {s:.0f} s")
    print(f"study: comparison in {res.compare_dir}" + (f"; doc {res.doc}" if res.doc else ""))
    return 0
