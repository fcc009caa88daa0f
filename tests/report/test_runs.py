"""Finished runs as objects: Run.load, compare_runs, `cryptorl compare`, report.html in a real
headless browser, run_info.json, TensorBoard hparams, and the run-directory rules.

Two tiny walk-forward runs (seeds 0 and 1, the same two segments) on a synthetic market share
one output directory and one compilation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.backtest.metrics import (
    compute_metrics,
    expected_max_sharpe,
    probabilistic_sharpe,
    sharpe,
)
from cryptorl_jax.config import ConfigError, identity, load_config
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.core.names import HEADLINE_METRICS
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.report import NotARunError, Run, compare_runs
from cryptorl_jax.studies.study import run_study
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO

TWO = [*TINY_WFO, "wfo.max_segments=2", "output.tearsheet=true"]


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


STUDY = [*TWO, "run_name=tiny",
         'study.runs=[{name: s0, set: ["seed=0"]}, {name: s1, set: ["seed=1"]}]']


@pytest.fixture(scope="module")
def study(tmp_path_factory, market):
    """A two-run study (seeds 0 and 1): the runs, their comparison and the study's page."""
    out = tmp_path_factory.mktemp("results")
    return run_study(load_config(None, STUDY), out, market=market, doc=out / "study.md")


@pytest.fixture(scope="module")
def runs(study):
    return study.run_dirs


def test_study_writes_the_comparison_and_its_page(study):
    assert [p.name for p in study.run_dirs] == ["tiny-s0", "tiny-s1"]
    table = pd.read_csv(study.compare_dir / "comparison.csv", index_col=0)
    assert list(table.index) == ["s0", "s1"]
    text = study.doc.read_text()
    for heading in ("## The ablation", "## Baselines over the same hours", "## Seed dispersion",
                    "## Costs", "## Wall time and memory per run", "## Reading",
                    "## What this does and does not show"):
        assert heading in text, heading
    assert "`seed`" in text  # what the runs vary
    assert (study.doc.parent / "study_equity.png").is_file()


def test_run_load_reads_every_part(runs):
    run = Run.load(runs[0])
    assert run.name == "tiny-s0" and run.segment_numbers == [0, 1]
    assert run.config == identity(load_config(None, [*TWO, "seed=0",
                                                     "run_name=tiny-s0"]))
    seg_frames = [pd.read_parquet(runs[0] / f"segment_{k}" / "oos.parquet") for k in (0, 1)]
    np.testing.assert_array_equal(run.oos["strategy"].to_numpy(),
                                  np.concatenate([f["strategy"].to_numpy() for f in seg_frames]))
    m = compute_metrics(run.oos["strategy"].to_numpy(), run.oos["benchmark"].to_numpy())
    assert math.isclose(run.headline["sharpe"], m["sharpe"], rel_tol=1e-9)
    assert list(run.metrics.index) == [0, 1, "all"]  # the segment's int; metrics.csv: '0'
    assert run.metrics.loc[1, "sharpe"] == pytest.approx(
        compute_metrics(seg_frames[1]["strategy"].to_numpy())["sharpe"], rel=1e-9)
    assert run.verdict.text in (runs[0] / "summary.md").read_text()
    assert {"strategy", "seed_0", "seed_1", "buy_and_hold"} <= set(run.comparison.index)
    assert list(run.segments.index) == [0, 1]
    assert {"test_period_start", "segment_s", "rss_mb", "env_steps", "final_alpha",
            "final_entropy", "entropy_reached_target"} <= set(run.segments.columns)
    assert run.segments.loc[0, "final_alpha"] == run.dir.segment(0).done_meta()["entropy"][
        "final_alpha"]
    assert set(run.history) == {0, 1} and len(run.history[0]) == 5
    assert "critic_loss" in run.history[0][-1]
    ax = run.plot_equity()
    assert len(ax.lines) == 2
    path = run.tearsheet(runs[0].parent / "t.html")
    assert path.stat().st_size > 10_000


def test_run_info_records_provenance(runs):
    info = Run.load(runs[0]).info
    for key in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                "pandas"):
        assert info["versions"][key], key
    assert info["devices"]["count"] >= 1 and info["devices"]["kinds"]
    assert info["started"] <= info["finished"]
    assert "xla_flags" in info and isinstance(info["command"], list)
    assert info["segments_run"] == [0, 1]
    assert set(info["segment_memory"]) == {"0", "1"}
    assert info["segment_memory"]["1"]["rss_mb"] > 0
    sha = info["git"]["sha"]
    assert sha is None or len(sha) == 40


