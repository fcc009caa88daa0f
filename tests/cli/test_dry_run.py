"""`--dry-run` of wfo, tune, power and study through `cryptorl_jax.cli.main`: the plan they
print (the resolved config and its digest, the segments exactly as the run lays them out, the
training budget, the run directory, what --resume would skip, the estimate from a rate
recorded here) and that they write nothing: the output directory, the working directory and
the user cache stay as they were. wfo's dry run also reads a finished run (the session's tiny
run, copied)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from cryptorl_jax.cli import main
from cryptorl_jax.config import identity, load_config
from cryptorl_jax.market import load_market, planted
from cryptorl_jax.tuning.split import nested_split
from cryptorl_jax.walkforward.data import prepare_run
from cryptorl_jax.walkforward.layout import run_layout
from tests.walkforward.test_driver import TINY_WFO

# the tiny run's settings on three months of the bundled data: segments of 300 + 100 rows
WINDOW = ["data.start=2024-01-01", "data.end=2024-04-15", "wfo.max_segments=2"]


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.fixture
def place(tmp_path, monkeypatch, repo_root):
    """(a config file of the tiny run on the bundled data, its output dir, an empty CWD)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"data_dir": str(repo_root / "data")}}))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cfg, tmp_path / "out", cwd


def _sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def _run(argv: list[str], capsys, *watched: Path) -> str:
    """main(argv) returns 0 and changes no file under `watched` (nor the user cache)."""
    import os

    cache = Path(os.environ["XDG_CACHE_HOME"])
    before = [tree(w) for w in (*watched, cache)]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert [tree(w) for w in (*watched, cache)] == before
    assert "nothing is trained, compiled or written" in out
    return out


def test_wfo_dry_run_prints_the_run_it_would_make(place, capsys):
    cfg_file, out, cwd = place
    argv = ["wfo", "--config", str(cfg_file), *_sets([*TINY_WFO, *WINDOW]), "--out", str(out),
            "--dry-run"]
    text = _run(argv, capsys, cwd, out.parent)
    assert not out.exists() and list(cwd.iterdir()) == []
    cfg = load_config(cfg_file, [*TINY_WFO, *WINDOW])
    assert cfg.to_yaml().strip() in text  # the resolved config
    assert f"config digest: {identity(cfg).digest()}" in text
    assert f"run directory: {out / 'tiny'}" in text
    run = prepare_run(cfg)  # the segments the run makes, through its own data path
    assert len(run.segments) == 2
    for s in run.segments:
        idx = run.market.index
        assert (f"{idx[s.train_start]:%Y-%m-%d %H:%M}  {idx[s.train_end - 1]:%Y-%m-%d %H:%M}  "
                f"{idx[s.test_start]:%Y-%m-%d %H:%M}  {idx[s.test_end - 1]:%Y-%m-%d %H:%M}"
                in text)
    # 320 env steps = 5 chunks of 16 vectorised steps x 4 envs; learning from 64 env steps
    # (iteration 16): 80 - 16 = 64 updates
    assert "320 env steps per agent (5 chunks of 16 vectorised steps x 4 envs" in text
    assert "64 updates per agent" in text and "members per compiled step: 2 (2 seeds)" in text
    assert "does not exist yet: every segment runs" in text
    assert "no recorded step rate on this machine" in text
    # two segments per batch: one batch, 4 members
    text = _run([*argv, "--set", "wfo.segments_per_batch=2"], capsys, cwd, out.parent)
    assert "members per compiled step: 4 (2 seeds x 2 segments)" in text
    assert "batches that would train: 1 ([0, 1])" in text
    # bad input is refused like the run refuses it
    assert main([*argv, "--set", "wfo.train_months=50"]) == 2
    assert "wfo.test_months" in capsys.readouterr().err


