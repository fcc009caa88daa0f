"""The live data feeds of paper trading: each extends one asset's data file with the project's
resumable downloaders (`market.download`: ccxt for crypto, yfinance for the context assets),
so the bars paper trading reads pass the same validation as every other bar.

Which feed an asset gets (`feeds_for`): the traded asset and the other crypto assets come from
the ccxt exchange (`--exchange`, `--symbol` for the traded one, `<ASSET>/USDT` otherwise); a
market asset from Yahoo with the ticker of `DEFAULT_TICKERS` or `--source NAME=yfinance:TICKER`;
`--source NAME=none` leaves a file to an updater of your own (the asset goes stale after
data.max_stale_hours and its features then read NaN-filled values as in any gap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptorl_jax.config import Config
from cryptorl_jax.market.download import DownloadError, download_ccxt, download_yfinance
from cryptorl_jax.market.loader import DataValidationError

log = logging.getLogger("cryptorl_jax.paper")

# Yahoo tickers of the context assets a config usually names
DEFAULT_TICKERS = {"SPY": "SPY", "QQQ": "QQQ", "DXY": "DX-Y.NYB", "NDX": "^NDX",
                   "NASDAQ": "^IXIC", "IXIC": "^IXIC", "GSPC": "^GSPC", "SPX": "^GSPC",
                   "EURUSD": "EURUSD=X"}


class FeedError(RuntimeError):
    """A feed that failed or whose bars were refused; nothing is booked in that cycle."""


class Feed(Protocol):
    name: str

    def update(self) -> Any: ...


@dataclass
class CcxtFeed:
    """Closed bars of `symbol` from a ccxt exchange into `path` (`download_ccxt`)."""

    name: str
    path: Path
    symbol: str
    exchange: str = "binance"
    client: Any = None  # a ccxt exchange object, or anything with its fetch_ohlcv (tests)
    timeframe: str = "1h"
    sleep: Callable[[float], None] = time.sleep  # the waits between retries (tests)

    def update(self) -> Any:
        try:
            res = download_ccxt(self.path, exchange=self.exchange, symbol=self.symbol,
                                timeframe=self.timeframe, client=self.client, sleep=self.sleep)
        except (DownloadError, DataValidationError, OSError) as exc:
            raise FeedError(f"feed {self.name} ({self.exchange} {self.symbol}): {exc}") from exc
        log.info("feed %s: %d new bars, last %s", self.name, res.n_new, res.last)
        return res


@dataclass
class YahooFeed:
    """Closed bars of a Yahoo ticker into `path` (`download_yfinance`)."""

    name: str
    path: Path
    ticker: str
    interval: str = "1h"
    now: Callable[[], Any] | None = None  # the clock (tests)

    def update(self) -> Any:
        try:
            res = download_yfinance(self.path, ticker=self.ticker, interval=self.interval,
                                    now=None if self.now is None else self.now())
        except (DownloadError, DataValidationError, OSError) as exc:
            raise FeedError(f"feed {self.name} (yfinance {self.ticker}): {exc}") from exc
        log.info("feed %s: %d new bars, last %s", self.name, res.n_new, res.last)
        return res


def parse_sources(items: Sequence[str]) -> dict[str, str]:
    """`NAME=ccxt:SYMBOL`, `NAME=yfinance:TICKER` or `NAME=none` -> {NAME: spec}."""
    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        kind = spec.split(":", 1)[0]
        if not sep or not name or kind not in ("ccxt", "yfinance", "none") or (
                kind != "none" and ":" not in spec):
            raise ValueError(f"--source {item!r}: expected NAME=ccxt:SYMBOL, "
                             f"NAME=yfinance:TICKER or NAME=none")
        out[name] = spec
    return out


def feeds_for(cfg: Config, *, exchange: str = "binance", symbol: str | None = None,
              sources: Mapping[str, str] | None = None, client: Any = None) -> list[Feed]:
    """One feed per asset of the run's config (see the module docstring)."""
    data = cfg.data
    sources = dict(sources or {})
    unknown = sorted(set(sources) - {a.name for a in data.assets})
    if unknown:
        raise ValueError(f"--source names {unknown}, which the run's data.assets do not hold "
                         f"({[a.name for a in data.assets]})")
    if data.combined_file is not None:
        if any(sources.get(a.name, "") != "none" for a in data.assets):
            raise ValueError(f"data.combined_file={data.combined_file}: the live feeds write "
                             f"one file per asset; update the combined file yourself and pass "
                             f"--source NAME=none for every asset")
        return []
    feeds: list[Feed] = []
    for a in data.assets:
        path = Path(a.file) if Path(str(a.file)).is_absolute() else Path(data.data_dir) / str(
            a.file)
        spec = sources.get(a.name)
        if spec is None:
            if a.name == data.traded_asset:
                spec = f"ccxt:{symbol or a.name + '/USDT'}"
            elif a.kind == "crypto":
                spec = f"ccxt:{a.name}/USDT"
            elif a.name in DEFAULT_TICKERS:
                spec = f"yfinance:{DEFAULT_TICKERS[a.name]}"
            else:
                log.warning("paper: no live source for %s (pass --source %s=yfinance:TICKER); "
                            "it goes stale after data.max_stale_hours", a.name, a.name)
                continue
        kind, _, what = spec.partition(":")
        if kind == "none":
            continue
        if kind == "ccxt":
            feeds.append(CcxtFeed(a.name, path, what, exchange, client))
        else:
            feeds.append(YahooFeed(a.name, path, what))
    return feeds
