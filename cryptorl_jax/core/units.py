"""Units of time, declared once."""

HOURS_PER_YEAR = 8760
"""Hourly bars in a year: the annualisation of every metric (risk-free 0, as quantstats with
periods=8760) and of the financing rate (borrow_rate_annual / HOURS_PER_YEAR per hour)."""

MIN_ANNUALISED_DAYS = 90
"""The shortest window whose compound growth is annualised (CAGR, Calmar): 90 days, three of
the configs' 720-hour months (2,160 hourly bars). Raising a shorter window's return to the
power 365 / days multiplies its noise (one month's +22 % reads as +1,000 % a year), so
`backtest.metrics` reports CAGR and Calmar as NaN there and the window's total return stands."""


def min_annualised_periods(periods_per_year: float) -> float:
    """The fewest periods whose growth is annualised: MIN_ANNUALISED_DAYS of them at
    `periods_per_year` (2,160 at 8,760 a year)."""
    return periods_per_year * MIN_ANNUALISED_DAYS / 365.0
