"""Validated OHLCV loading and multi-asset alignment on the traded asset's UTC hourly grid.

Time convention (docs/reference.md, principle 4): the aligned frame's index is the **close
time** of the hour, i.e. the moment at which the row's values are known. A bar labelled by its
open time T (the bundled files, SOURCES.md) is placed at T + bar_hours, rounded up to the next
full hour: a value never appears on a row before its bar has closed. An asset's
`availability_lag_hours` moves its bars that many more hours later (a bar closing at C is placed
on row C + lag), for series whose clock is uncertain. Context assets (equity, index, FX) are
forward-filled from the past only, for at most `max_stale_hours` counted from that row; older
values become NaN. `<ASSET>_fresh` is 1.0 on rows where a new bar became available in that hour
(it closed there, or lag hours earlier) and 0.0 on filled rows.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cryptorl_jax.config import AssetSpec, ConfigError, DataConfig
from cryptorl_jax.core.cache import market_cache_dir
from cryptorl_jax.core.io import write_parquet
from cryptorl_jax.core.notices import notice

log = logging.getLogger(__name__)

FIELDS = ("open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close")
_LOADER_VERSION = "2"  # bump when the alignment rules change: invalidates the cache


class DataValidationError(ValueError):
    """A data file or frame that cannot be trusted; the message names file, row and rule."""


# --------------------------------------------------------------------------------------------
# One file -> validated OHLCV frame
# --------------------------------------------------------------------------------------------


def _read_raw(path: Path) -> pd.DataFrame:
    """Read CSV / CSV.gz / Parquet as strings (CSV) so that validation sees every raw value."""
    name = path.name.lower()
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    if not path.is_file():
        raise DataValidationError(f"{path}: not a regular file")
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
            if isinstance(frame.index, pd.DatetimeIndex):
                frame = frame.reset_index(names="timestamp" if frame.index.name is None
                                          else frame.index.name)
            return frame
        if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error,
            OSError, ValueError) as exc:
        raise DataValidationError(f"{path}: cannot read file ({type(exc).__name__}: {exc})"
                                  ) from None
    except Exception as exc:  # pyarrow raises its own types for corrupt Parquet
        raise DataValidationError(f"{path}: cannot read file ({type(exc).__name__}: {exc})"
                                  ) from None
    raise DataValidationError(f"{path}: unsupported file type (use .csv, .csv.gz or .parquet)")


def _row_label(i: int, raw_ts: object) -> str:
    return f"row {i + 1} (timestamp {raw_ts!s})"


def _parse_timestamps(values: pd.Series, source: str) -> pd.DatetimeIndex:
    """Parse ISO-8601 strings (naive = UTC) or epoch seconds/milliseconds; refuse anything else."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
    else:
        text = values.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if len(text) and numeric.notna().all():
            unit = "ms" if float(numeric.abs().max()) > 1e11 else "s"
            ts = pd.to_datetime(numeric, unit=unit, utc=True, errors="coerce")
        else:
            ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise DataValidationError(
            f"{source}: unparseable timestamp {values.iloc[i]!r} at row {i + 1} "
            f"({len(bad)} bad timestamps in all; expected ISO 8601 UTC, e.g. 2020-01-01T00:00:00Z)"
        )
    return pd.DatetimeIndex(ts).as_unit("ns")


