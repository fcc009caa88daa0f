"""The data dictionary: every column of a run's metrics.csv (and of comparison.csv, which holds
the same metrics per series), its unit and a one-line definition, declared once.

`summary.md` and `report.html` end with `units_markdown()` (their section "Units"), and
docs/reference.md ("Units of the report's columns") holds the same table; a test keeps all three
equal and checks that every column a run writes is declared here. `INTEGER_COLUMNS` are counts
written as integers. The formulas: docs/reference.md, "Metrics".

Conventions: a *fraction* is a share of 1 (0.05 = 5 %); *a year* means annualised at
`core.units.HOURS_PER_YEAR` = 8,760 hours; *x NAV* is a multiple of the book's net asset value.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptorl_jax.core.units import MIN_ANNUALISED_DAYS


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    definition: str
    integer: bool = False


_SHORT = (f"NaN for a window shorter than {MIN_ANNUALISED_DAYS} days (2,160 h: a one-month "
          "segment's row, say): read `total_return` there")

COLUMNS: tuple[Column, ...] = (
    Column("segment", "label", "the walk-forward segment (0, 1, ...) or `all`, the stitched "
           "OOS series; `report.Run` indexes by the integer and `'all'`"),
    Column("start", "UTC time", "the row's first OOS hour (bar close time)"),
    Column("end", "UTC time", "the row's last OOS hour (bar close time)"),
    Column("n_periods", "hours", "hourly returns in the row", integer=True),
    Column("total_return", "fraction", "compound return over the row's hours, prod(1 + r) - 1, "
           "not annualised"),
    Column("cagr", "fraction a year", "compound annual growth, (1 + total_return) ^ (8760 / "
           f"n_periods) - 1; {_SHORT}"),
    Column("volatility", "fraction a year", "std(r) * sqrt(8760)"),
    Column("sharpe", "ratio, annualised", "mean(r) / std(r) * sqrt(8760), risk-free rate 0"),
    Column("sortino", "ratio, annualised", "mean(r) / downside deviation * sqrt(8760)"),
    Column("max_drawdown", "fraction (<= 0)", "deepest fall of the NAV from its running peak, "
           "NAV starting at 1"),
    Column("calmar", "ratio", f"cagr / abs(max_drawdown); {_SHORT}"),
    Column("hit_rate", "fraction of hours", "share of positive returns among the non-zero ones"),
    Column("exposure", "x NAV", "mean abs(exposure) (position notional / NAV) over the hours"),
    Column("turnover", "x NAV a year", "sum of abs(change of exposure) * 8760 / n_periods "
           "(50 = the book trades 50 times its NAV a year)"),
    Column("benchmark_return", "fraction", "BTC buy & hold's compound return over the same "
           "hours, no costs"),
    Column("excess_return", "fraction", "total_return - benchmark_return (a difference of "
           "total returns, not annualised)"),
    Column("beta", "ratio", "cov(r, benchmark) / var(benchmark)"),
    Column("alpha", "fraction a year", "(mean(r) - beta * mean(benchmark)) * 8760, arithmetic, "
           "annualised"),
    Column("psr", "probability", "Probabilistic Sharpe: P[true Sharpe > 0] from the hourly "
           "returns' Sharpe, skew and kurtosis"),
    Column("cost_per_year", "fraction of NAV a year", "trading costs (fee + slippage) paid, "
           "sum * 8760 / n_periods (0.012 = 1.2 % of NAV a year)"),
    Column("financing_per_year", "fraction of NAV a year", "financing paid on borrowed "
           "notional, sum * 8760 / n_periods"),
    Column("timing_p_value", "probability", "the timing null's p: the seeds' actions rotated "
           "in time earn a Sharpe at least as high (NaN: too short for the null)"),
    Column("timing_memory_hours", "hours", "M, the agents' declared memory: the timing null "
           "rotates by lags longer than M", integer=True),
    Column("dsr", "probability", "Deflated Sharpe over the n_trials runs registered over this "
           "OOS window (`all` row)"),
    Column("n_trials", "count", "runs registered over this OOS window and market (`all` row): "
           "the N of dsr and of the verdict", integer=True),
    Column("mde_sharpe", "ratio, annualised", "the smallest Sharpe a 5 % one-sided test "
           "detects with 80 % power over the row's hours"),
    Column("underpowered", "true / false", "mde_sharpe above 2: the row's Sharpe alone says "
           "almost nothing"),
    Column("n_trials_sceptic", "count", "runs + tuning trials + seeds + baseline settings "
           "tried (`all` row)", integer=True),
    Column("n_trials_effective", "count (real)", "rho + (1 - rho) * n_trials_sceptic, rho the "
           "held series' mean correlation (`all` row)"),
    Column("dsr_sceptic", "probability", "Deflated Sharpe at N = n_trials_sceptic (`all` row)"),
    Column("dsr_effective", "probability", "Deflated Sharpe at N = n_trials_effective "
           "(`all` row)"),
)
"""metrics.csv's columns, in the order it writes them."""

UNITS: dict[str, Column] = {c.name: c for c in COLUMNS}
INTEGER_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.integer)
UNITS_HEADING = "Units"
"""The heading of the reports' units section (anchor `#units`)."""


def unit_of(name: str) -> str:
    """A column's unit ('' for a column the dictionary does not declare)."""
    column = UNITS.get(name)
    return column.unit if column is not None else ""


def units_markdown() -> str:
    """The dictionary as a Markdown table: column, unit, definition."""
    lines = ["| column | unit | definition |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.unit} | {c.definition} |" for c in COLUMNS]
    return "\n".join(lines)