def test_loading_a_run_imports_no_jax(runs):
    code = ("import sys\nfrom cryptorl_jax.report import Run, compare_runs\n"
            f"r = Run.load({str(runs[0])!r}); r.oos; r.metrics; r.comparison; r.segments\n"
            "r.verdict; r.power; r.diagnostics\n"
            f"r.history; r.info; compare_runs([{str(runs[0])!r}, {str(runs[1])!r}])\n"
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_not_a_run_names_what_is_missing(runs, tmp_path):
    with pytest.raises(NotARunError, match="config.yaml.*a finished segment"):
        Run.load(tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(runs[0], partial)
    (partial / "metrics.csv").unlink()
    for d in partial.glob("segment_*/DONE"):
        d.unlink()
    with pytest.raises(NotARunError, match=r"missing metrics\.csv, a finished segment"):
        Run.load(partial)


def test_compare_runs_deflates_over_the_runs_compared(runs):
    cmp = compare_runs(runs)
    assert list(cmp.table.index) == ["tiny-s0", "tiny-s1"] and cmp.n_runs == 2
    r = [Run.load(p).oos["strategy"].to_numpy() for p in runs]
    var = float(np.var([sharpe(x, 1.0) for x in r], ddof=1))
    emax = expected_max_sharpe(2, var)
    for name, x in zip(cmp.table.index, r):
        assert math.isclose(cmp.table.loc[name, "psr"], probabilistic_sharpe(x), rel_tol=1e-9)
        assert math.isclose(cmp.table.loc[name, "dsr_compared"], probabilistic_sharpe(x, emax),
                            rel_tol=1e-9)
        assert cmp.table.loc[name, "dsr_compared"] <= cmp.table.loc[name, "psr"]
    assert cmp.table.loc["tiny-s0", "n_seeds"] == 2
    one = compare_runs(runs[:1])
    assert one.table["dsr_compared"].iloc[0] == one.table["psr"].iloc[0]  # N = 1


def test_compare_refuses_different_windows(runs, tmp_path, market):
    short = tmp_path / "short"
    shutil.copytree(runs[1], short)
    shutil.rmtree(short / "segment_1")
    driver.run(load_config(None, [*TWO, "seed=1", "run_name=tiny-s1"]), short,
               report_only=True)
    with pytest.raises(ValueError, match=r"same OOS hours.*tiny-s0.*short"):
        compare_runs([runs[0], short], labels=["tiny-s0", "short"])


def test_compare_cli_writes_table_plot_and_tearsheet(runs, tmp_path):
    from cryptorl_jax.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert list(table.index) == ["tiny-s0", "tiny-s1"] and "dsr_compared" in table
    assert "| tiny-s1 |" in (out / "comparison.md").read_text()
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "tearsheet.html").read_text()
    assert "tiny-s0" in html and "tiny-s1" in html
    assert main(["compare", str(runs[0]), str(tmp_path / "nope")]) == 2


def test_cryptorl_help_lists_the_subcommands(capsys):
    from cryptorl_jax.cli import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("wfo", "tune", "evaluate", "compare", "download", "bench", "study"):
        assert f"  {name} " in text
    assert main(["nonsense"]) == 2


def test_tensorboard_gets_the_runs_hparams(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    target = runs[0] / "tensorboard" / "hparams"
    events = [p for p in target.rglob("events.out.tfevents.*")]
    assert events
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e.parent))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
        plugins = acc.PluginTagToContent("hparams")
        assert plugins  # the hparams plugin's session records
    assert "oos/sharpe" in tags