def validate_ohlcv(frame: pd.DataFrame, source: str, *, timestamp_col: str = "timestamp"
                   ) -> pd.DataFrame:
    """Check one asset's raw OHLCV table and return it as a float64 frame on a UTC index."""
    if len(frame) == 0:
        raise DataValidationError(f"{source}: no data rows")
    columns = {str(c).strip().lower(): c for c in frame.columns}
    need = (timestamp_col, *FIELDS)
    missing = [c for c in need if c not in columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; found {list(frame.columns)}; "
            f"required: {list(need)}"
        )
    raw_ts = frame[columns[timestamp_col]].reset_index(drop=True)
    index = _parse_timestamps(raw_ts, source)

    out = {}
    for f in FIELDS:
        raw = frame[columns[f]].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            num = raw.astype("float64")
            nonnum = np.zeros(len(raw), dtype=bool)
        else:
            text = raw.astype(str).str.strip()
            num = pd.to_numeric(text, errors="coerce").astype("float64")
            blank = raw.isna() | text.str.lower().isin(["", "nan", "na", "n/a", "null", "none"])
            nonnum = (num.isna() & ~blank).to_numpy()
        bad = np.flatnonzero(nonnum)
        if len(bad):
            i = int(bad[0])
            raise DataValidationError(
                f"{source}: non-numeric value {raw.iloc[i]!r} in column '{f}' at "
                f"{_row_label(i, raw_ts.iloc[i])}"
            )
        values = num.to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            i = int(bad[0])
            raise DataValidationError(
                f"{source}: missing or non-finite value (NaN/inf) in column '{f}' at "
                f"{_row_label(i, raw_ts.iloc[i])}; {len(bad)} such rows in '{f}'"
            )
        out[f] = values

    for f in PRICE_FIELDS:
        bad = np.flatnonzero(out[f] <= 0)
        if len(bad):
            i = int(bad[0])
            raise DataValidationError(
                f"{source}: non-positive price {float(out[f][i])!r} in column '{f}' at "
                f"{_row_label(i, raw_ts.iloc[i])}"
            )
    bad = np.flatnonzero(out["volume"] < 0)
    if len(bad):
        i = int(bad[0])
        raise DataValidationError(
            f"{source}: negative volume {float(out['volume'][i])!r} at "
            f"{_row_label(i, raw_ts.iloc[i])}"
        )
    o, h, lo, c = out["open"], out["high"], out["low"], out["close"]
    tol = 1e-9 * np.maximum(np.abs(h), 1.0)
    rules = (
        (h + tol < np.maximum(o, c), "high below max(open, close)"),
        (lo - tol > np.minimum(o, c), "low above min(open, close)"),
        (h + tol < lo, "high below low"),
    )
    for mask, rule in rules:
        bad = np.flatnonzero(mask)
        if len(bad):
            i = int(bad[0])
            raise DataValidationError(
                f"{source}: OHLC inconsistency ({rule}) at {_row_label(i, raw_ts.iloc[i])}: "
                f"open={o[i]} high={h[i]} low={lo[i]} close={c[i]}"
            )

    ns = index.asi8
    dup = np.flatnonzero(ns[1:] == ns[:-1])
    if len(dup):
        i = int(dup[0]) + 1
        raise DataValidationError(
            f"{source}: duplicate timestamp {index[i].isoformat()} at rows {i} and {i + 1}"
        )
    back = np.flatnonzero(ns[1:] < ns[:-1])
    if len(back):
        i = int(back[0]) + 1
        raise DataValidationError(
            f"{source}: timestamps not sorted: {index[i].isoformat()} at row {i + 1} comes after "
            f"{index[i - 1].isoformat()} at row {i}"
        )
    result = pd.DataFrame(out, index=pd.DatetimeIndex(index, name="timestamp"))
    return result


def load_ohlcv(path: str | Path) -> pd.DataFrame:
    """Read one asset's CSV, CSV.gz or Parquet into a validated OHLCV frame (UTC index).

    The index holds the file's timestamps (UTC; naive ones are read as UTC), the columns are the
    float64 fields open, high, low, close, volume. Raises DataValidationError naming the file,
    the first offending row and the rule, for any file it cannot trust.
    """
    p = Path(path)
    frame = _read_raw(p)
    return validate_ohlcv(frame, str(p))


# --------------------------------------------------------------------------------------------
# Alignment of several assets
# --------------------------------------------------------------------------------------------


def _availability_rows(index: pd.DatetimeIndex, spec: AssetSpec) -> pd.DatetimeIndex:
    """The grid row at which each bar becomes usable: its close time, rounded up to the hour,
    plus the asset's `availability_lag_hours`."""
    close_time = index + pd.Timedelta(hours=spec.bar_hours) if spec.timestamp_label == "open" \
        else index
    return close_time.ceil("h") + pd.Timedelta(hours=spec.availability_lag_hours)