def test_wfo_dry_run_reads_a_finished_run(tiny_planted_run, tmp_path, monkeypatch, capsys):
    """What --resume would skip and the estimate from the finished segment's recorded rate."""
    run_dir, _, _, _ = tiny_planted_run
    results = tmp_path / "results"
    copy = results / "paper"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("paper*"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = ["wfo", "--config", str(copy / "config.yaml"), "--out", str(results), "--dry-run"]
    text = _run(argv, capsys, results, cwd)
    assert "--resume would skip segments [0] (DONE in" in text
    assert "without --resume they are cleared and run again" in text
    assert "estimate: about" in text and "1 finished segment(s) of paper" in text
    assert "the same step shape" in text
    text = _run([*argv, "--resume"], capsys, results)
    assert "segments to run: []" in text and "batches that would train: 0" in text
    text = _run([*argv, "--set", "seed=7"], capsys, results)
    assert "resume: refused:" in text and "holds a run of another config" in text


TUNE = ["tune.segments=[0]", "tune.val_fraction=0.25",
        "tune.space=[{key: tqc.learning_rate, type: loguniform, low: 1.0e-4, high: 1.0e-3},"
        " {key: tqc.gamma, type: float, low: 0.9, high: 0.99}]"]


def test_tune_dry_run(place, capsys):
    cfg_file, out, cwd = place
    sets = _sets([*TINY_WFO, *WINDOW, *TUNE])
    text = _run(["tune", "--config", str(cfg_file), *sets, "--trials", "3", "--population", "2",
                 "--out", str(out), "--dry-run"], capsys, cwd, out.parent)
    assert not out.exists()
    assert "trials in this process: 3, 2 at a time as one population: 2 batch(es)" in text
    assert "members per compiled step: 4 (2 seeds x 2 trials)" in text
    assert "tqc.learning_rate  loguniform  [0.0001, 0.001]" in text
    assert f"study: 'tiny-tune' in sqlite:///{out / 'tiny-tune' / 'study.db'}" in text
    cfg = load_config(cfg_file, [*TINY_WFO, *WINDOW, *TUNE])
    run = prepare_run(cfg)
    s = nested_split(cfg, run.segments[0], run.offset)
    idx = run.market.index
    assert (f"{idx[s.fit_start]:%Y-%m-%d %H:%M} .. {idx[s.inner_train_end - 1]:%Y-%m-%d %H:%M}"
            in text)
    assert f"{idx[s.val_start]:%Y-%m-%d %H:%M} .. {idx[s.val_end - 1]:%Y-%m-%d %H:%M}" in text
    # population mode refuses a key that changes a shape, as the study does
    assert main(["tune", "--config", str(cfg_file), *sets, "--set",
                 "tune.space=[{key: tqc.net_arch, type: categorical, choices: ['[8, 8]']}]",
                 "--trials", "2", "--population", "2", "--dry-run"]) == 2
    assert "tqc.net_arch" in capsys.readouterr().err


def test_power_and_study_dry_runs(place, capsys):
    cfg_file, out, cwd = place
    sets = _sets([*TINY_WFO, *WINDOW])
    text = _run(["power", "--config", str(cfg_file), *sets, "--edge", "trend,none",
                 "--strength", "2,4", "--repeats", "trend=2,none=1", "--out", str(out),
                 "--dry-run"], capsys, cwd, out.parent)
    assert not out.exists()
    assert "power: 5 walk-forward runs" in text
    for tag in ("trend-s2-r0", "trend-s2-r1", "trend-s4-r0", "trend-s4-r1", "none-s0-r0"):
        assert str(out / f"tiny-{tag}") in text
    assert text.count("segments of every run") == 1 and text.count("training of every") == 1
    study = ['study.runs=[{name: a, set: ["seed=0"]}, {name: b, set: ["encoder.mode=none"]}]']
    text = _run(["study", "--config", str(cfg_file), *sets, *_sets(study), "--out", str(out),
                 "--dry-run"], capsys, cwd, out.parent)
    assert "study: 2 walk-forward runs" in text and str(out / "tiny-compare") in text
    assert text.count("segments of every run") == 1  # one table: the runs share it
    assert "training of run a:" in text and "training of run b:" in text


def test_power_dry_run_of_both_market_sets(place, capsys):
    """--market-set both lists the selection set's runs (named as before) and the held-out
    set's (heldout- tags, seeds from the offset), and the ~1-hour target line."""
    cfg_file, out, cwd = place
    text = _run(["power", "--config", str(cfg_file), *_sets([*TINY_WFO, *WINDOW]),
                 "--edge", "trend,none", "--repeats", "1", "--market-set", "both",
                 "--out", str(out), "--dry-run"], capsys, cwd, out.parent)
    assert "power: 4 walk-forward runs" in text and not out.exists()
    for tag in ("trend-s4-r0", "none-s0-r0", "heldout-trend-s4-r0", "heldout-none-s0-r0"):
        assert str(out / f"tiny-{tag}") in text
    assert "1000000" in text and "target: about 60 min for the page" in text


def test_a_planted_market_keeps_the_templates_segments(repo_root, tmp_path):
    """The power dry run lays the segments out on the template data: a planted market written
    from the whole template has the same hourly grid, warm-up and segments."""
    data = tmp_path / "planted"
    planted.write_planted_files(data, "lead", 2.0, 1, template_dir=repo_root / "data")
    cfg = load_config(None, [*TINY_WFO, *WINDOW, f"data.data_dir={repo_root / 'data'}"])
    there = load_config(None, [*TINY_WFO, *WINDOW, f"data.data_dir={data}"])
    a, b = run_layout(cfg, load_market(cfg.data)), run_layout(there, load_market(there.data))
    assert a.index.equals(b.index) and a.offset == b.offset and a.segments == b.segments
