"""Can the method find an edge that IS there? The power study on planted-edge markets.

    cryptorl power --config configs/power.yaml --edge trend,none --strength 0,2,4 --repeats 3

For every family f, strength s and repeat r, `studies.planted.write_planted_market` writes a
data directory (market seed r) under `<out>/<run_name>-markets/`, and the walk-forward runs on
it with the same runner as `cryptorl wfo` (`walkforward.driver.run`, any executor), as the
config with `data.data_dir` pointed there and run_name `<run_name>-<f>-s<s>-r<r>`. The
planted oracle's sign policy is then replayed through the same backtest over the SAME OOS hours
(each segment from a flat book, like the agents: `backtest.simulate` with the run's env), so
the agent and the oracle are measured alike. Outputs in `<out>/<run_name>-power/`:

- `power.csv`: one row per run: the oracle's stitched-OOS Sharpe after costs, the ensemble's
  and each seed's OOS Sharpe, the in-sample Sharpe (its agents over their own train rows),
  PSR, turnover, exposure, the flags, `recovered` = ensemble Sharpe / oracle Sharpe, and the
  detections: `detected` = the verdict the run's report prints (`report.verdict.edge`: PSR >=
  0.95^(1/N) with no vetoing flag; docs/methods.md), `detected_psr` = PSR >= 0.95 alone,
  `oracle_detected` and `best_baseline_detected` = the same rule on the oracle's OOS path (N =
  1) and on the best fitted baseline's (N = the fitted baselines it was picked from), and `mds`
  = the Sharpe the rule detects with 80 % probability over the run's OOS hours;
- `power_summary.csv` / `power.md`: per family and strength, the mean and sd over repeats of
  the oracle's, the ensemble's and the seeds' Sharpe, the fraction of the oracle recovered
  (ensemble, and the worst seed), the in-sample/OOS gap, each detection rate with its Wilson
  95 % interval, at strength 0 the false-positive rate (the verdict's, with its interval), and
  the OOS hours the rule would need to detect the oracle's and the agents' mean Sharpe with
  80 % probability (`report.calibration.hours_to_detect`);
- `power.png`: the power curve (ensemble Sharpe against the oracle's, per family, with the
  lines y = x and y = x / 2).

`sets` (`cryptorl power --market-set`): the selection set (above; the default) and / or the
held-out set (market/heldout.py: every family from other processes and parameters, seed =
1,000,000 + the repeat, market and run tagged `heldout-<f>-s<s>-r<r>`), on which no setting
is chosen (`studies.protocol`); the summary is per set, and the page shows each set in its own
table (`studies.power_page`).

`--doc PATH` also writes the Markdown page (e.g. docs/power.md) with the command, the wall
time and the machine.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.backtest.columns import fitted_baselines
from cryptorl_jax.backtest.diagnostics import seed_columns
from cryptorl_jax.backtest.metrics import probabilistic_sharpe, sharpe
from cryptorl_jax.config import Config, ConfigError
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.units import HOURS_PER_YEAR
from cryptorl_jax.market import load_market
from cryptorl_jax.market.planted import META_FILE, ORACLE_FILE
from cryptorl_jax.report import Run, calibration
from cryptorl_jax.report.verdict import edge
from cryptorl_jax.studies.cells import Cell, cells, market_dir, run_config
from cryptorl_jax.studies.planted import write_planted_market
from cryptorl_jax.studies.power_page import (
    DETECTIONS,
    baseline_names,
    page_markdown,
    plot_power,
    rate_name,
    with_set,
)
from cryptorl_jax.walkforward.executor import Executor

log = logging.getLogger("cryptorl_jax.power")

DETECTION_PSR = calibration.LEVEL  # the PSR-only detection shown beside the verdict's
# where a page's ablation section starts (scripts/power_ablation.py writes it; --doc keeps it)
ABLATION_MARKER = "<!-- ablation: scripts/power_ablation.py -->"
LEARNERS_MARKER = "<!-- learners: scripts/power_learners.py -->"
KEPT_MARKERS = (LEARNERS_MARKER, ABLATION_MARKER)
"""The sections other commands write into the page, in page order; `--doc` keeps them."""
IGNORED_SETS = ("data.data_dir=", "run_name=", "output.")


def run_sets(run_dir: Path) -> list[str]:
    """A power run's --set overrides (those that change what is learnt), from its
    run_info.json: the settings scripts/power_ablation.py and power_learners.py print."""
    info = json.loads((Path(run_dir) / "run_info.json").read_text())
    cmd = info.get("command") or []
    sets = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "--set"]
    return [s for s in sets if not s.startswith(IGNORED_SETS)]


@dataclass
class PowerResult:
    rows: pd.DataFrame
    summary: pd.DataFrame
    out_dir: Path
    doc: Path | None
    seconds: float


def ensure_market(path: Path, cell: Cell) -> Path:
    """Write the planted data directory of `cell` unless it is already there with the same
    set, family, strength and seed (planted.json; one written before issue 40 names no set:
    the selection set's)."""
    meta = path / META_FILE
    if meta.is_file():
        held = json.loads(meta.read_text())
        if (held.get("set", "selection"), held.get("family"), float(held.get("strength", -1)),
                held.get("seed")) == (cell.set, cell.family, cell.strength, cell.seed):
            return path
    (planted_writer or write_planted_market)(path, cell.family, cell.strength, cell.seed,
                                             market_set=cell.set)
    return path


# tests replace it with a writer of a shorter span (None: studies.planted.write_planted_market)
planted_writer = None


def oracle_oos_returns(cfg: Config, data_dir: Path, run: Any) -> pd.Series:
    """The oracle's sign policy replayed like the agents over the run's OOS rows: per segment
    from a flat book at its first decision (`walkforward.runner.replay_rows`, the run's env: vol
    targeting, no-trade band, costs, financing), stitched on the run's OOS index."""
    from cryptorl_jax.walkforward.runner import replay_rows

    market = load_market(cfg.data)
    oracle = pd.read_parquet(data_dir / ORACLE_FILE)
    action = oracle["action"].reindex(market.index).fillna(0.0).to_numpy(np.float64)
    close = market[f"{cfg.data.traded_asset}_close"].to_numpy(np.float64)
    fresh = market[f"{cfg.data.traded_asset}_fresh"].to_numpy() > 0
    index = market.index
    parts = []
    for k in run.segment_numbers:
        seg_oos = run.oos[run.oos["segment"] == k]
        test_start = int(index.get_loc(seg_oos.index[0]))
        test_end = int(index.get_loc(seg_oos.index[-1])) + 1
        sim = replay_rows(cfg, close, fresh, test_start, test_end,
                          action[test_start - 1:test_end - 1])
        parts.append(pd.Series(sim["returns"], index=index[test_start:test_end]))
    return pd.concat(parts)


def drift_captured(frames: Sequence[pd.DataFrame], drift: pd.Series) -> float:
    """sum_t e_t mu_t / sum_t |L_t mu_t| over the frames' hours: the planted drift mu_t of the
    hour's return that the held exposure e_t earns, as a share of what the sign oracle earns at
    the same leverage L_t (1: every hour on the drift's side at full vol-targeted size; 0: none
    of it; < 0: against it). A frame's row t holds the return of bar t and the exposure and
    leverage chosen at the close of row t - 1, so its drift is `drift` (oracle.parquet's
    `next_drift`, indexed by the close that chooses the action) one hour earlier. It reads the
    drift, not the realised returns, so it carries none of the returns' noise: over six
    one-month segments it separates policies whose Sharpe ratios (standard error ~1.4) cannot.
    NaN where the market has no drift (family none)."""
    num = den = 0.0
    for f in frames:
        mu = drift.reindex(f.index - pd.Timedelta(hours=1)).to_numpy(np.float64)
        e = f["exposure"].to_numpy(np.float64)
        lev = f["leverage"].to_numpy(np.float64)
        ok = np.isfinite(mu) & np.isfinite(e) & np.isfinite(lev)
        num += float(np.sum(e[ok] * mu[ok]))
        den += float(np.sum(np.abs(lev[ok] * mu[ok])))
    return num / den if den > 0 else math.nan


def _sharpe(r) -> float:
    return float(sharpe(np.asarray(r, np.float64), HOURS_PER_YEAR))


def cell_row(cfg: Config, cell: Cell, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The figures of one finished run against its market's oracle."""
    run = Run.load(run_dir)
    oracle = oracle_oos_returns(cfg, data_dir, run)
    if not oracle.index.equals(run.oos.index):
        raise RuntimeError(f"{run_dir}: the oracle's OOS hours differ from the run's")
    head = run.headline
    diag = run.diagnostics.loc["all"]
    seeds = seed_columns(run.oos, "seed_")
    seed_sharpes = [_sharpe(run.oos[c]) for c in seeds]
    oracle_sr = _sharpe(oracle)
    ens = float(head["sharpe"])
    drift = pd.read_parquet(data_dir / ORACLE_FILE)["next_drift"]
    row = {"set": cell.set, "family": cell.family, "strength": cell.strength,
           "repeat": cell.repeat, "seed": cell.seed,
           "oracle_sharpe": oracle_sr, "sharpe": ens,
           "drift_captured": drift_captured([run.oos], drift),
           "insample_drift_captured": drift_captured(list(run.insample.values()), drift),
           "seed_sharpe_mean": float(np.mean(seed_sharpes)) if seed_sharpes else math.nan,
           "seed_sharpe_min": float(np.min(seed_sharpes)) if seed_sharpes else math.nan,
           "insample_sharpe": float(diag["insample_sharpe"]),
           "psr": float(head.get("psr", math.nan)),
           "timing_p_value": float(head.get("timing_p_value", math.nan)),
           "turnover": float(head.get("turnover", math.nan)),
           "exposure": float(head.get("exposure", math.nan)),
           "flags": str(diag.get("flags", "")), "oos_hours": len(run.oos),
           "run_dir": str(run_dir)}
    for s, v in enumerate(seed_sharpes):
        row[f"seed_{s}_sharpe"] = v
    positive = oracle_sr > 0 and cell.strength > 0  # at strength 0 there is nothing to recover
    row["recovered"] = ens / oracle_sr if positive else math.nan
    row["seed_recovered_min"] = row["seed_sharpe_min"] / oracle_sr if positive else math.nan
    row.update(detections(head, run.flags, oracle, run.oos))
    for name in fitted_baselines(run.oos):  # the baselines that read the market, same hours
        sr = _sharpe(run.oos[name])
        row[f"{name}_sharpe"] = sr
        row[f"{name}_recovered"] = sr / oracle_sr if positive else math.nan
    return row


def detections(head: Mapping[str, Any], flags: list[str], oracle: pd.Series,
               oos: pd.DataFrame) -> dict[str, Any]:
    """A run's detections: `detected` = the verdict its report prints (`report.verdict.edge`
    on metrics.csv's `all` row and the run's flags), `detected_psr` = PSR >= 0.95 alone, and the
    verdict's rule on the oracle's OOS path (N = 1, no flag) and on the best fitted baseline's
    (by OOS Sharpe; N = the fitted baselines, as it was picked from them); `mds` = the true
    Sharpe the rule detects with 80 % probability over these OOS hours at the run's N."""
    psr = float(head.get("psr", math.nan))
    n_trials = float(head.get("n_trials", 1.0))
    n_trials = n_trials if math.isfinite(n_trials) and n_trials >= 1 else 1.0
    o = oracle.to_numpy(np.float64)
    out: dict[str, Any] = {
        "detected": edge(head, flags), "detected_psr": bool(psr >= DETECTION_PSR),
        "oracle_psr": probabilistic_sharpe(o),
        "mds": calibration.min_detectable_sharpe(len(oos), n_trials)}
    out["oracle_detected"] = bool(calibration.passes(_sharpe(o), out["oracle_psr"], 1))
    names = list(fitted_baselines(oos))
    srs = {n: _sharpe(oos[n]) for n in names}
    srs = {n: v for n, v in srs.items() if math.isfinite(v)}
    if srs:
        best = max(srs, key=srs.get)
        out["best_baseline"] = best
        out["best_baseline_psr"] = probabilistic_sharpe(oos[best].to_numpy(np.float64))
        out["best_baseline_detected"] = bool(
            calibration.passes(srs[best], out["best_baseline_psr"], len(names)))
    else:
        out["best_baseline"], out["best_baseline_psr"] = "", math.nan
        out["best_baseline_detected"] = math.nan
    return out


def seed_recovered_mean_min(g: pd.DataFrame) -> float:
    """The worst seed's recovery averaged over the repeats: for each seed index k, the mean over
    repeats of seed k's Sharpe / the oracle's, then the minimum over k (NaN where nothing is to
    be recovered). `seed_recovered_min` is the strict reading (the worst seed of the worst
    repeat); a seed's six-month Sharpe has a standard error of ~1.4, so this one, averaged like
    `recovered_mean`, is the one that says whether a seed, not a draw, falls short."""
    cols = [c for c in g.columns if re.fullmatch(r"seed_\d+_sharpe", c)]
    positive = (g["oracle_sharpe"] > 0) & (g["strength"] > 0)  # cell_row's rule for recovered
    if not cols or not positive.any():
        return math.nan
    ratios = g.loc[positive, cols].div(g.loc[positive, "oracle_sharpe"], axis=0)
    return float(ratios.mean(axis=0).min())


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per market set, family and strength: means and sds over repeats, detection and false
    positives (rows without a `set` column are the selection set's)."""
    out = []
    rows = with_set(rows)
    for (market_set, family, strength), g in rows.groupby(["set", "family", "strength"],
                                                          sort=False):
        r = {"set": market_set, "family": family, "strength": strength, "repeats": len(g)}
        for col in ("oracle_sharpe", "sharpe", "seed_sharpe_mean", "insample_sharpe",
                    "drift_captured", "insample_drift_captured", "turnover"):
            r[f"{col}_mean"] = float(g[col].mean())
            r[f"{col}_sd"] = float(g[col].std(ddof=1)) if len(g) > 1 else math.nan
        r["recovered_mean"] = float(g["recovered"].mean())
        r["seed_recovered_min"] = float(g["seed_recovered_min"].min())
        r["seed_recovered_mean_min"] = seed_recovered_mean_min(g)
        r["gap_mean"] = float((g["insample_sharpe"] - g["sharpe"]).mean())
        for col in DETECTIONS:
            r.update(rate_with_interval(g[col] if col in g else pd.Series(dtype=float),
                                        rate_name(col)))
        nothing = strength == 0
        r["false_positive_rate"] = r["detection_rate"] if nothing else math.nan
        r["false_positive_lo"] = r["detection_lo"] if nothing else math.nan
        r["false_positive_hi"] = r["detection_hi"] if nothing else math.nan
        r["oos_hours"] = float(g["oos_hours"].mean()) if "oos_hours" in g else math.nan
        r["mds"] = float(g["mds"].mean()) if "mds" in g else math.nan
        r["hours_to_detect_oracle"] = calibration.hours_to_detect(r["oracle_sharpe_mean"])
        r["hours_to_detect_agents"] = calibration.hours_to_detect(r["sharpe_mean"])
        for name in baseline_names(rows):
            r[f"{name}_sharpe_mean"] = float(g[f"{name}_sharpe"].mean())
            r[f"{name}_recovered_mean"] = float(g[f"{name}_recovered"].mean())
        out.append(r)
    return pd.DataFrame(out)


def rate_with_interval(flags: pd.Series, name: str) -> dict[str, float]:
    """`<name>_rate`, `<name>_n` and the Wilson 95 % interval `<name>_lo` / `<name>_hi` of a
    column of detections (NaN entries, e.g. no baseline, left out)."""
    x = pd.to_numeric(flags, errors="coerce").dropna().astype(float)
    n, k = len(x), float(x.sum())
    lo, hi = calibration.wilson(k, n)
    return {f"{name}_rate": k / n if n else math.nan, f"{name}_n": float(n),
            f"{name}_lo": lo, f"{name}_hi": hi}


def run_power(cfg: Config, out_dir: str | Path, families: Sequence[str],
              strengths: Sequence[float], repeats: int | Mapping[str, int], *, resume: bool = False,
              progress: bool | None = None, executor: Executor | None = None,
              doc: str | Path | None = None, command: str = "",
              sets: Sequence[str] = ("selection",)) -> PowerResult:
    """Run (or resume) the power study and write its outputs (module docstring); `sets`: the
    market sets (market/heldout.py), each with every family, strength and repeat."""
    from cryptorl_jax.walkforward import driver

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    todo = cells(families, strengths, repeats, sets)
    if cfg.data.data_dir is None:
        raise ConfigError("data.data_dir", "the power study needs a template data directory",
                          cfg.source)
    rows = []
    for cell in todo:
        data_dir = ensure_market(market_dir(out_dir, cfg, cell), cell)
        run_cfg = run_config(cfg, cell, data_dir)
        run_dir = out_dir / run_cfg.run_name
        log.info("power %s: %s -> %s", cfg.run_name, cell.tag, run_dir)
        driver.run(run_cfg, run_dir, resume=resume, progress=progress, executor=executor)
        rows.append(cell_row(run_cfg, cell, data_dir, run_dir))
    frame = pd.DataFrame(rows)
    summary = summarise(frame)
    dest = out_dir / f"{cfg.run_name}-power"
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "power.csv", frame.to_csv(index=False))
    write_atomic(dest / "power_summary.csv", summary.to_csv(index=False))
    plot_power(summary, dest / "power.png")
    seconds = time.perf_counter() - t0
    md = page_markdown(summary, frame, command, seconds, cfg)
    write_atomic(dest / "power.md", md)
    doc_path = None
    if doc is not None:  # the page and its figure side by side (docs/power.md, docs/power.png)
        doc_path = Path(doc)
        doc_path.parent.mkdir(parents=True, exist_ok=True)
        figure = doc_path.with_suffix(".png")  # beside the page, named after it
        shutil.copyfile(dest / "power.png", figure)
        page = md.replace("](power.png)", f"]({figure.name})")
        if doc_path.is_file():  # keep the sections other commands write (KEPT_MARKERS)
            old = doc_path.read_text()
            at = min((old.index(m) for m in KEPT_MARKERS if m in old), default=None)
            if at is not None:
                page = page.rstrip("\n") + "\n\n" + old[at:]
        write_atomic(doc_path, page)
    return PowerResult(rows=frame, summary=summary, out_dir=dest, doc=doc_path, seconds=seconds)
