"""Regime plot: the price coloured by the most likely filtered state, probabilities beneath."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def state_colors(n_states: int) -> list:
    """Calm (green) -> turbulent (red) colours, one per state."""
    from matplotlib import colormaps

    cmap = colormaps["RdYlGn_r"]
    return [cmap(v) for v in np.linspace(0.1, 0.9, max(n_states, 1))][:n_states]


def plot_regimes(close: pd.Series, proba: np.ndarray, path: str | Path, title: str = "",
                 test_start: int | None = None) -> Path:
    """Write a PNG: price segments coloured by argmax_k Prob_k (grey before the filter starts),
    and the stacked filtered state probabilities underneath; `test_start` (a row) draws the
    train/test boundary."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(close):
        raise ValueError(f"plot_regimes: proba must be [T, K] with T = len(close) = "
                         f"{len(close)}, got shape {proba.shape}")
    n_states = proba.shape[1]
    colors = state_colors(n_states)
    grey = (0.6, 0.6, 0.6, 1.0)
    if isinstance(close.index, pd.DatetimeIndex):
        from matplotlib.dates import date2num

        x = date2num(close.index.tz_convert("UTC").tz_localize(None).to_pydatetime())
    else:
        x = np.arange(len(close), dtype=np.float64)
    y = close.to_numpy(dtype=np.float64)
    known = np.isfinite(proba).all(axis=1)
    state = np.where(known, np.nanargmax(np.where(known[:, None], proba, 0.0), axis=1), -1)

    fig = Figure(figsize=(12, 6), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    if len(y) > 1:
        points = np.column_stack([x, y])
        segments = np.stack([points[:-1], points[1:]], axis=1)  # [T-1, 2, 2]
        seg_colors = [colors[s] if s >= 0 else grey for s in state[1:]]
        top.add_collection(LineCollection(segments, colors=seg_colors, linewidths=1.0))
        top.set_xlim(x[0], x[-1])
        finite = y[np.isfinite(y)]
        if len(finite):
            pad = 0.02 * (finite.max() - finite.min() or abs(finite.max()) or 1.0)
            top.set_ylim(finite.min() - pad, finite.max() + pad)
    top.set_ylabel(str(close.name or "price"))
    top.set_title(title)
    top.legend(handles=[Line2D([], [], color=colors[k], label=f"state {k}")
                        for k in range(n_states)], loc="upper left", ncol=n_states, fontsize=8)
    bottom.stackplot(x, np.nan_to_num(proba, nan=0.0).T, colors=colors, linewidth=0)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("P(state | past)")
    if test_start is not None and 0 <= test_start < len(x):
        for ax in (top, bottom):
            ax.axvline(x[test_start], color="black", linestyle="--", linewidth=1.0)
        top.annotate("test", (x[test_start], 1.0), xycoords=("data", "axes fraction"),
                     xytext=(4, -12), textcoords="offset points", fontsize=8)
    if isinstance(close.index, pd.DatetimeIndex):
        bottom.xaxis_date()
        fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
