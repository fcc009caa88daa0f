"""NAV curves as PNG files: the run's equity curve and the axes other plots share (Agg, outside
pyplot's global state; matplotlib is imported on first use)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.core.io import write_atomic


def nav_axes(figsize: tuple[float, float] = (12, 6)) -> Any:
    """A new Agg figure's axes for NAV curves (log scale), outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_yscale("log")
    ax.set_ylabel("NAV (log scale, 1 at the first OOS hour)")
    ax.grid(alpha=0.3)
    return ax


def save_nav_plot(ax: Any, path: Path, title: str) -> None:
    """Title, legend and an atomic PNG write of a nav_axes plot."""
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.figure.tight_layout()
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())


def naive_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return index.tz_convert("UTC").tz_localize(None)


def plot_equity(oos: pd.DataFrame, segments: list[int], path: Path, title: str) -> None:
    ax = nav_axes()
    idx = naive_utc(oos.index)
    for c in [c for c in oos.columns if c.startswith("seed_")]:
        ax.plot(idx, np.cumprod(1 + oos[c].to_numpy()), color="tab:blue", alpha=0.25, lw=0.7)
    styles = {"strategy": ("tab:blue", 2.0, "strategy (ensemble)"),
              "benchmark": ("black", 1.2, "BTC buy & hold"),
              "vol_targeted_buy_and_hold": ("tab:orange", 1.0, "vol-targeted buy & hold"),
              "random": ("tab:gray", 0.8, "random policy"),
              "strategy_2x_cost": ("tab:red", 0.8, "strategy at 2x costs")}
    for c, (color, lw, label) in styles.items():
        if c in oos.columns:
            ax.plot(idx, np.cumprod(1 + oos[c].to_numpy()), color=color, lw=lw, label=label)
    for k in segments:
        first = oos.index[oos["segment"] == k][:1]
        ax.axvline(naive_utc(first)[0], color="k", ls=":", lw=0.6)
    save_nav_plot(ax, path, title)