# --------------------------------------------------------------------------------------------
# report.html in a real headless browser
# --------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# appended to a copy of the page: at the load event, draw every image onto a canvas and read
# its centre pixel back (synchronous: a PNG that does not decode draws nothing), then report
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.map(function (im) {
    if (!im.complete || im.naturalWidth === 0) { return false; }
    var c = document.createElement('canvas'); c.width = im.naturalWidth;
    c.height = im.naturalHeight;
    var ctx = c.getContext('2d');
    try { ctx.drawImage(im, 0, 0); } catch (e) { return false; }
    var px = ctx.getImageData(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data;
    return px[3] > 0;
  });
  var pre = document.createElement('pre'); pre.id = 'probe-result';
  pre.textContent = JSON.stringify({n_images: imgs.length, decoded: ok.filter(Boolean).length,
    widths: imgs.map(function (im) { return im.naturalWidth; }),
    tables: document.querySelectorAll('table').length,
    links: Array.from(document.querySelectorAll('nav a')).map(function (a) {
      return a.getAttribute('href'); })});
  document.body.appendChild(pre);
});
</script>"""


def probe_page(page: Path, tmp_path: Path) -> dict:
    """Open a copy of `page` with PROBE appended; the decoded-image report it writes."""
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        res = _browse(probe.as_uri(), tmp_path)
    finally:
        probe.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    marker = '<pre id="probe-result">'
    assert marker in res.stdout, "the probe did not run: " + res.stderr[-2000:]
    raw = res.stdout.split(marker, 1)[1].split("</pre>", 1)[0]
    return json.loads(raw.replace("&quot;", '"').replace("&amp;", "&"))


def _browse(url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = _chromium()
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'chrome-profile'}",
         "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180)


def test_report_page_opens_offline_in_a_headless_browser(runs, tmp_path):
    if _chromium() is None:
        if os.environ.get("CRYPTORL_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH, and CRYPTORL_REQUIRE_BROWSER is set (.ci/run)")
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    page = runs[0] / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from the network
    # the page alone: no console message (it has no script, so any message is an error,
    # e.g. a resource it could not load)
    alone = _browse(page.as_uri(), tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    console = [ln for ln in alone.stderr.splitlines() if "CONSOLE" in ln
               or "Not allowed to load" in ln or "ERR_FILE_NOT_FOUND" in ln]
    assert not console, console
    assert "Walk-forward report: tiny-s0" in alone.stdout
    # every image of the page decodes (a probe script appended to a copy of it)
    result = probe_page(page, tmp_path)
    assert result["n_images"] >= 3  # the equity curve and two segments' regime plots
    assert result["decoded"] == result["n_images"] and min(result["widths"]) > 100
    assert result["tables"] >= 5
    assert {"tearsheet.html", "metrics.csv", "comparison.csv", "run_info.json"} <= \
        set(result["links"])
    assert "#units" in result["links"]  # the units table, linked from the nav and the top
    for href in result["links"]:  # a file of the run, or an anchor of the page
        assert (f'id="{href[1:]}"' in text if href.startswith("#")
                else (runs[0] / href).is_file()), href


# --------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------


def test_bad_input_writes_no_config_and_an_unfinished_dir_does_not_lock_it(market, tmp_path):
    work = tmp_path / "r"
    bad = load_config(None, [*TWO, "wfo.segments=[7]"])
    with pytest.raises(ConfigError, match="wfo.segments"):
        driver.run(bad, work, market=market)
    assert not (work / "config.yaml").exists()
    # a run killed in its first segment holds no finished segment: another config may replace it
    first = load_config(None, [*TWO, "tqc.gamma=0.9"])
    with pytest.raises(KeyboardInterrupt):
        driver.run(first, work, market=market,
                   hooks=Hooks(stop_at=lambda k, stage: stage == "train"))
    # a segment's files are written only when it finishes (writer.write_segment_files): what a
    # killed segment leaves is its scratch state, stood in for here by a file of its own
    assert (work / "segment_0").is_dir() and not (work / "segment_0" / "transforms.json").exists()
    (work / "segment_0" / "partial").write_text("left by the killed segment")
    second = load_config(None, [*TWO, "tqc.gamma=0.95"])
    with pytest.raises(KeyboardInterrupt):
        driver.run(second, work, market=market,
                   hooks=Hooks(stop_at=lambda k, stage: stage == "fit"))
    assert (work / "config.digest").read_text().strip() == \
        identity(second).digest()
    assert not (work / "segment_0" / "partial").exists()  # the old partial segment


# --------------------------------------------------------------------------------------------
# Browsing finished runs: cryptorl runs, cryptorl show, wfo's last lines (issue 42)
# --------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root and a hash of every file's bytes."""
    import hashlib

    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def _summary_verdict(run_dir: Path) -> str:
    text = (run_dir / "summary.md").read_text()
    return text.split("## Verdict\n\n", 1)[1].split("\n\n", 1)[0]


