"""The ablation table of docs/power.md: learner settings screened on planted markets.

    python scripts/power_ablation.py [RUN_DIR ...] --markets MARKETS_DIR \
        [--rows CSV ...] [--doc docs/power.md] [--csv FILE]

Each RUN_DIR is a finished `cryptorl wfo` run on a planted market, named
`<variant>-<family>-s<strength>-r<repeat>` (the market's tag, as `cryptorl power` names its
runs), whose market directory is MARKETS_DIR/<family>-s<strength>-r<repeat>. Every run is
measured exactly as `cryptorl power` measures its own (`power.cell_row`: the oracle replayed
over the run's OOS hours, the ensemble's and the seeds' Sharpe, in-sample Sharpe, drift
captured, turnover), and the table lists them by variant with the settings that differ (the
run's `--set` overrides, read from its run_info.json). With --doc, the table replaces the
page's ablation section (from `power.ABLATION_MARKER` to the end; `cryptorl power --doc`
keeps that section when it rewrites the page), so both parts of the page come from commands.

--rows adds rows measured by an earlier invocation (its --csv) as they are, so a table can grow
after the runs behind its older rows are gone; a run given again replaces its older row (same
variant, family and repeat); --csv writes every row, old and new (docs/power_ablation.csv is
the page's).

The ablation screens settings, so it reads the selection set only (issue 40's protocol): a run
on a held-out market (its variant ends in `heldout`, as `cryptorl power --market-set heldout`
names them, or its market's planted.json says set heldout) is refused. The section also prints
`studies.protocol.DECISIONS`: which set each of today's defaults was chosen on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from cryptorl_jax.market.planted import META_FILE
from cryptorl_jax.report import Run
from cryptorl_jax.report.markdown import markdown_table
from cryptorl_jax.studies import power
from cryptorl_jax.studies.cells import Cell
from cryptorl_jax.studies.protocol import decisions_table

TAG = re.compile(r"^(?P<variant>.+)-(?P<family>trend|lead|regime|none)-s(?P<strength>[0-9.]+)"
                 r"-r(?P<repeat>\d+)$")
# a row of the table: the run's variant and settings, its market, then the measured figures
ROW_COLUMNS = ("variant", "settings", "family", "repeat", "oracle_sharpe", "sharpe",
               "seed_sharpe_min", "drift_captured", "insample_drift_captured",
               "insample_sharpe", "turnover", "exposure")
PAIRED_COLUMNS = ROW_COLUMNS[4:]  # the figures averaged per variant and family


def ablation_rows(run_dirs: list[Path], markets: Path) -> pd.DataFrame:
    rows = []
    for run_dir in run_dirs:
        m = TAG.match(run_dir.name)
        if m is None:
            raise SystemExit(f"{run_dir}: not named <variant>-<family>-s<strength>-r<repeat>")
        cell = Cell(m["family"], float(m["strength"]), int(m["repeat"]))
        data_dir = markets / cell.tag
        if not data_dir.is_dir():
            raise SystemExit(f"{run_dir}: its market {data_dir} does not exist")
        market_set = json.loads((data_dir / META_FILE).read_text()).get("set", "selection") \
            if (data_dir / META_FILE).is_file() else "selection"
        if m["variant"].split("-")[-1] == "heldout" or market_set != "selection":
            raise SystemExit(f"{run_dir}: a run on a held-out market; the ablation screens "
                             f"settings, and no setting may be chosen on the held-out set "
                             f"(studies/protocol.py)")
        cfg = Run.load(run_dir).config
        row = power.cell_row(cfg, cell, data_dir, run_dir)
        rows.append({"variant": m["variant"], "settings": " ".join(power.run_sets(run_dir)),
                     **{k: row[k] for k in ROW_COLUMNS[2:]}})
    return pd.DataFrame(rows)


def read_rows(path: Path) -> pd.DataFrame:
    """Rows an earlier invocation wrote with --csv; a file without those columns is refused,
    naming the file and what it lacks."""
    rows = pd.read_csv(path)
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise SystemExit(f"{path}: not an ablation --csv (no column {', '.join(missing)})")
    rows["settings"] = rows["settings"].fillna("").astype(str)
    return rows[list(ROW_COLUMNS)]


def _cells(g: pd.DataFrame) -> set[tuple[str, int]]:
    return set(zip(g["family"], g["repeat"].astype(int)))


def _cells_by_variant(rows: pd.DataFrame) -> dict[str, set[tuple[str, int]]]:
    return {v: _cells(g) for v, g in rows.groupby("variant", sort=False)}


def paired(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Per variant and family, the means over the (family, repeat) cells EVERY variant ran:
    the variants compared on the same markets."""
    cells = None
    for _, g in rows.groupby("variant", sort=False):
        cells = _cells(g) if cells is None else cells & _cells(g)
    common = sorted(cells or ())
    keep = rows[[(f, r) in set(common) for f, r in zip(rows["family"], rows["repeat"])]]
    table = keep.groupby(["variant", "family"], sort=False)[list(PAIRED_COLUMNS)].mean()
    return table.reset_index(), common


