"""Run a study (the `study:` section of a config), compare its runs and write its doc:

    cryptorl study --config configs/study.yaml [--resume] [--out DIR] [--doc PATH]

Run i is the config with study.runs[i].set applied, named <run_name>-<study.runs[i].name>,
written to DIR/<that name>/ (default DIR: output.dir), exactly as `cryptorl wfo --config FILE
--set ... --set run_name=...` would write it. The comparison goes to DIR/<run_name>-compare/
and the doc to --doc (default: study.doc). With --resume, finished segments are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a config with a study: section")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="dotted override applied to every run")
    p.add_argument("--out", default=None, help="results directory (default: output.dir)")
    p.add_argument("--doc", default=None, help="the study's Markdown page (default: study.doc)")
    p.add_argument("--resume", action="store_true", help="keep finished segments")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    from cryptorl_jax.training.logging import configure_cli_logging

    configure_cli_logging()
    from cryptorl_jax.config import ConfigError, load_config
    from cryptorl_jax.market import DataValidationError
    from cryptorl_jax.studies.study import run_study

    try:
        overrides = list(args.overrides) + (["output.progress=false"] if args.quiet else [])
        cfg = load_config(args.config, overrides)
        res = run_study(cfg, Path(args.out or cfg.output.dir), resume=args.resume,
                        doc=args.doc)
    except (ConfigError, DataValidationError, FileNotFoundError, ValueError) as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("study: interrupted; run again with --resume to continue", file=sys.stderr)
        return 130
    for name, s in res.seconds.items():
        print(f"study: run {name}: {s:.0f} s")
    print(f"study: comparison in {res.compare_dir}" + (f"; doc {res.doc}" if res.doc else ""))
    return 0
