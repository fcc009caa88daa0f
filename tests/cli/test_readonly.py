"""Reading a run is read-only: `cryptorl paper --status`, `cryptorl evaluate`, `cryptorl
compare` and `Run.load` (every property read) leave every file of a finished run as it was and
write nothing into the working directory; their outputs go beside the run (`<run>-eval/`,
`compare-*/`) or to --out, and the market cache to the user's cache directory.

The run is a copy of the session's tiny finished run (tests/conftest.py), with a paper book
replayed into it (<run>/paper/, where `cryptorl paper` keeps a live book)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cryptorl_jax.cli import main
from cryptorl_jax.config import AssetSpec, DataConfig, identity, load_config
from cryptorl_jax.market import load_market
from cryptorl_jax.paper.session import replay
from cryptorl_jax.report import Run


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_with_book(tiny_planted_run, tmp_path_factory):
    """A copy of the finished run with a paper book replayed into <run>/paper/."""
    run_dir, _, market, test = tiny_planted_run
    copy = tmp_path_factory.mktemp("readonly") / "tiny"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("paper*"))
    replay(copy, str(test[10]), str(test[14]), market=market, book_dir=copy / "paper")
    return copy


@pytest.fixture
def run_copy(run_with_book, tmp_path, monkeypatch):
    """(a copy of run_with_book for this test, an empty working directory)."""
    copy = tmp_path / "results" / "tiny"
    shutil.copytree(run_with_book, copy)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return copy, cwd


def _read_everything(run_dir: Path) -> None:
    run = Run.load(run_dir)
    for name in ("config", "segment_numbers", "oos", "metrics", "headline", "comparison",
                 "baselines", "multiple_testing", "power", "diagnostics", "flags", "insample",
                 "segments", "history", "info", "window"):
        getattr(run, name)
    run.plot_equity()


READERS = {
    "paper --status": lambda run: ["paper", "--run", str(run), "--status"],
    "evaluate": lambda run: ["evaluate", "--run", str(run), "--no-tearsheet"],
    "compare": lambda run: ["compare", str(run), "--no-tearsheet"],
}


@pytest.mark.parametrize("command", [*READERS, "Run.load"])
def test_reading_a_run_changes_none_of_its_files(run_copy, command, capsys):
    run_dir, cwd = run_copy
    before = tree_hashes(run_dir)
    assert (run_dir / "report.html").is_file() and (run_dir / "paper" / "book.sqlite").is_file()
    if command == "Run.load":
        _read_everything(run_dir)
    else:
        assert main(READERS[command](run_dir)) == 0, capsys.readouterr().err
    assert tree_hashes(run_dir) == before
    assert list(cwd.iterdir()) == []  # no .cache/market (or anything) in the working directory
    out = capsys.readouterr().out
    if command == "evaluate":
        assert f"outputs in {run_dir.parent / 'tiny-eval' / 'segment0_'}" in out
    if command == "paper --status":
        assert (run_dir.parent / "tiny-eval" / "paper-status" / "status.json").is_file()
        assert (run_dir.parent / "tiny-eval" / "paper-status" / "backtest").is_dir()


def test_reading_from_inside_the_run_writes_beside_it(run_copy, monkeypatch, capsys):
    """`--run .` and `compare .` from inside the run directory: the outputs still go beside
    it."""
    run_dir, _ = run_copy
    before = tree_hashes(run_dir)
    monkeypatch.chdir(run_dir)
    assert main(["paper", "--run", ".", "--status", "--no-backtest"]) == 0
    assert main(["compare", ".", "--no-tearsheet"]) == 0
    assert tree_hashes(run_dir) == before, capsys.readouterr().out
    assert (run_dir.parent / "tiny-eval" / "paper-status" / "status.json").is_file()
    assert (run_dir.parent / "compare-tiny" / "comparison.csv").is_file()


def test_update_report_opts_in_to_rewriting_the_report(run_copy, capsys):
    run_dir, cwd = run_copy
    page = (run_dir / "report.html").read_bytes()
    assert main(["paper", "--run", str(run_dir), "--status", "--update-report"]) == 0
    assert "report.html updated" in capsys.readouterr().out
    assert (run_dir / "report.html").read_bytes() != page
    assert "Paper trading (segment 0" in (run_dir / "report.html").read_text()
    assert (run_dir / "paper" / "status.json").is_file()
    assert list(cwd.iterdir()) == []
    # --out without --status is refused, naming the options
    assert main(["paper", "--run", str(run_dir), "--once", "--out", "x"]) == 2
    assert "--status" in capsys.readouterr().err


def test_the_market_cache_lives_in_the_user_cache_directory(repo_root, tmp_path, monkeypatch):
    """data.cache_dir: auto (the default) caches under $XDG_CACHE_HOME/cryptorl_jax/market, or
    ~/.cache/cryptorl_jax/market without it; the working directory gets nothing."""
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(data_dir=str(repo_root / "data"), assets=(AssetSpec("BTC", "BTC_1h.csv.gz"),),
                     start="2024-01-01", end="2024-01-20")
    assert cfg.cache_dir == "auto"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = load_market(cfg)
    assert [p.parent for p in (tmp_path / "xdg").rglob("market_*.parquet")] == [
        tmp_path / "xdg" / "cryptorl_jax" / "market"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    again = load_market(cfg)
    assert len(list((tmp_path / "home" / ".cache" / "cryptorl_jax" / "market").glob("*"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "xdg"]
    assert first.equals(again)


def test_evaluate_and_status_write_where_out_says(run_copy, tmp_path):
    run_dir, cwd = run_copy
    before = tree_hashes(run_dir)
    assert main(["evaluate", "--run", str(run_dir), "--no-tearsheet",
                 "--out", str(tmp_path / "ev")]) == 0
    assert main(["paper", "--run", str(run_dir), "--status", "--no-backtest",
                 "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert (tmp_path / "st" / "status.json").is_file()
    assert tree_hashes(run_dir) == before and list(cwd.iterdir()) == []
    assert not (run_dir.parent / "tiny-eval").exists()


def test_where_the_cache_lives_is_not_part_of_a_runs_identity():
    """data.cache_dir is a local key, and a digest reads it as its old default: every config
    keeps the digest it had when the cache lived in ./.cache/market (run directories and tuning
    studies made then still resume)."""
    cfgs = [load_config(None, extra) for extra in
            ([], ["data.cache_dir=null"], ["data.cache_dir=/elsewhere"])]
    assert len({identity(c) for c in cfgs}) == 1 and len({c.digest() for c in cfgs}) == 1
    assert identity(cfgs[1]).data.cache_dir == "auto"  # what config.yaml records
    raw = cfgs[0].to_dict()
    raw["data"]["cache_dir"] = ".cache/market"
    del raw["agent"]  # at its defaults the agent section is outside the digest (as before it)
    old = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfgs[0].digest() == old
