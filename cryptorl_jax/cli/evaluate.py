"""Backtest a saved walk-forward agent on any window of the data, e.g. the newest bars: loads the
segment's scaler, regime model, encoder and agents (default: the latest finished segment) and
writes metrics, an equity PNG and a tearsheet to --out (default:
<run>-eval/segment<K>_<start>_<end>/ beside the run; the run's own files are only read).
A window that starts inside the segment's test hours starts from the run's own book at its
first hour (its hours then equal the run's OOS rows, whose figures are printed beside);
elsewhere, or with --flat, from a flat book. The first line says which start and why.
"""

from __future__ import annotations

import argparse
import sys

from cryptorl_jax.cli.common import add_verbose_argument, apply_verbose, run_command
from cryptorl_jax.cli.style import command_parser

EXAMPLES = ("cryptorl evaluate --run results/quick                  # latest segment, up to the "
            "newest bar",
            "cryptorl evaluate --run results/quick --segment 1 --start 2025-04-01 --end "
            "2025-05-01")


def main(argv: list[str] | None = None) -> int:
    p = command_parser("evaluate", __doc__, EXAMPLES)
    p.add_argument("--run", required=True, help="a run directory, e.g. results/quick")
    p.add_argument("--segment", type=int, default=None, help="segment (default: latest)")
    p.add_argument("--start", default=None,
                   help="first hour (UTC; default: the hour after the segment's train end)")
    p.add_argument("--end", default=None, help="last hour (UTC; default: the newest bar)")
    p.add_argument("--out", default=None,
                   help="output directory (default: <run>-eval/segment<K>_<start>_<end>/ "
                        "beside the run)")
    p.add_argument("--keep-data-end", action="store_true",
                   help="keep the run's data.end instead of reading up to the newest bar")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-run-state", dest="from_run_state", action="store_true",
                       default=None,
                       help="start from the run's own book at --start (the default inside the "
                            "segment's test hours; after them: the book continued from its "
                            "first test hour)")
    start.add_argument("--flat", dest="from_run_state", action="store_false",
                       help="start from a flat book (NAV 1, no position) wherever --start is")
    p.add_argument("--no-tearsheet", action="store_true",
                   help="skip the quantstats tearsheet (the slowest output)")
    add_verbose_argument(p)
    args = p.parse_args(argv)
    apply_verbose(args)
    return run_command("evaluate", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.walkforward.evaluate import evaluate_window
    from cryptorl_jax.walkforward.window import format_figures

    res = evaluate_window(args.run, args.segment, args.start, args.end, out_dir=args.out,
                          keep_data_end=args.keep_data_end, tearsheet=not args.no_tearsheet,
                          from_run_state=args.from_run_state)
    m = res.metrics
    assert res.start is not None
    print(f"evaluate: start: {res.start.reason}")
    print(f"evaluate: {res.oos.index[0]} .. {res.oos.index[-1]} ({len(res.oos)} h, "
          f"{res.in_sample_hours} in-sample): {format_figures(res.figures)} (buy & hold "
          f"{100 * m['benchmark_return']:.2f}%), max drawdown {100 * m['max_drawdown']:.2f}%")
    if res.run_figures is not None:
        own = res.run_figures
        print(f"evaluate: the run's own OOS rows of these hours ({own['hours']} h): "
              f"{format_figures(own)}")
    else:
        print("evaluate: the run's own OOS rows hold none of these hours")
    for note in res.notes:
        print(f"evaluate: {note}")
    print(f"evaluate: outputs in {res.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
