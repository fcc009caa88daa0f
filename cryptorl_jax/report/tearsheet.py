"""quantstats HTML tearsheets of hourly returns (quantstats is imported on first use; a report
stays usable without it)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.report.plots import naive_utc

log = logging.getLogger("cryptorl_jax.report")


def write_returns_tearsheet(returns: pd.Series | pd.DataFrame, benchmark: pd.Series, path: Path,
                            title: str) -> str | None:
    """quantstats HTML tearsheet of hourly returns (a DataFrame: one strategy per column)
    against a benchmark, 8,760 periods a year, written atomically; None if written, else the
    error (the report stays usable without it)."""
    try:
        import quantstats as qs

        returns = returns.copy()
        returns.index = naive_utc(returns.index)
        bench = pd.Series(benchmark.to_numpy(), index=returns.index, name="BTC buy & hold")
        tmp = path.with_name(f".{path.name}.tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qs.reports.html(returns, bench, periods_per_year=HOURS_PER_YEAR, output=str(tmp),
                            title=title, download_filename=path.name)
        tmp.replace(path)
        return None
    except Exception as exc:
        log.warning("tearsheet %s not written: %s: %s", path, type(exc).__name__, exc)
        return f"{type(exc).__name__}: {exc}"


def write_tearsheet(oos: pd.DataFrame, path: Path, title: str) -> str | None:
    """The strategy vs BTC buy-and-hold tearsheet of an OOS frame; None if written."""
    return write_returns_tearsheet(oos["strategy"].rename("strategy"), oos["benchmark"], path,
                                   title)
