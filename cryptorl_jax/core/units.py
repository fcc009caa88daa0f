"""Units of time, declared once."""

HOURS_PER_YEAR = 8760
"""Hourly bars in a year: the annualisation of every metric (risk-free 0, as quantstats with
periods=8760) and of the financing rate (borrow_rate_annual / HOURS_PER_YEAR per hour)."""