def _check_lags(data_config: DataConfig) -> None:
    """Refuse lags that `config.validate` refuses, for DataConfigs built without it."""
    for i, a in enumerate(data_config.assets):
        lag = a.availability_lag_hours
        key = f"data.assets[{i}].availability_lag_hours"
        if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
            raise ConfigError(key, f"must be a whole number of hours >= 0, got {lag!r}")
        if a.name == data_config.traded_asset and lag != 0:
            raise ConfigError(key, f"must be 0 for the traded asset {a.name}, got {lag}")


def _invert(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"open": 1.0 / frame["open"], "high": 1.0 / frame["low"],
                         "low": 1.0 / frame["high"], "close": 1.0 / frame["close"],
                         "volume": frame["volume"]}, index=frame.index)


def _place_on_rows(frame: pd.DataFrame, spec: AssetSpec, source: str) -> pd.DataFrame:
    rows = _availability_rows(frame.index, spec)
    placed = frame.set_axis(pd.DatetimeIndex(rows, name="timestamp"))
    dup = placed.index.duplicated(keep="last")
    if dup.any():  # two bars closing inside the same hour: the later one is the current value
        notice(log, "same hour", source,
               "%s: %d bars close inside an hour already holding a later bar; kept the later",
               source, int(dup.sum()))
        placed = placed[~dup]
    return placed


def _fill_flat(placed: pd.DataFrame, grid: pd.DatetimeIndex, limit: int | None) -> pd.DataFrame:
    """Reindex onto the grid; filled rows are flat bars at the last close with zero volume."""
    on_grid = placed.reindex(grid)
    fresh = on_grid["close"].notna().to_numpy()
    last_close = on_grid["close"].ffill(limit=limit)
    filled = pd.DataFrame(index=grid)
    for f in PRICE_FIELDS:
        filled[f] = on_grid[f].where(fresh, last_close)
    filled["volume"] = on_grid["volume"].where(fresh, np.where(last_close.notna(), 0.0, np.nan))
    filled["fresh"] = fresh.astype("float64")
    return filled


def _check_traded_gaps(placed: pd.DatetimeIndex, max_fill: int, source: str) -> None:
    steps = np.diff(placed.as_unit("ns").asi8) // (3600 * 10**9)
    big = np.flatnonzero(steps - 1 > max_fill)
    if len(big):
        i = int(big[0])
        raise DataValidationError(
            f"{source}: gap of {int(steps[i]) - 1} missing hourly bars after "
            f"{placed[i].isoformat()} (next bar {placed[i + 1].isoformat()}); at most "
            f"data.max_fill_hours={max_fill} are forward-filled. Cut the data with data.start/"
            f"data.end or raise the limit."
        )


