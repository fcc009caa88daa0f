"""Numbers and frames as Markdown text (the reports' tables and figures; no file access)."""

from __future__ import annotations

import math
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


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A Markdown pipe table of a frame (its index as the first column; NaN as 'nan')."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([frame.index.name or "", *cols]) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for idx, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("nan" if not np.isfinite(v) else format(float(v), floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)
