"""Downloaders: crypto bars via ccxt, index and FX bars via yfinance, in the loader's format.

The output format is the one in data/SOURCES.md and loader.py: a CSV or CSV.gz file with the
columns timestamp,open,high,low,close,volume. The timestamp is ISO 8601 UTC
(`YYYY-MM-DDTHH:MM:SSZ`) and marks the bar's OPEN time. Rows are sorted and carry no duplicates.

Every download follows the same steps:
1. It resumes an existing file from its last bar + one bar. The rows already stored are never
   changed or re-ordered; new bars are only appended.
2. It drops the still-forming bar, i.e. any bar with open + bar length > now.
3. It checks the merged table with `validate_ohlcv`.
4. It replaces the file atomically: a temp file in the same folder, fsync, a re-read with
   `load_ohlcv`, then os.replace.
A failed or malformed download therefore never overwrites good data.

API keys are optional: public OHLCV needs none. They are read only from the environment
variables CRYPTORL_CCXT_API_KEY, CRYPTORL_CCXT_SECRET and CRYPTORL_CCXT_PASSWORD, and are never
logged.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.market.loader import FIELDS, DataValidationError, load_ohlcv, validate_ohlcv

log = logging.getLogger(__name__)

API_KEY_ENV = "CRYPTORL_CCXT_API_KEY"
SECRET_ENV = "CRYPTORL_CCXT_SECRET"
PASSWORD_ENV = "CRYPTORL_CCXT_PASSWORD"  # the passphrase some exchanges want (OKX, KuCoin)
DEFAULT_CCXT_START = "2017-01-01T00:00:00Z"  # exchanges answer an older `since` with listing day
YFINANCE_TICKERS = ("^GSPC", "DX-Y.NYB", "^IXIC")  # S&P 500, US dollar index, Nasdaq Composite
YAHOO_INTRADAY_DAYS = 730  # Yahoo serves 1h bars for only about the last 730 days
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_MAX_BACKOFF_S = 30.0
_DAY_MS = _UNIT_MS["d"]


class DownloadError(RuntimeError):
    """A download that failed or was refused; the message says what, where and what to do."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download did to its output file."""

    path: Path
    n_existing: int  # bars in the file before the download
    n_new: int  # bars appended
    first: pd.Timestamp  # first and last bar open time in the file now
    last: pd.Timestamp


# --------------------------------------------------------------------------------------------
# Small helpers: time, retries, file I/O
# --------------------------------------------------------------------------------------------