def align_assets(raw: Mapping[str, pd.DataFrame], data_config: DataConfig,
                 sources: Mapping[str, str] | None = None, *,
                 end_on: Literal["common", "traded"] = "common") -> pd.DataFrame:
    """Align validated per-asset OHLCV frames on the traded asset's hourly close-time grid.

    The grid ends at the last hour every asset has reached (`end_on` "common": a backtest's
    window) or at the traded asset's last bar ("traded": live bars, where a closed market's
    last bar is hours old); the other assets are then forward-filled up to
    data.max_stale_hours, as inside the window, and NaN beyond.
    """
    if end_on not in ("common", "traded"):
        raise ValueError(f"end_on must be 'common' or 'traded', got {end_on!r}")
    _check_lags(data_config)
    sources = dict(sources or {})
    specs = {a.name: a for a in data_config.assets}
    traded = data_config.traded_asset
    placed = {}
    for name, frame in raw.items():
        spec = specs[name]
        src = sources.get(name, name)
        frame = _invert(frame) if spec.invert else frame
        placed[name] = _place_on_rows(frame, spec, src)

    # Common window: every asset has had a bar by `start`, and none has ended before `end`.
    start = max(p.index[0] for p in placed.values())
    end = (placed[traded].index[-1] if end_on == "traded"
           else min(p.index[-1] for p in placed.values()))
    if data_config.start is not None:
        start = max(start, pd.Timestamp(data_config.start, tz="UTC").ceil("h"))
    if data_config.end is not None:
        end = min(end, pd.Timestamp(data_config.end, tz="UTC").floor("h"))
    if start >= end:
        spans = {n: f"{p.index[0].isoformat()}..{p.index[-1].isoformat()}"
                 for n, p in placed.items()}
        raise DataValidationError(
            f"no common window: the assets' bar-close spans {spans} (with data.start="
            f"{data_config.start}, data.end={data_config.end}) do not overlap"
        )
    for name, p in placed.items():
        before = int((p.index < start).sum())
        after = int((p.index > end).sum())
        if before or after:
            notice(log, "dropped", sources.get(name, name),
                   "%s: dropped %d bars before %s and %d after %s (common window)",
                   sources.get(name, name), before, start.isoformat(), after, end.isoformat())

    trad = placed[traded]
    # the traded asset's own bars decide the grid; gaps inside the window are checked first
    inside = trad.index[(trad.index >= start) & (trad.index <= end)]
    if len(inside) == 0:
        raise DataValidationError(f"{sources.get(traded, traded)}: no bars inside the window")
    _check_traded_gaps(inside, data_config.max_fill_hours, sources.get(traded, traded))
    grid = pd.date_range(start, end, freq="h", tz="UTC", name="timestamp")

    columns = {}
    for name in [a.name for a in data_config.assets]:
        p = placed[name]
        # keep the last bar before the window so that the first rows can be forward-filled
        prior = p[p.index < start].tail(1)
        window = pd.concat([prior, p[(p.index >= start) & (p.index <= end)]])
        if name == traded:
            aligned = _fill_flat(window, grid, limit=None)
            n_filled = int((aligned["fresh"] == 0).sum())
            if n_filled:
                notice(log, "filled", sources.get(name, name),
                       "%s: forward-filled %d missing hourly bars (flagged %s_fresh=0)",
                       sources.get(name, name), n_filled, name)
        else:
            first = min(window.index[0], start) if len(window) else start
            full_grid = pd.date_range(first, end, freq="h", tz="UTC", name="timestamp")
            aligned = _fill_flat(window, full_grid, limit=data_config.max_stale_hours)
            aligned = aligned.reindex(grid)
            n_stale = int(aligned["close"].isna().sum())
            if n_stale:
                notice(log, "stale", sources.get(name, name),
                       "%s: %d rows older than max_stale_hours=%d are NaN",
                       sources.get(name, name), n_stale, data_config.max_stale_hours)
        for f in (*FIELDS, "fresh"):
            columns[f"{name}_{f}"] = aligned[f].to_numpy(dtype="float64")
    frame = pd.DataFrame(columns, index=grid)
    if frame[f"{traded}_close"].isna().any():
        raise DataValidationError(f"{traded}: the aligned traded asset has missing closes")
    _set_attrs(frame, data_config)
    return frame


def _set_attrs(frame: pd.DataFrame, data_config: DataConfig) -> None:
    """Record which asset is traded and the asset kinds; features read them from here."""
    frame.attrs["traded_asset"] = data_config.traded_asset
    frame.attrs["assets"] = [a.name for a in data_config.assets]
    frame.attrs["asset_kinds"] = {a.name: a.kind for a in data_config.assets}


# --------------------------------------------------------------------------------------------
# The configured market
# --------------------------------------------------------------------------------------------


