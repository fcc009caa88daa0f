"""The learners side by side on both market sets, against issue 40's done-when bars.

    python scripts/power_learners.py --learner tqc=OUT [--learner tqc=OUT2 ...] \
        --learner direct=OUT3 ... [--doc docs/power.md] [--csv FILE]

Each OUT is a `cryptorl power --out` directory (its `<run_name>-power/power.csv`, one or both
market sets); a label given more than once reads every directory named with it (e.g. its
selection runs and its held-out runs, made by two invocations). Per set, family and strength
the table lists, for every learner, the ensemble's mean OOS Sharpe over the repeats, its worst
repeat, the drift it captured, its in-sample Sharpe and turnover, and the best same-information
baseline (the fitted baseline, momentum / vol-scaled momentum / crossover / ridge, with the
highest mean Sharpe over the same repeats; each baseline's settings are fitted on the train
rows as the report fits them), then the bars of issue 40 (at strength 4, >= 3 repeats):

- trend, lead, regime: mean >= 90 % of the best baseline's, worst repeat > 0; trend also drift
  captured >= 0.5;
- none: mean >= -0.5, in-sample < 1.5, turnover <= 20x NAV a year.

Every row reads only results; nothing here chooses a setting (the held-out rows confirm
settings chosen on the selection set, `studies.protocol`). With --doc the section replaces
the page's learners section (from `power.LEARNERS_MARKER` to the ablation section, which it
keeps; `cryptorl power --doc` keeps both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from cryptorl_jax.report.markdown import markdown_table
from cryptorl_jax.studies import power
from cryptorl_jax.studies.power_page import with_set

BASELINES = ("momentum", "momentum_scaled", "crossover", "ridge")
EDGE_BAR, DRIFT_BAR = 0.9, 0.5
NONE_MEAN, NONE_INSAMPLE, NONE_TURNOVER = -0.5, 1.5, 20.0


def read_learner(label: str, out_dirs: list[Path]) -> pd.DataFrame:
    """Every power.csv row under the learner's directories, tagged with its label and the
    run's --set overrides (the first run's run_info.json)."""
    frames = []
    for d in out_dirs:
        found = sorted(d.glob("*-power/power.csv"))
        if not found:
            raise SystemExit(f"{d}: no <run_name>-power/power.csv (a `cryptorl power --out`)")
        frames += [with_set(pd.read_csv(p)) for p in found]
    rows = pd.concat(frames, ignore_index=True).drop_duplicates(
        ["set", "family", "strength", "repeat"], keep="last", ignore_index=True)
    return rows.assign(learner=label, settings=_settings(rows), commits=_commits(rows))


def _run_dirs(rows: pd.DataFrame) -> list[Path]:
    """The learner's run directories that hold a run_info.json."""
    dirs = [Path(d) for d in rows.get("run_dir", pd.Series(dtype=str)).dropna()]
    return [d for d in dirs if (d / "run_info.json").is_file()]


def _settings(rows: pd.DataFrame) -> str:
    dirs = _run_dirs(rows)
    return " ".join(power.run_sets(dirs[0])) if dirs else ""


def _commits(rows: pd.DataFrame) -> str:
    """The commits the learner's runs were computed at (run_info.json), short, in order."""
    seen = {}
    for run_dir in _run_dirs(rows):
        git = json.loads((run_dir / "run_info.json").read_text()).get("git") or {}
        if git.get("sha"):
            seen[git["sha"][:7] + (" dirty" if git.get("dirty") else "")] = None
    return ", ".join(seen) or "unknown"


