"""Names shared across layers, declared once: the bundled data files and the metric columns."""

BUNDLED_FILES = {"BTC": "BTC_1h.csv.gz", "ETH": "ETH_1h.csv.gz", "SPY": "SPY_1h.csv.gz",
                 "DXY": "DXY_1h.csv.gz"}
"""The bundled hourly files in data/ (data/SOURCES.md), by asset: the default config's inputs
and the template a planted market is written in the format of."""

PERFORMANCE_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
                       "volatility")
"""`backtest.metrics.compute_metrics`' performance figures of one return series, in the order
every table shows them (annualised with `core.units.HOURS_PER_YEAR`)."""

POSITION_METRICS = ("turnover", "exposure")
"""compute_metrics' figures of the position path: turnover and mean |exposure| per year/hour."""

HEADLINE_METRICS = (*PERFORMANCE_METRICS, "hit_rate")
"""The headline table of a run (summary.md's, `cryptorl show`'s): the performance figures and
the hit rate."""
