"""Download hourly OHLCV in the loader's CSV(.gz) format: crypto via ccxt, indices/FX via yfinance.

An existing output file is resumed from its last bar: new bars are appended, stored bars are
never changed, and the file is replaced atomically only after the merged data validates.
Optional ccxt API keys come only from $CRYPTORL_CCXT_API_KEY / $CRYPTORL_CCXT_SECRET
(/ $CRYPTORL_CCXT_PASSWORD); public OHLCV needs none.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptorl_jax.cli.style import command_parser, needs, subcommand_parser
from cryptorl_jax.market import download
from cryptorl_jax.market.loader import DataValidationError

CCXT_EXAMPLES = (
    "cryptorl download ccxt --out data/BTC_1h.csv.gz        # update the bundled BTC",
    "cryptorl download ccxt --exchange kraken --symbol ETH/USD \\",
    "    --start 2020-01-01 --out data/ETH_kraken_1h.csv.gz",
)
YF_EXAMPLES = (
    "cryptorl download yfinance --out-dir data              # ^GSPC, DX-Y.NYB, ^IXIC",
    "cryptorl download yfinance --ticker ^GSPC --ticker DX-Y.NYB   # into data/",
)
CCXT = needs("ccxt", "cryptorl download ccxt")
YFINANCE = needs("yfinance", "cryptorl download yfinance")

YAHOO_NOTE = (
    f"Yahoo serves hourly (intraday) bars for only about the last {download.YAHOO_INTRADAY_DAYS}"
    " days: an older --start is moved up to that limit with a warning, so a longer history must"
    " be built by re-running this command over time (each run appends)."
)


def build_parser() -> argparse.ArgumentParser:
    """The CLI: subcommands `ccxt` and `yfinance`."""
    parser = command_parser("download", __doc__, CCXT_EXAMPLES + YF_EXAMPLES, (CCXT, YFINANCE))
    sub = parser.add_subparsers(dest="source", required=True, metavar="{ccxt,yfinance}",
                                help="the source: ccxt (crypto exchanges) or yfinance (Yahoo)")

    cx = subcommand_parser(sub, "ccxt", "crypto bars from an exchange via ccxt",
                           "Paginated, rate-limited ccxt fetch_ohlcv with retries; closed bars "
                           "only.", CCXT_EXAMPLES, (CCXT,))
    cx.add_argument("--out", required=True, type=Path, help="output .csv or .csv.gz (resumed)")
    cx.add_argument("--exchange", default="binance", help="ccxt exchange id (default: binance)")
    cx.add_argument("--symbol", default="BTC/USDT", help="market symbol (default: BTC/USDT)")
    cx.add_argument("--timeframe", default="1h", help="bar length (default: 1h)")
    cx.add_argument("--start", help="first bar open time, UTC (new file; default "
                                    f"{download.DEFAULT_CCXT_START[:10]}, i.e. listing day)")
    cx.add_argument("--end", help="exclusive end, UTC (default: now)")
    cx.add_argument("--limit", type=int, default=1000, help="bars per request (default: 1000)")

    yf = subcommand_parser(sub, "yfinance", "index / FX bars from Yahoo via yfinance",
                           f"Hourly bars from Yahoo Finance. {YAHOO_NOTE}", YF_EXAMPLES,
                           (YFINANCE,))
    yf.add_argument("--ticker", action="append", default=None,
                    help="Yahoo ticker; repeat for several (default: "
                         f"{' '.join(download.YFINANCE_TICKERS)})")
    yf.add_argument("--out", type=Path, help="output .csv(.gz); only with a single --ticker")
    yf.add_argument("--out-dir", type=Path, default=Path("data"),
                    help="folder for <TICKER>_<interval>_yahoo.csv.gz (default: data)")
    yf.add_argument("--interval", default="1h", help="bar length (default: 1h)")
    yf.add_argument("--start", help="first bar open time, UTC (default: as old as Yahoo serves)")
    yf.add_argument("--end", help="exclusive end, UTC (default: now)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; 0 on success, 1 when any download failed, 2 on bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from cryptorl_jax.core.extras import require

    try:
        require(args.source, f"cryptorl download {args.source}")  # before any file is touched
    except ModuleNotFoundError as exc:
        print(f"download: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("yfinance").setLevel(logging.WARNING)
    jobs = []
    if args.source == "ccxt":
        jobs.append(("ccxt", lambda: download.download_ccxt(
            args.out, exchange=args.exchange, symbol=args.symbol, timeframe=args.timeframe,
            start=args.start, end=args.end, limit=args.limit)))
    else:
        tickers = args.ticker or list(download.YFINANCE_TICKERS)
        if args.out is not None and len(tickers) != 1:
            parser.error("--out takes a single --ticker; use --out-dir for several")
        for ticker in tickers:
            out = args.out or args.out_dir / download.default_yfinance_filename(ticker,
                                                                                args.interval)
            jobs.append((ticker, lambda t=ticker, o=out: download.download_yfinance(
                o, ticker=t, interval=args.interval, start=args.start, end=args.end)))
    failed = 0
    for name, job in jobs:
        try:
            result = job()
        except (download.DownloadError, DataValidationError, OSError) as exc:
            print(f"download_data: {name}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {result.path}: {result.n_new} new bars, {result.n_existing + result.n_new}"
              f" in all, {result.first:%Y-%m-%dT%H:%MZ} .. {result.last:%Y-%m-%dT%H:%MZ}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
