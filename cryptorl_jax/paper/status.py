"""`cryptorl paper --status`: the paper book at a glance, and its tracking against the backtest.

The backtest of the same hours is `cryptorl evaluate` over [first booked hour, last booked
hour] on the data as they are now, from the book's own start (the run's book or flat).
Replayed bars track it to rounding; live bars differ only where the data changed after an hour
was booked (a late or revised bar of any asset), which is what the tracking figures measure.

Reading the status changes nothing in the run or its book: status.json, equity.png and the
backtest go to `out_dir` (default `<run>-eval/paper-status/`, beside the run). With
`update_report` they go into the book instead and the run's report.html is re-rendered with
its paper section (`cryptorl paper --status --update-report`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.config import load_config, with_overrides
from cryptorl_jax.core.io import write_json
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.market import load_market
from cryptorl_jax.paper.book import PaperBook
from cryptorl_jax.paper.engine import ledger_frame
from cryptorl_jax.report.html import write_report_html
from cryptorl_jax.report.paper import BOOK_DIR, EQUITY_PNG, STATUS_FILE
from cryptorl_jax.report.plots import naive_utc, nav_axes, save_nav_plot
from cryptorl_jax.walkforward.evaluate import evaluate_window, to_utc
from cryptorl_jax.walkforward.window import RUN_STATE

log = logging.getLogger("cryptorl_jax.paper")


STATUS_DIR = "paper-status"  # in <run>-eval/: where --status writes without --update-report


def paper_status(run_dir: str | Path, book_dir: str | Path | None = None, *,
                 backtest: bool = True, market: pd.DataFrame | None = None,
                 now: pd.Timestamp | None = None, out_dir: str | Path | None = None,
                 update_report: bool = False) -> dict[str, Any]:
    """The book's position, NAV, P&L, costs and (with `backtest`) tracking difference; also
    written to <out_dir>/status.json with <out_dir>/equity.png and <out_dir>/backtest/
    (default out_dir: <run>-eval/paper-status/). `update_report`: write them into the book
    and re-render the run's report.html (its paper section reads the book's files)."""
    run_dir = Path(run_dir)
    book = PaperBook(book_dir if book_dir is not None else run_dir / BOOK_DIR)
    if not book.exists():
        raise FileNotFoundError(f"{book.path}: no paper book (run `cryptorl paper --run "
                                f"{run_dir} --once` first)")
    if update_report:
        dest = book.dir
    else:
        dest = Path(out_dir) if out_dir is not None else RunDir(run_dir).reading_dir / STATUS_DIR
    meta, state = book.meta(), book.state()
    ledger = ledger_frame(book)
    out: dict[str, Any] = {"book": str(book.dir), "segment": meta.get("segment"),
                           "mode": meta.get("mode"), "start": meta.get("start"),
                           "hours": int(len(ledger))}
    if state is not None:
        out["position"] = state.target
    if len(ledger):
        nav = ledger["nav"].to_numpy()
        before = np.concatenate([[1.0], nav[:-1]])
        now = to_utc(now if now is not None else ledger.index[-1])
        day = now.floor("D")
        prior = ledger["nav"][ledger.index < day]
        nav_day = float(prior.iloc[-1]) if len(prior) else 1.0
        out.update({
            "last_hour": str(ledger.index[-1]), "nav": float(nav[-1]),
            "pnl_today": float(nav[-1] / nav_day - 1.0),
            "pnl_since_start": float(nav[-1] - 1.0),
            "costs": float(np.sum(before * ledger["cost"].to_numpy())),
            "financing": float(np.sum(before * ledger["financing"].to_numpy())),
            "turnover": float(ledger["turnover"].sum()),
            "buy_and_hold": float(np.prod(1.0 + ledger["benchmark"].to_numpy()) - 1.0)})
        if backtest:
            out["tracking"] = _tracking(run_dir, dest, meta, ledger, market)
    out["written_to"] = str(dest)
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / STATUS_FILE, out)
    _plot(dest, ledger, out.get("tracking"))
    if update_report:
        _refresh_report(run_dir)
    return out


def _tracking(run_dir: Path, dest: Path, meta: dict[str, Any], ledger: pd.DataFrame,
              market: pd.DataFrame | None) -> dict[str, Any]:
    if market is None:  # the bars the book read: its data directory (live: <book>/data)
        extra = [f"data.data_dir={meta['data_dir']}"] if meta.get("data_dir") else []
        cfg = with_overrides(load_config(RunDir(run_dir).config),
                             ["data.end=null", "data.cache_dir=null", *extra])
        market = load_market(cfg.data, end_on="traded")
    res = evaluate_window(run_dir, int(meta["segment"]), str(ledger.index[0]),
                          str(ledger.index[-1]), out_dir=dest / "backtest", market=market,
                          tearsheet=False,
                          from_run_state=meta.get("start_state") == RUN_STATE)
    bt = res.oos
    common = ledger.index.intersection(bt.index)
    paper, ref = ledger.loc[common], bt.loc[common]
    bt_nav = np.cumprod(1.0 + ref["strategy"].to_numpy())
    diff = paper["strategy"].to_numpy() - ref["strategy"].to_numpy()
    return {"hours_compared": int(len(common)),
            "backtest_nav": float(bt_nav[-1]) if len(bt_nav) else None,
            "nav_difference": float(paper["nav"].iloc[-1] - bt_nav[-1]) if len(bt_nav) else None,
            "max_exposure_difference": float(np.max(np.abs(
                paper["exposure"].to_numpy() - ref["exposure"].to_numpy()), initial=0.0)),
            "tracking_error_annual": float(np.std(diff) * np.sqrt(HOURS_PER_YEAR)) if len(diff) > 1
            else 0.0,
            "backtest_dir": str(res.out_dir)}


def _plot(dest: Path, ledger: pd.DataFrame, tracking: dict[str, Any] | None) -> None:
    if len(ledger) == 0:
        return
    ax = nav_axes((10, 4.5))
    ax.plot(naive_utc(ledger.index), ledger["nav"].to_numpy(), label="paper (live book)",
            lw=1.6)
    bt_path = dest / "backtest" / "oos_returns.parquet"
    if tracking is not None and bt_path.is_file():
        bt = pd.read_parquet(bt_path)
        ax.plot(naive_utc(bt.index), np.cumprod(1.0 + bt["strategy"].to_numpy()),
                label="backtest of the same hours", lw=1.0, ls="--")
        ax.plot(naive_utc(bt.index), np.cumprod(1.0 + bt["benchmark"].to_numpy()),
                label="buy & hold", lw=0.8, alpha=0.6)
    save_nav_plot(ax, dest / EQUITY_PNG, "paper trading: NAV")


def _refresh_report(run_dir: Path) -> None:
    """Re-render the run's report.html (its paper section) from the summary already there."""
    rd = RunDir(run_dir)
    if rd.summary.is_file():
        summary = rd.summary.read_text()
        title = summary.splitlines()[0].lstrip("# ") if summary else "report"
        write_report_html(rd, summary, title)


