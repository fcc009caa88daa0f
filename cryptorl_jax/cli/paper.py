"""Paper trading: a finished run's agent on live hourly bars, through the backtest's own code.

Each cycle extends the data files (copies of the run's in <book>/data/, or --data-dir in place;
ccxt for the crypto assets, yfinance for the context assets; --source changes an asset's
source), rebuilds the causal features with the segment's fitted transforms and encoder, lets
the agents act at the newest close, and books the hour through the accounting's one state
update (exposure, fill at the close, costs, financing, NAV). No order is sent and no exchange
key is needed: <book>/target.json (written atomically every hour) is the hook for an executor
of your own. The book (<run>/paper/ by default) is a SQLite file: a restart, kill -9 included,
continues where it stopped and catches up missed hours.
--status only reads the run and its book: its status.json, equity.png and backtest go to --out
(default <run>-eval/paper-status/); --update-report writes them into the book instead and
re-renders the run's report.html with its paper section.
"""

from __future__ import annotations

import argparse
import sys

from cryptorl_jax.cli.common import add_verbose_argument, apply_verbose, run_command
from cryptorl_jax.cli.style import command_parser, needs

EXAMPLES = (
    "cryptorl paper --run results/quick --once                  # book the new closed bars once",
    "cryptorl paper --run results/quick --every 1h              # ... every hour until Ctrl-C",
    "cryptorl paper --run results/quick --replay 2025-07-01 2025-07-10   # recorded bars",
    "cryptorl paper --run results/quick --status                # position, NAV, P&L, tracking",
)


def _every_seconds(text: str) -> float:
    from cryptorl_jax.market.download import DownloadError, timeframe_ms

    try:
        return timeframe_ms(text) / 1000.0
    except DownloadError as exc:
        raise argparse.ArgumentTypeError(f"--every {text!r}: expected e.g. 1h or 30m") from exc


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("paper", __doc__, EXAMPLES,
                       (needs("ccxt", "live bars of the crypto assets"),
                        needs("yfinance", "live bars of the context assets (SPY, DXY)")))
    p.add_argument("--run", required=True, help="a finished walk-forward run directory")
    p.add_argument("--segment", type=int, default=None,
                   help="the segment whose agent trades (default: the latest finished)")
    p.add_argument("--book", default=None,
                   help="the book directory (default: <run>/paper; for --replay "
                        "<run>/paper_replay_seg<K>_<start>_<end>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one cycle (the default)")
    mode.add_argument("--every", type=_every_seconds, default=None, metavar="PERIOD",
                      help="repeat every PERIOD (e.g. 1h) after each bar closes, until Ctrl-C")
    mode.add_argument("--replay", nargs=2, metavar=("START", "END"), default=None,
                      help="feed the recorded bars of [START, END] (UTC) one hour at a time")
    mode.add_argument("--status", action="store_true",
                      help="print the book's position, NAV, P&L, costs and tracking")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-run-state", dest="from_run_state", action="store_true",
                       default=None,
                       help="--replay: start from the run's own book at START (the default "
                            "inside the segment's test hours: the hours then equal the run's)")
    start.add_argument("--flat", dest="from_run_state", action="store_false",
                       help="--replay: start from a flat book (NAV 1, no position)")
    p.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    p.add_argument("--symbol", default=None,
                   help="the traded asset's ccxt symbol (default <ASSET>/USDT)")
    p.add_argument("--source", action="append", default=[], metavar="NAME=SPEC",
                   help="an asset's live source: NAME=ccxt:SYMBOL, NAME=yfinance:TICKER or "
                        "NAME=none (repeatable)")
    p.add_argument("--data-dir", default=None,
                   help="live: extend the data files in this directory (default: copies of the "
                        "run's files in <book>/data/); --replay: read the recorded bars here")
    p.add_argument("--delay", type=float, default=60.0,
                   help="seconds after the hour before a cycle with --every (default 60)")
    p.add_argument("--no-backtest", action="store_true",
                   help="--status without the backtest of the same hours")
    add_verbose_argument(p)
    p.add_argument("--out", default=None,
                   help="--status: where its status.json, equity.png and backtest go (default "
                        "<run>-eval/paper-status/; the run is not changed)")
    p.add_argument("--update-report", action="store_true",
                   help="--status: write them into the book and re-render the run's "
                        "report.html with the paper section")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbose(args)
    from cryptorl_jax.paper.book import PaperBookError
    from cryptorl_jax.paper.feeds import FeedError

    return run_command("paper", lambda: _run(args), errors=(FeedError, PaperBookError),
                       interrupted="the book holds every hour booked so far")


def _run(args: argparse.Namespace) -> int:
    from cryptorl_jax.paper.feeds import feeds_for, parse_sources
    from cryptorl_jax.paper.session import live, replay
    from cryptorl_jax.paper.status import format_status, paper_status

    overrides = () if args.data_dir is None else (f"data.data_dir={args.data_dir}",)
    if args.status:
        status = paper_status(args.run, args.book, backtest=not args.no_backtest,
                              out_dir=args.out, update_report=args.update_report)
        print(format_status(status))
        print(f"paper: status written to {status['written_to']}"
              + ("; report.html updated" if args.update_report else ""))
        return 0
    if args.out is not None or args.update_report:
        raise ValueError("--out and --update-report go with --status")
    if args.from_run_state is not None and args.replay is None:
        raise ValueError("--from-run-state and --flat go with --replay")
    if args.replay is not None:
        res = replay(args.run, *args.replay, segment=args.segment, book_dir=args.book,
                     overrides=overrides, from_run_state=args.from_run_state)
    else:
        from cryptorl_jax.paper.engine import SegmentAgent
        from cryptorl_jax.paper.session import live_data_dir

        data_dir = live_data_dir(args.run, args.book, args.data_dir)
        overrides = (f"data.data_dir={data_dir}",)
        agent = SegmentAgent(args.run, args.segment, overrides)
        feeds = feeds_for(agent.cfg, exchange=args.exchange, symbol=args.symbol,
                          sources=parse_sources(args.source))
        res = live(args.run, feeds, segment=args.segment, book_dir=args.book,
                   overrides=overrides, every_s=args.every, delay_s=args.delay)
    if res.start is not None:
        print(f"paper: start: {res.start.reason}")
    print(f"paper: {res.booked} hour(s) booked into {res.book.dir}; "
          f"{len(res.ledger)} in the book")
    if res.figures:
        from cryptorl_jax.walkforward.window import format_figures

        print(f"paper: the book's {res.figures['hours']} h: {format_figures(res.figures)}")
        own = res.run_figures
        print(f"paper: the run's own OOS rows of these hours ({own['hours']} h): "
              f"{format_figures(own)}" if own is not None
              else "paper: the run's own OOS rows hold none of these hours")
    for note in res.notes:
        print(f"paper: {note}")
    if len(res.ledger):
        last = res.ledger.iloc[-1]
        print(f"paper: last hour {res.ledger.index[-1]}: NAV {last['nav']:.6f}, exposure "
              f"{last['exposure']:+.4f}; target in {res.book.dir / 'target.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