def test_runs_and_show_list_the_runs_and_write_nothing(runs, capsys):
    from cryptorl_jax.cli import main
    from cryptorl_jax.report.browse import COLUMNS, verdict_sentence, written_verdict

    out = runs[0].parent
    before = _snapshot(out)
    assert main(["runs", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert main(["runs", str(out)]) == 0
    table = capsys.readouterr().out
    assert main(["show", str(runs[0])]) == 0
    shown = capsys.readouterr().out
    assert _snapshot(out) == before  # read only: no file written, touched or added

    assert [r["name"] for r in rows] == ["tiny-s0", "tiny-s1"]  # not tiny-compare
    for row, path in zip(rows, runs):
        run = Run.load(path)
        assert row["registered"] and row["status"] == "reported"
        assert row["sharpe"] == pytest.approx(run.headline["sharpe"], rel=1e-12)
        assert row["dsr"] == pytest.approx(run.headline["dsr"], rel=1e-12)
        assert (row["oos_start"], row["oos_end"]) == (run.headline["start"], run.headline["end"])
        assert row["flags"] == run.flags and row["n_runs_now"] == 2
        assert row["n_runs_over_window"] == run.headline["n_trials"]  # N when it was reported
        assert row["config_digest"] == (path / "config.digest").read_text().strip()
        # the verdict recomputed from the written files is summary.md's paragraph
        assert written_verdict(run)[1] == _summary_verdict(path)
        assert row["verdict"] == verdict_sentence(_summary_verdict(path))
        assert row["verdict"] in ("Evidence of an edge.", "No evidence of an edge.")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "OOS", "window"] and all(c in lines[0] for c in COLUMNS)
    assert lines[1].startswith("tiny-s0 ") and lines[2].startswith("tiny-s1 ")
    assert rows[0]["verdict"] in lines[1] and f"{rows[0]['sharpe']:.2f}" in lines[1]

    assert shown.startswith(f"tiny-s0  ({runs[0]})")
    assert "Verdict: " + verdict_sentence(_summary_verdict(runs[0])) in shown.replace("\n", " ")
    for metric in HEADLINE_METRICS:  # the summary's headline table, declared once
        assert f"\n  {metric}" in shown, metric
    assert shown.rstrip().endswith(f"report: {runs[0] / 'report.html'}")


def test_runs_and_show_import_no_jax(runs):
    code = ("import sys\nfrom cryptorl_jax.cli import main\n"
            f"assert main(['runs', {str(runs[0].parent)!r}]) == 0\n"
            f"assert main(['show', {str(runs[0])!r}]) == 0\n"
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_runs_says_what_a_row_lacks(runs, tmp_path, capsys):
    """A copied output directory with an unfinished run, a flat run and a registered run whose
    folder is gone; `show` of a folder that is not a run is one line and exit 2."""
    from cryptorl_jax.cli import main

    out = tmp_path / "results"
    shutil.copytree(runs[0].parent, out)
    shutil.rmtree(out / "tiny-s1")
    (out / "half").mkdir()
    shutil.copy(runs[0] / "config.yaml", out / "half" / "config.yaml")
    metrics = pd.read_csv(out / "tiny-s0" / "metrics.csv")
    metrics.loc[metrics["segment"] == "all", ["sharpe", "dsr"]] = math.nan  # a flat book's
    metrics.to_csv(out / "tiny-s0" / "metrics.csv", index=False)
    assert main(["runs", str(out), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["half"]["status"] == "unfinished: no segment done"
    assert not rows["half"]["registered"]
    assert rows["tiny-s1"]["status"] == "registered; its directory is not here"
    assert rows["tiny-s0"]["registered"] and rows["tiny-s0"]["sharpe"] is None
    assert main(["runs", str(out)]) == 0
    table = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert " flat " in table["tiny-s0"] and "nan" not in table["tiny-s0"]
    assert "unfinished: no segment done" in table["half"]
    assert main(["show", str(out / "half")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("show: error: ") and "metrics.csv" in err[0]
    assert main(["runs", str(tmp_path / "nowhere")]) == 2


def test_wfo_ends_with_the_verdict_and_the_report(runs, tmp_path, capsys):
    """`cryptorl wfo --report-only` on a copy of a finished run: its last lines are the verdict
    sentence and where report.html is; a flat run says 'flat', not 'nan'."""
    from types import SimpleNamespace

    from cryptorl_jax.cli import main
    from cryptorl_jax.cli.wfo import result_lines
    from cryptorl_jax.report.browse import verdict_sentence

    out = tmp_path / "out"
    shutil.copytree(runs[0], out / "tiny-s0")
    assert main(["wfo", "--config", str(out / "tiny-s0" / "config.yaml"), "--out", str(out),
                 "--report-only"]) == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert last[-2] == f"wfo: {verdict_sentence(_summary_verdict(out / 'tiny-s0'))}"
    assert last[-1] == f"wfo: report {out / 'tiny-s0' / 'report.html'}"
    assert (out / "tiny-s0" / "report.html").is_file() and "OOS sharpe" in last[-3]
    flat = SimpleNamespace(segments_run=[], segments_skipped=[0, 1], seconds=1.0,
                           workdir=out / "tiny-s0",
                           report={"segments": [0, 1], "sharpe": math.nan, "dsr": math.nan,
                                   "total_return": 0.0})
    lines = result_lines(flat)
    assert "nan" not in "\n".join(lines)
    assert lines[1] == ("wfo: OOS flat: no position held, so the Sharpe and DSR are undefined; "
                        "total return 0.00%")