def shared(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the variants that ran every cell most variants ran (more than half of
    them): one variant screened on other markets does not shrink every other comparison to
    the cells it happens to share with them."""
    by_variant = _cells_by_variant(rows)
    counts = Counter(c for cells in by_variant.values() for c in cells)
    common = {c for c, n in counts.items() if 2 * n > len(by_variant)}
    keep = [v for v, c in by_variant.items() if c >= common]
    return rows[rows["variant"].isin(keep)]


def widest(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the variants that ran the most cells, all of them the same cells (e.g.
    every repeat of trend and none): compared by `paired`, they average over more markets than
    the table of every variant."""
    by_variant = _cells_by_variant(rows)
    most = max(len(c) for c in by_variant.values())
    full = set().union(*(c for c in by_variant.values() if len(c) == most))
    keep = [v for v, c in by_variant.items() if c >= full]
    return rows[rows["variant"].isin(keep)]


def section(rows: pd.DataFrame, command: str) -> str:
    most = shared(rows)
    table, common = paired(most)
    where = ", ".join(f"{f} r{r}" for f, r in common) or "none"
    left = [v for v in rows["variant"].unique() if v not in set(most["variant"])]
    out = f"; not run on all of them: {', '.join(left)}" if left else ""
    lines = [
        power.ABLATION_MARKER, "## Ablation: learner settings on planted markets", "",
        f"Written by `{command}` (scripts/power_ablation.py), each run measured as "
        "`cryptorl power` measures its own (rows read with --rows were measured so by an "
        "earlier invocation). `settings` are the run's --set overrides over configs/power.yaml "
        "as it stood at the run's commit. Read `sharpe` with its standard error of ~1.4 "
        "over six one-month segments; `drift_captured` (OOS), `insample_drift_captured` and "
        "`insample_sharpe` are the low-noise columns. Every run here is on the selection "
        "set (market/planted.py); runs on held-out markets are refused.", "",
        "### Which set each decision was chosen on (`studies.protocol.DECISIONS`)", "",
        *decisions_table(), "",
        f"### Paired: the variants on the same markets ({where}{out})", "",
        markdown_table(table.set_index("variant"), ".3g"), ""]
    shown = [set(most["variant"])]  # the variants of each paired table written
    wide = widest(rows)
    wide_table, wide_cells = paired(wide)
    if len(wide_cells) > len(common):
        where = ", ".join(f"{f} r{r}" for f, r in wide_cells)
        lines += [f"### Paired over more markets: the variants run on all of {where}", "",
                  markdown_table(wide_table.set_index("variant"), ".3g"), ""]
        shown.append(set(wide["variant"]))
    for family, fam_table, fam_cells in by_family(rows):
        if any(set(fam_table["variant"]) <= s for s in shown):
            continue  # no variant the tables above leave out
        where = ", ".join(f"{f} r{r}" for f, r in fam_cells)
        lines += [f"### Paired within {family}: the variants run on all of {where}", "",
                  markdown_table(fam_table.set_index("variant"), ".3g"), ""]
    lines += ["### Every run", "", markdown_table(rows.set_index("variant"), ".3g"), ""]
    return "\n".join(lines)


def by_family(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[tuple[str, int]]]]:
    """Per family, `paired` over the variants that ran the most of its repeats (`widest` of
    its rows): a variant screened on one family only (e.g. trend) is compared there with
    every variant that ran the same markets."""
    out = []
    for family in rows["family"].unique():
        table, cells = paired(widest(rows[rows["family"] == family]))
        if table["variant"].nunique() > 1:
            out.append((str(family), table, cells))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--markets", type=Path, help="the runs' market directories")
    ap.add_argument("--rows", type=Path, nargs="+", default=[],
                    help="rows measured by an earlier invocation (its --csv)")
    ap.add_argument("--doc", type=Path)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    if not args.runs and not args.rows:
        ap.error("give run directories, --rows, or both")
    if args.runs and args.markets is None:
        ap.error("run directories need --markets (their market directories)")
    old = [read_rows(path) for path in args.rows]
    new = [ablation_rows(args.runs, args.markets)] if args.runs else []
    # a run measured now supersedes an earlier row of the same variant and market, so the
    # command can be rerun with its own --csv as --rows
    rows = pd.concat([*old, *new], ignore_index=True).drop_duplicates(
        ["variant", "family", "repeat"], keep="last", ignore_index=True)
    command = "python scripts/power_ablation.py " + " ".join(
        [*(r.name for r in args.runs)]
        + (["--markets", str(args.markets)] if args.runs else [])
        + (["--rows", *map(str, args.rows)] if args.rows else [])
        + (["--doc", str(args.doc)] if args.doc else [])
        + (["--csv", str(args.csv)] if args.csv else []))
    text = section(rows, command)
    if args.csv:
        rows.to_csv(args.csv, index=False)
    if args.doc:
        page = args.doc.read_text() if args.doc.is_file() else ""
        head = page.split(power.ABLATION_MARKER)[0].rstrip("\n")
        args.doc.write_text((head + "\n\n" if head else "") + text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