def timeframe_ms(timeframe: str) -> int:
    """Length of one bar in ms for a ccxt/yfinance timeframe such as '1h', '15m', '60m', '1d'."""
    match = re.fullmatch(r"(\d+)([mhdw])", str(timeframe).strip())
    if match is None or int(match.group(1)) <= 0:
        raise DownloadError(f"timeframe {timeframe!r}: expected <number><m|h|d|w>, e.g. 1h")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def to_utc_ms(when: str | pd.Timestamp, name: str = "time") -> int:
    """Epoch milliseconds of an ISO date/time; naive values are read as UTC."""
    try:
        ts = pd.Timestamp(when)
    except (ValueError, TypeError) as exc:
        raise DownloadError(f"{name}: cannot parse {when!r} as a date/time "
                            f"(use ISO 8601, e.g. 2020-01-01 or 2020-01-01T00:00:00Z): {exc}"
                            ) from None
    if ts is pd.NaT:
        raise DownloadError(f"{name}: {when!r} is not a date/time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime(TIMESTAMP_FORMAT)


def _short(exc: BaseException, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[:n] + " ..."


def _call_with_retries(fn: Callable[[], Any], what: str,
                       retry_on: tuple[type[BaseException], ...], *, attempts: int,
                       backoff_s: float, sleep: Callable[[float], None]) -> Any:
    """Call fn; on a `retry_on` error wait backoff_s * 2**k (capped), retry; `attempts` in all."""
    if attempts < 1:
        raise DownloadError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts:
                raise DownloadError(f"{what} failed after {attempts} attempts: "
                                    f"{type(exc).__name__}: {_short(exc)}") from exc
            wait = min(backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
            log.warning("%s: %s: %s; retry %d of %d in %.1f s", what, type(exc).__name__,
                        _short(exc), attempt, attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _check_out_path(out: str | Path) -> Path:
    path = Path(out)
    if not path.name.lower().endswith((".csv", ".csv.gz")):
        raise DownloadError(f"--out {path}: the output must be a .csv or .csv.gz file")
    if path.is_dir():
        raise DownloadError(f"--out {path}: is a directory")
    return path


def _read_existing(path: Path) -> pd.DataFrame | None:
    """The validated frame of an existing output file, None when there is none."""
    if not path.exists():
        return None
    try:
        return load_ohlcv(path)
    except DataValidationError as exc:
        raise DownloadError(f"the existing file {path} cannot be resumed and will not be "
                            f"overwritten; fix or move it first. {exc}") from None


def _raw_frame(index: pd.DatetimeIndex, values: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """A loader-format table: timestamp strings (bar open, UTC) and the five raw value columns.

    A column that holds only numbers and missing values (None, NaN) becomes float64, so that
    validation reports a missing value as such; any other column stays raw and is reported as
    non-numeric.
    """
    cells = values.to_numpy() if isinstance(values, pd.DataFrame) else np.asarray(values, object)
    raw = pd.DataFrame(cells, columns=list(FIELDS))  # float stays float (fast), else object
    for f in FIELDS:
        try:
            raw[f] = pd.to_numeric(raw[f]).astype(np.float64)
        except (ValueError, TypeError):
            pass
    raw.insert(0, "timestamp", index.tz_convert("UTC").strftime(TIMESTAMP_FORMAT))
    return raw


def write_ohlcv_atomic(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a validated OHLCV frame (UTC index) as CSV(.gz) via temp file, fsync, re-read, replace.

    The gzip header carries no mtime, so the same bars always give the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({f: frame[f].to_numpy(dtype=np.float64) for f in FIELDS})
    table.insert(0, "timestamp", pd.DatetimeIndex(frame.index).tz_convert("UTC")
                 .strftime(TIMESTAMP_FORMAT))
    data = table.to_csv(index=False, lineterminator="\n").encode()
    is_gz = path.name.lower().endswith(".gz")
    if is_gz:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    suffix = ".part.csv.gz" if is_gz else ".part.csv"  # load_ohlcv reads it by its suffix

    def verify(tmp: str) -> None:
        try:
            check = load_ohlcv(tmp)
        except DataValidationError as exc:
            raise DownloadError(f"the new file does not read back ({exc}); {path} left "
                                "unchanged") from exc
        if not check.index.equals(pd.DatetimeIndex(frame.index)):
            raise DownloadError(f"{tmp}: re-read bars differ from the bars written; "
                                f"{path} left unchanged")

    write_atomic(path, data, suffix=suffix, verify=verify)


def _merge_and_write(path: Path, existing: pd.DataFrame | None, new_raw: pd.DataFrame,
                     what: str) -> DownloadResult:
    """Append the new bars after the file's last bar, validate everything, write atomically.

    The downloaded bars are put in time order first and a bar served twice with the same
    values is kept once (a repeated or out-of-order page); two different bars with one
    timestamp are refused by the validation, which names them.
    """
    n_existing = 0 if existing is None else len(existing)
    if len(new_raw):
        ts = pd.to_datetime(new_raw["timestamp"], utc=True, errors="coerce")
        if not ts.isna().any():
            new_raw = new_raw.iloc[np.argsort(ts.to_numpy(), kind="stable")]
            same = new_raw.astype(str).duplicated(keep="first").to_numpy()
            if same.any():
                log.info("%s: %d bars were served twice; kept once", what, int(same.sum()))
            new_raw = new_raw[~same].reset_index(drop=True)
    if existing is not None and len(new_raw):
        new_ts = pd.DatetimeIndex(pd.to_datetime(new_raw["timestamp"], utc=True))
        old = np.asarray(new_ts <= existing.index[-1])
        if old.any():
            _compare_overlap(existing, new_raw[old], new_ts[old], what)
            log.info("%s: %d downloaded bars at or before the last stored bar %s are already in "
                     "%s; kept the stored ones", what, int(old.sum()),
                     existing.index[-1].strftime(TIMESTAMP_FORMAT), path)
            new_raw = new_raw[~old].reset_index(drop=True)
    if len(new_raw) == 0:
        if existing is None:
            raise DownloadError(f"{what}: no closed bars in the requested range; nothing written "
                                f"to {path}")
        log.info("%s: no new closed bars; %s unchanged (%d bars up to %s)", what, path,
                 n_existing, existing.index[-1].strftime(TIMESTAMP_FORMAT))
        return DownloadResult(path, n_existing, 0, existing.index[0], existing.index[-1])
    merged = new_raw if existing is None else pd.concat(
        [_raw_frame(existing.index, existing[list(FIELDS)]), new_raw], ignore_index=True)
    try:
        frame = validate_ohlcv(merged, f"{what} merged with {path}")
    except DataValidationError as exc:
        raise DownloadError(f"refusing to write {path}: the downloaded bars failed validation "
                            f"({exc}); the file is unchanged") from exc
    _log_gaps(frame.index[max(n_existing - 1, 0):], what)
    write_ohlcv_atomic(frame, path)
    log.info("%s: wrote %s: %d bars (%d new), %s .. %s", what, path, len(frame), len(new_raw),
             frame.index[0].strftime(TIMESTAMP_FORMAT), frame.index[-1].strftime(TIMESTAMP_FORMAT))
    return DownloadResult(path, n_existing, len(new_raw), frame.index[0], frame.index[-1])


def _compare_overlap(existing: pd.DataFrame, raw: pd.DataFrame, ts: pd.DatetimeIndex,
                     what: str) -> None:
    """Warn when re-downloaded bars differ from the stored ones (another source or adjustment)."""
    common = ts.intersection(existing.index)
    if len(common) == 0:
        return
    got = pd.to_numeric(pd.Series(raw["close"].to_numpy(), index=ts), errors="coerce")
    got = got[~got.index.duplicated()]
    stored = existing.loc[common, "close"].to_numpy()
    rel = np.abs(got.loc[common].to_numpy(dtype=np.float64) / stored - 1.0)
    if np.nanmax(rel, initial=0.0) > 1e-4 or np.isnan(rel).any():
        i = int(np.nanargmax(np.where(np.isnan(rel), np.inf, rel)))
        log.warning("%s: re-downloaded close at %s differs from the stored one (%s vs %s): is the "
                    "file from another source or adjustment?", what,
                    common[i].strftime(TIMESTAMP_FORMAT), got.loc[common].iloc[i], stored[i])


def _log_gaps(index: pd.DatetimeIndex, what: str) -> None:
    if len(index) < 3:
        return
    steps = pd.TimedeltaIndex(index[1:] - index[:-1])
    gaps = np.asarray(steps > steps.median())
    if gaps.any():
        log.info("%s: %d gaps longer than the usual bar spacing in the new bars (largest %s); "
                 "gaps are kept, never filled", what, int(gaps.sum()), steps.max())


def _resume_start_ms(existing: pd.DataFrame | None, start: str | None, step_ms: int,
                     default: str | None) -> int | None:
    """Where to start: the file's last bar + one bar, or --start (or the default) for a new file."""
    start_ms = None if start is None else to_utc_ms(start, "start")
    if existing is None:
        return to_utc_ms(default, "start") if start_ms is None and default else start_ms
    resume = int(existing.index[-1].value // 1_000_000) + step_ms
    if start_ms is not None and start_ms > resume:
        log.warning("start %s is after the last stored bar + one bar (%s): the file will have a "
                    "gap", _iso(start_ms), _iso(resume))
        return start_ms
    if start_ms is not None and start_ms < resume:
        log.info("resuming from %s: the file already holds bars up to %s (bars are only appended)",
                 _iso(resume), existing.index[-1].strftime(TIMESTAMP_FORMAT))
    return resume


# --------------------------------------------------------------------------------------------
# ccxt
# --------------------------------------------------------------------------------------------


def make_exchange(exchange_id: str = "binance") -> Any:
    """A ccxt exchange with ccxt's own rate limiter on; API keys only from the environment."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise DownloadError(f"--exchange {exchange_id!r}: not a ccxt exchange id "
                            f"(e.g. binance, kraken, coinbase, bybit, okx)")
    params: dict[str, Any] = {"enableRateLimit": True}
    for env, key in ((API_KEY_ENV, "apiKey"), (SECRET_ENV, "secret"), (PASSWORD_ENV, "password")):
        value = os.environ.get(env)
        if value:
            params[key] = value
    exchange = getattr(ccxt, exchange_id)(params)
    log.info("ccxt %s: %s", exchange_id,
             f"API key from ${API_KEY_ENV}" if "apiKey" in params else "no API key (public data)")
    if not exchange.has.get("fetchOHLCV"):
        raise DownloadError(f"--exchange {exchange_id!r}: this exchange has no fetch_ohlcv")
    return exchange


def iter_ohlcv_pages(exchange: Any, symbol: str, timeframe: str, since_ms: int,
                     end_ms: int | None = None, *, limit: int = 1000, attempts: int = 5,
                     backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep
                     ) -> Iterator[list[Sequence[Any]]]:
    """Yield pages of closed bars [open_ms, o, h, l, c, v] with since_ms <= open < end_ms.

    Pagination: fetch_ohlcv(symbol, timeframe, since, limit), then since = last open + one bar,
    until an empty page, the end, or the still-forming bar (open + bar > exchange.milliseconds()).
    A bar opening after that clock (from the future) is dropped with a warning naming it and the
    clock; the still-forming bar is dropped silently.
    Between calls it sleeps exchange.rateLimit ms unless ccxt's own limiter (enableRateLimit)
    is on. ccxt.NetworkError (RequestTimeout, ExchangeNotAvailable, DDoSProtection, ...) is
    retried with exponential backoff; other ccxt errors fail at once with DownloadError.
    """
    import ccxt

    step = timeframe_ms(timeframe)
    now_ms = int(exchange.milliseconds())
    stop = now_ms - step + 1  # bars opening at or after `stop` are still forming
    if end_ms is not None:
        stop = min(stop, int(end_ms))
    own_limiter = bool(getattr(exchange, "enableRateLimit", False))
    pause_s = 0.0 if own_limiter else float(getattr(exchange, "rateLimit", 0) or 0) / 1000.0
    name = getattr(exchange, "id", type(exchange).__name__)
    since, calls = int(since_ms), 0
    while since < stop:
        if calls and pause_s > 0:
            sleep(pause_s)
        what = f"ccxt {name} fetch_ohlcv({symbol}, {timeframe}, since={_iso(since)})"
        try:
            page = _call_with_retries(
                functools.partial(exchange.fetch_ohlcv, symbol, timeframe, since, limit), what,
                (ccxt.NetworkError,), attempts=attempts, backoff_s=backoff_s, sleep=sleep)
        except ccxt.BaseError as exc:
            raise DownloadError(f"{what}: {type(exc).__name__}: {_short(exc)}") from exc
        calls += 1
        if not page:
            log.debug("%s: empty page, no more bars", what)
            break
        opens = []
        for row in page:
            try:
                if len(row) < 6:
                    raise ValueError("fewer than 6 fields")
                opens.append(int(row[0]))
            except (TypeError, ValueError):
                raise DownloadError(f"{what}: malformed bar {row!r} (expected "
                                    f"[open_time_ms, open, high, low, close, volume])") from None
        rows = [list(row[:6]) for row, t in zip(page, opens) if since <= t < stop]
        future = sorted(t for t in opens if t > now_ms)  # the still-forming bar opened <= now
        if future:
            log.warning("%s: %d bar(s) stamped after the clock (the first opens at %s, the "
                        "clock is %s): a bar from the future (the exchange's or this machine's "
                        "clock is off?); not stored", what, len(future), _iso(future[0]),
                        _iso(now_ms))
        if rows:
            if calls % 20 == 0:
                log.info("ccxt %s %s: fetched up to %s", name, symbol, _iso(int(rows[-1][0])))
            yield rows
        last_open = max(opens)
        if last_open < since:  # nothing newer than `since`: the exchange has no more bars
            break
        since = last_open + step


def download_ccxt(out: str | Path, *, exchange: str = "binance", symbol: str = "BTC/USDT",
                  timeframe: str = "1h", start: str | None = None, end: str | None = None,
                  limit: int = 1000, attempts: int = 5, backoff_s: float = 1.0,
                  client: Any | None = None, sleep: Callable[[float], None] = time.sleep
                  ) -> DownloadResult:
    """Download closed `symbol` bars from a ccxt exchange into `out`, resuming an existing file.

    A new file starts at `start` (default DEFAULT_CCXT_START); `end` is exclusive (default:
    now). `client` replaces make_exchange(exchange), e.g. a pre-configured or fake exchange.
    If the download fails part-way, the bars fetched so far are validated and saved, so that
    running the same call again resumes from there; the error is then raised.
    """
    path = _check_out_path(out)
    step = timeframe_ms(timeframe)
    existing = _read_existing(path)
    since = _resume_start_ms(existing, start, step, DEFAULT_CCXT_START)
    end_ms = None if end is None else to_utc_ms(end, "end")
    exchange_obj = make_exchange(exchange) if client is None else client
    name = getattr(exchange_obj, "id", exchange)
    timeframes = getattr(exchange_obj, "timeframes", None)
    if timeframes and timeframe not in timeframes:
        raise DownloadError(f"--timeframe {timeframe!r}: ccxt {name} offers {sorted(timeframes)}")
    what = f"ccxt {name} {symbol} {timeframe}"
    log.info("%s: downloading from %s into %s", what, _iso(since), path)
    rows: list[Sequence[Any]] = []
    try:
        for page in iter_ohlcv_pages(exchange_obj, symbol, timeframe, since, end_ms, limit=limit,
                                     attempts=attempts, backoff_s=backoff_s, sleep=sleep):
            rows.extend(page)
    except DownloadError as exc:
        if not rows:
            raise
        saved = _merge_and_write(path, existing, _ccxt_rows_to_raw(rows), what)
        raise DownloadError(f"{exc}. The {saved.n_new} bars fetched before the failure were "
                            f"saved to {path} (up to {saved.last.strftime(TIMESTAMP_FORMAT)}); "
                            f"run the same command again to resume") from exc
    return _merge_and_write(path, existing, _ccxt_rows_to_raw(rows), what)


def _ccxt_rows_to_raw(rows: list[Sequence[Any]]) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime([int(r[0]) for r in rows], unit="ms", utc=True))
    return _raw_frame(index, np.array([list(r[1:6]) for r in rows], dtype=object).reshape(-1, 5))


# --------------------------------------------------------------------------------------------
# yfinance
# --------------------------------------------------------------------------------------------


def default_yfinance_filename(ticker: str, interval: str = "1h") -> str:
    """File name for a Yahoo ticker, e.g. '^GSPC' -> 'GSPC_1h_yahoo.csv.gz' (no bundled clash)."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", ticker).strip("_") or "ticker"
    return f"{stem}_{interval}_yahoo.csv.gz"


def _yf_history(ticker: str, start_ms: int, end_ms: int, interval: str) -> pd.DataFrame:
    """One yfinance request: raw (unadjusted) bars, regular session, no dividend/split columns."""
    import yfinance as yf

    def as_dt(ms: int) -> Any:
        return pd.Timestamp(ms, unit="ms", tz="UTC").to_pydatetime()

    return yf.Ticker(ticker).history(start=as_dt(start_ms), end=as_dt(end_ms), interval=interval,
                                     auto_adjust=False, actions=False, prepost=False)


def _yfinance_retry_errors() -> tuple[type[BaseException], ...]:
    try:
        from yfinance.exceptions import YFRateLimitError
    except ImportError:  # older yfinance
        return (OSError,)
    return (YFRateLimitError, OSError)  # OSError covers connection errors and time-outs


def download_yfinance(out: str | Path, *, ticker: str = "^GSPC", interval: str = "1h",
                      start: str | None = None, end: str | None = None, attempts: int = 4,
                      backoff_s: float = 2.0, now: str | pd.Timestamp | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> DownloadResult:
    """Download Yahoo bars of `ticker` into `out` (UTC bar-open timestamps), resuming a file.

    Yahoo serves intraday (e.g. 1h) bars for only about the last 730 days: an older start is
    moved up to that limit, with a UserWarning. A new file starts there by default; `end` is
    exclusive (default: now). `now` fixes the clock (tests); bars still forming at `now` are
    dropped. Rows whose prices are all missing (Yahoo placeholders) are dropped and logged.
    """
    path = _check_out_path(out)
    step = timeframe_ms(interval)
    now_ms = to_utc_ms(now, "now") if now is not None else int(time.time() * 1000)
    existing = _read_existing(path)
    since = _resume_start_ms(existing, start, step, None)
    if step < _DAY_MS:
        earliest = now_ms - (YAHOO_INTRADAY_DAYS - 1) * _DAY_MS  # one day of margin
        if since is None:
            since = earliest
        elif since < earliest:
            gap = " The file will have a gap after its last stored bar." if existing is not None \
                else ""
            warnings.warn(f"Yahoo serves {interval} bars for only about the last "
                          f"{YAHOO_INTRADAY_DAYS} days: the requested start {_iso(since)} is "
                          f"older, so {ticker} is downloaded from {_iso(earliest)} instead.{gap}",
                          UserWarning, stacklevel=2)
            since = earliest
    elif since is None:
        since = to_utc_ms("1970-01-01", "start")
    stop = now_ms - step + 1  # bars opening at or after `stop` are still forming
    if end is not None:
        stop = min(stop, to_utc_ms(end, "end"))
    what = f"yfinance {ticker} {interval}"
    if since >= stop:
        raise DownloadError(f"{what}: start {_iso(since)} is not before end {_iso(stop)}")
    log.info("%s: downloading from %s into %s", what, _iso(since), path)
    frame = _call_with_retries(
        functools.partial(_yf_history, ticker, since, stop, interval),
        f"{what} history({_iso(since)} .. {_iso(stop)})", _yfinance_retry_errors(),
        attempts=attempts, backoff_s=backoff_s, sleep=sleep)
    new_raw = yfinance_frame_to_raw(frame, what)
    opens = pd.DatetimeIndex(pd.to_datetime(new_raw["timestamp"], utc=True))
    keep = np.asarray(opens < pd.Timestamp(stop, unit="ms", tz="UTC"))
    if existing is None:
        keep &= np.asarray(opens >= pd.Timestamp(since, unit="ms", tz="UTC"))
    new_raw = new_raw[keep].reset_index(drop=True)
    if len(new_raw) == 0 and existing is None:
        raise DownloadError(f"{what}: Yahoo returned no bars for {_iso(since)} .. {_iso(stop)} "
                            "(check the ticker and the network; yfinance logs its reason); "
                            f"nothing written to {path}")
    return _merge_and_write(path, existing, new_raw, what)


def yfinance_frame_to_raw(frame: pd.DataFrame | None, what: str = "yfinance") -> pd.DataFrame:
    """yfinance's history frame (tz-aware index, Open..Volume) -> loader-format table in UTC."""
    if frame is None or len(frame) == 0:
        return _raw_frame(pd.DatetimeIndex([], tz="UTC"), np.empty((0, 5), dtype=object))
    if isinstance(frame.columns, pd.MultiIndex):  # yf.download style: (field, ticker)
        frame = frame.droplevel(-1, axis=1) if frame.columns.nlevels == 2 else frame
    columns = {str(c).strip().lower(): c for c in frame.columns}
    missing = [f for f in FIELDS if f not in columns]
    if missing:
        raise DownloadError(f"{what}: response lacks column(s) {missing}; got "
                            f"{list(frame.columns)}")
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise DownloadError(f"{what}: response index is not a timezone-aware DatetimeIndex "
                            f"({type(index).__name__}); cannot place bars in UTC")
    values = frame[[columns[f] for f in FIELDS]]
    prices = values.iloc[:, :4].apply(pd.to_numeric, errors="coerce")
    empty = prices.isna().all(axis=1).to_numpy()
    if empty.any():
        log.warning("%s: dropped %d rows with no prices (Yahoo placeholders), first at %s", what,
                    int(empty.sum()), index[np.flatnonzero(empty)[0]].isoformat())
    return _raw_frame(index[~empty], values[~empty])