def format_status(s: dict[str, Any]) -> str:
    """The lines `cryptorl paper --status` prints."""
    lines = [f"paper book {s['book']} (segment {s['segment']}, {s['mode']}), first hour "
             f"{s['start']}, {s['hours']} hours booked"]
    pos = s.get("position")
    if pos:
        seeds = ", ".join(f"{e:+.3f}" for e in pos["seed_exposures"])
        lines.append(f"position at the close of {pos['time']}: exposure {pos['exposure']:+.4f} "
                     f"of NAV in {pos['asset']} (seeds {seeds}) at {pos['close']:.2f}")
    if s["hours"]:
        lines.append(f"NAV {s['nav']:.6f} (last hour {s['last_hour']}); P&L today (UTC) "
                     f"{100 * s['pnl_today']:+.3f} %, since start {100 * s['pnl_since_start']:+.3f}"
                     f" % (buy & hold {100 * s['buy_and_hold']:+.3f} %)")
        lines.append(f"costs {100 * s['costs']:.4f} % and financing {100 * s['financing']:.4f} % "
                     f"of the starting NAV; turnover {s['turnover']:.3f} x NAV")
        tr = s.get("tracking")
        if tr:
            lines.append(f"backtest of the same {tr['hours_compared']} hours: NAV "
                         f"{tr['backtest_nav']:.6f}; paper - backtest {tr['nav_difference']:+.2e}"
                         f", max exposure difference {tr['max_exposure_difference']:.2e}, "
                         f"tracking error {tr['tracking_error_annual']:.2e} a year")
    return "\n".join(lines)