def _resolve(data_config: DataConfig, file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else Path(data_config.data_dir) / p


def _read_combined(path: Path, data_config: DataConfig) -> dict[str, pd.DataFrame]:
    frame = _read_raw(path)
    if len(frame) == 0:
        raise DataValidationError(f"{path}: no data rows")
    cols = {str(c).strip(): c for c in frame.columns}
    ts_col = next((cols[c] for c in cols if c.lower() == "timestamp"), None)
    if ts_col is None:
        raise DataValidationError(f"{path}: missing column 'timestamp'; found {list(cols)}")
    out = {}
    for spec in data_config.assets:
        want = {f: f"{spec.name}_{f}" for f in FIELDS}
        missing = [c for c in want.values() if c not in cols]
        if missing:
            raise DataValidationError(f"{path}: missing column(s) {missing} for asset "
                                      f"{spec.name} (combined files use <ASSET>_<field>)")
        sub = pd.DataFrame({"timestamp": frame[ts_col]})
        for f, c in want.items():
            sub[f] = frame[cols[c]]
        as_text = sub[list(FIELDS)].astype(str).apply(lambda s: s.str.strip().str.lower())
        empty = as_text.isin(["", "nan", "none", "null"]).all(axis=1)
        if empty.any():  # the asset has no bar at those timestamps (e.g. market closed)
            notice(log, "no bar", f"{path} [{spec.name}]",
                   "%s: asset %s has no bar on %d of %d rows", path, spec.name,
                   int(empty.sum()), len(sub))
        sub = sub[~empty.to_numpy()]
        out[spec.name] = validate_ohlcv(sub, f"{path} [{spec.name}]")
    return out


def _cache_key(data_config: DataConfig, files: list[Path], end_on: str = "common") -> str:
    """Hash of the loader version, every DataConfig field and the input files' bytes.

    `repr(data_config)` spells out every field of every AssetSpec, so the assets'
    `availability_lag_hours` (like `invert` or `bar_hours`) are part of the key: a changed lag
    never serves a frame cached with another one (tests/market/test_loader.py checks this).
    """
    h = hashlib.sha256()
    h.update(_LOADER_VERSION.encode())
    h.update(repr(data_config).encode())
    if end_on != "common":  # the key of every earlier cache file stays what it was
        h.update(f"end_on={end_on}".encode())
    for f in files:
        h.update(str(f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:20]


def load_market(data_config: DataConfig, *,
                end_on: Literal["common", "traded"] = "common",
                write_cache: bool = True) -> pd.DataFrame:
    """Read, validate and align the configured assets; the result is cached as Parquet.

    Columns `<ASSET>_<field>` for field in open, high, low, close, volume, fresh; a UTC hourly
    DatetimeIndex of bar close times (see the module docstring for the time convention).
    `end_on` "traded" ends the grid at the traded asset's last bar (`align_assets`; paper
    trading's live bars). `write_cache` False: a cached frame is read, none is written (the
    dry runs write nothing).
    """
    if data_config.combined_file is not None:
        files = [_resolve(data_config, data_config.combined_file)]
    else:
        files = [_resolve(data_config, a.file) for a in data_config.assets]  # type: ignore[arg-type]
    for f in files:
        if not f.is_file():
            raise DataValidationError(f"{f}: file not found (data.data_dir={data_config.data_dir}, "
                                      f"cwd={Path.cwd()})")
    cache_path = None
    cache_dir = market_cache_dir(data_config.cache_dir)
    if cache_dir is not None:
        key = _cache_key(data_config, files, end_on)
        cache_path = cache_dir / f"market_{key}.parquet"
        if cache_path.is_file():
            try:
                frame = pd.read_parquet(cache_path)
                frame.index = pd.DatetimeIndex(frame.index, name="timestamp").as_unit("ns")
                frame.index.freq = "h"
                _set_attrs(frame, data_config)
                log.info("market: loaded %d rows from cache %s", len(frame), cache_path)
                return frame
            except Exception as exc:  # a broken cache file is rebuilt, never trusted
                log.warning("market: ignoring unreadable cache %s (%s)", cache_path, exc)

    if data_config.combined_file is not None:
        raw = _read_combined(files[0], data_config)
        sources = {a.name: f"{files[0]} [{a.name}]" for a in data_config.assets}
    else:
        raw = {a.name: load_ohlcv(f) for a, f in zip(data_config.assets, files)}
        sources = {a.name: str(f) for a, f in zip(data_config.assets, files)}
    frame = align_assets(raw, data_config, sources, end_on=end_on)
    frame.index = frame.index.as_unit("ns")
    log.info("market: %d hourly rows %s .. %s, assets %s", len(frame),
             frame.index[0].isoformat(), frame.index[-1].isoformat(),
             [a.name for a in data_config.assets])
    if cache_path is not None and write_cache:
        try:
            write_parquet(cache_path, frame)
        except OSError as exc:
            log.warning("market: could not write cache %s (%s)", cache_path, exc)
    return frame
