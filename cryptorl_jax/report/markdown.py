"""Numbers and frames as Markdown text (the reports' tables and figures; no file access)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def fmt(x: Any, spec: str = ".3f") -> str:
    """A number as text, 'undefined' when it is not finite (or not a number's text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "undefined" if not math.isfinite(v) else format(v, spec)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g", *,
                   units: Mapping[str, str] | None = None,
                   formats: Mapping[str, str] | None = None) -> str:
    """A Markdown pipe table of a frame (its index as the first column; NaN as 'nan').

    `units` (column -> unit) adds a first row `(unit)` giving each column's unit (blank where
    it names none); `formats` (column -> format spec) overrides `floatfmt` per column."""
    cols = [str(c) for c in frame.columns]
    specs = [(formats or {}).get(c, floatfmt) for c in cols]
    lines = ["| " + " | ".join([frame.index.name or "", *cols]) + " |",
             "|" + "---|" * (len(cols) + 1)]
    if units is not None:
        lines.append("| " + " | ".join(["(unit)", *[units.get(c, "") for c in cols]]) + " |")
    for idx, row in frame.iterrows():
        cells = []
        for v, spec in zip(row, specs, strict=True):
            if isinstance(v, (float, np.floating)):
                cells.append("nan" if not np.isfinite(v) else format(float(v), spec))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)