def learner_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per set, family, strength and learner: the figures and the bars."""
    out = []
    for (set_, family, strength, learner), g in rows.groupby(
            ["set", "family", "strength", "learner"], sort=False):
        base = {b: g[f"{b}_sharpe"].mean() for b in BASELINES if f"{b}_sharpe" in g}
        best = max(base, key=lambda b: base[b]) if base else None
        row = {"set": set_, "family": family, "strength": strength, "learner": learner,
               "repeats": len(g), "oracle": g["oracle_sharpe"].mean(),
               "sharpe_mean": g["sharpe"].mean(), "sharpe_worst": g["sharpe"].min(),
               "drift_captured": g["drift_captured"].mean(),
               "insample_sharpe": g["insample_sharpe"].mean(),
               "turnover": g["turnover"].mean(),
               "best_baseline": best, "best_baseline_sharpe": base.get(best, float("nan"))}
        row["vs_best"] = row["sharpe_mean"] / row["best_baseline_sharpe"] \
            if best is not None and row["best_baseline_sharpe"] > 0 and family != "none" \
            else float("nan")  # nothing to recover where nothing is planted
        row["bars"] = bars(row)
        out.append(row)
    return pd.DataFrame(out)


def bars(row: dict) -> str:
    """Issue 40's done-when bars for the row: each one met (+) or not (-); '' where the row is
    not one the issue judges (strength other than 4 on an edge family, fewer than 3 repeats
    are named)."""
    if row["family"] == "none":
        checks = [("mean >= -0.5", row["sharpe_mean"] >= NONE_MEAN),
                  ("in-sample < 1.5", row["insample_sharpe"] < NONE_INSAMPLE),
                  ("turnover <= 20", row["turnover"] <= NONE_TURNOVER)]
    else:
        if float(row["strength"]) != 4.0:
            return ""
        checks = [(">= 90 % of best", row["vs_best"] >= EDGE_BAR),
                  ("worst > 0", row["sharpe_worst"] > 0)]
        if row["family"] == "trend":
            checks.append(("drift >= 0.5", row["drift_captured"] >= DRIFT_BAR))
    text = ", ".join(("+ " if ok else "- ") + name for name, ok in checks)
    return text + ("" if row["repeats"] >= 3 else f" ({row['repeats']} repeats: < 3)")


def section(table: pd.DataFrame, settings: dict[str, str], commits: dict[str, str],
            command: str) -> str:
    lines = [power.LEARNERS_MARKER, "## The learners side by side, on both market sets", "",
             f"Written by `{command}` (scripts/power_learners.py) from the power runs' own "
             "power.csv. `sharpe_mean` / `sharpe_worst`: the ensemble's stitched OOS Sharpe "
             "over the repeats (standard error ~1.4 per run over six one-month segments); "
             "`best_baseline`: the fitted baseline with the highest mean over the same "
             "repeats; `vs_best` = sharpe_mean / its; `bars`: issue 40's done-when, + met, "
             "- not. The held-out rows confirm settings chosen on the selection set; no "
             "setting was chosen on them.", ""]
    lines += [f"- `{k}`: {v or 'configs/power.yaml as it is'}" for k, v in settings.items()]
    lines += [f"- `{k}` computed at {v}" for k, v in commits.items()]
    for set_ in ("selection", "heldout"):
        part = table[table["set"] == set_]
        if part.empty:
            continue
        lines += ["", f"### {set_} set", "",
                  markdown_table(part.drop(columns="set").set_index("family"), ".3g")]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, text: str) -> None:
    """Replace the page's learners section (or add it before the ablation section)."""
    page = doc.read_text() if doc.is_file() else ""
    head, sep, tail = page.partition(power.LEARNERS_MARKER)
    if sep:
        _, sep2, rest = tail.partition(power.ABLATION_MARKER)
        tail = sep2 + rest
    else:
        head, sep2, rest = page.partition(power.ABLATION_MARKER)
        tail = sep2 + rest
    doc.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--learner", action="append", required=True, metavar="LABEL=DIR",
                    help="a learner's label and a `cryptorl power --out` directory of its "
                         "runs (repeat a label for more directories)")
    ap.add_argument("--doc", type=Path)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    dirs: dict[str, list[Path]] = {}
    for item in args.learner:
        label, eq, d = item.partition("=")
        if not eq or not label or not d:
            ap.error(f"--learner {item!r}: expected LABEL=DIR")
        dirs.setdefault(label, []).append(Path(d))
    learners = [read_learner(label, ds) for label, ds in dirs.items()]
    table = learner_table(pd.concat(learners, ignore_index=True))
    command = "python scripts/power_learners.py " + " ".join(
        f"--learner {x}" for x in args.learner) + (f" --doc {args.doc}" if args.doc else "")
    text = section(table, {f["learner"].iloc[0]: f["settings"].iloc[0] for f in learners},
                   {f["learner"].iloc[0]: f["commits"].iloc[0] for f in learners}, command)
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.doc:
        write_section(args.doc, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
