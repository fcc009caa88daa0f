"""The data dictionary (core/dictionary.py): every column a run's metrics.csv holds has a unit
and a definition, counts are written as integers, the reports link the units table and
docs/reference.md holds the same table; memory in the summary is in plain MiB."""

from __future__ import annotations

import re

import pandas as pd

from cryptorl_jax.core.dictionary import COLUMNS, INTEGER_COLUMNS, UNITS, units_markdown
from cryptorl_jax.report.html import anchor, markdown_to_html
from cryptorl_jax.report.markdown import markdown_table
from cryptorl_jax.report.summary import timings_table


def test_every_metrics_column_is_declared_in_order(tiny_run):
    workdir = tiny_run[1]
    header = (workdir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == [c.name for c in COLUMNS]
    comparison = pd.read_csv(workdir / "comparison.csv", index_col=0)
    assert set(comparison.columns) <= set(UNITS)


def test_counts_are_written_as_integers(tiny_run):
    workdir = tiny_run[1]
    rows = pd.read_csv(workdir / "metrics.csv", dtype=str, keep_default_na=False)
    assert set(INTEGER_COLUMNS) == {"n_periods", "timing_memory_hours", "n_trials",
                                    "n_trials_sceptic"}
    for col in INTEGER_COLUMNS:
        for cell in rows[col]:
            assert cell == "" or re.fullmatch(r"\d+", cell), (col, cell)
    assert rows.set_index("segment").loc["all", "n_trials"] == "1"
    assert rows["n_periods"].tolist() == ["100", "100"]


def test_the_reports_end_with_the_units_and_link_them(tiny_run):
    workdir = tiny_run[1]
    text = (workdir / "summary.md").read_text()
    assert "[Units](#units)" in text.split("## Is the Sharpe real?")[0]
    assert text.rstrip().endswith(units_markdown())
    assert "\n## Units\n" in text
    page = (workdir / "report.html").read_text()
    assert '<h2 id="units">Units</h2>' in page and '<a href="#units">Units</a>' in page
    assert anchor("Units") == "units"
    # the stitched OOS (100 h) is shorter than 90 days: no CAGR, and the summary says why
    assert "CAGR and Calmar are NaN: the stitched OOS has 100 hours" in text


def test_reference_md_holds_the_units_table_and_links_the_reports(repo_root):
    text = (repo_root / "docs" / "reference.md").read_text()
    assert units_markdown() in text, ("docs/reference.md must hold core.dictionary."
                                      "units_markdown()'s table")
    assert "summary.md" in text.split("## Units of the report's columns")[1].split("\n## ")[0]


def test_definitions_hold_no_pipe():
    """A '|' in a unit or definition would split its Markdown table row."""
    assert not [c.name for c in COLUMNS if "|" in c.unit + c.definition]


def test_memory_is_plain_mib_and_seconds_plain():
    timings = pd.DataFrame({"train_s": [1234.56], "rss_mb": [1412.3], "peak_rss_mb": [1500.9]},
                           index=pd.Index([0], name="segment"))
    text = timings_table(timings)
    assert "1412" in text and "1501" in text and "1234.6" in text and "e+" not in text
    assert "| (unit) | s | MiB | MiB |" in text


def test_a_unit_row_and_links_render_in_html():
    frame = pd.DataFrame({"sharpe": [1.0]}, index=pd.Index(["all"], name="segment"))
    md = markdown_table(frame, units={"sharpe": "ratio, annualised"})
    assert md.splitlines()[2] == "| (unit) | ratio, annualised |"
    page = markdown_to_html(md + "\n\nsee [Units](#units)\n\n## Units\n")
    assert "<td>(unit)</td><td>ratio, annualised</td>" in page
    assert '<a href="#units">Units</a>' in page and '<h2 id="units">' in page
