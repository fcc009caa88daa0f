"""A read-only output directory and a full disk (issue 41), for the walk-forward run, its report
(`--report-only`), a tuning study and paper trading's exports.

Read-only: the command is refused before any work (no market read, no trial, no hour booked)
naming the directory, and nothing is written. Tests may run as root, for whom a chmod does not
stop a write: there the directory is chmod-ed AND `os.access` says no for it (what the check
asks first), so the test runs everywhere. A full disk: the atomic writer's write into its temp
file fails with ENOSPC at a chosen file (`enospc_at`: the temp file is half written, then the
error); the user sees one line naming the file, the temp file is gone, and the file it would
have replaced (and every file written before) is byte-identical.

One tiny walk-forward run (one segment, two seeds) is trained for the module; each case copies
it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.core import io as core_io
from cryptorl_jax.core.io import WriteError
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO

CFG = [*TINY_WFO, "wfo.max_segments=1", "run_name=ordinary", "output.tensorboard=false"]
# the files a rebuilt report writes anew although nothing changed: the invocation's record, the
# registry line's time, the report page that shows the record
STAMPED = {"ordinary/run_info.json", "runs.jsonl", "ordinary/report.html"}
ENOSPC = "No space left on device (ENOSPC)"
REAL_WRITER = core_io._replace_via_temp  # what enospc_at wraps


class _CurrentStderr:
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _logging_to_this_tests_stderr(monkeypatch):
    """The CLI's and Optuna's log handlers write to the stderr of the test running: each holds
    the stream it was made with (Optuna's colour formatter too), an earlier test's captured
    stream, since closed."""
    for logger in (logging.root, logging.getLogger("optuna")):
        for h in logger.handlers:
            if type(h) is logging.StreamHandler:
                monkeypatch.setattr(h, "stream", _CurrentStderr())
                if hasattr(h.formatter, "stream"):
                    monkeypatch.setattr(h.formatter, "stream", _CurrentStderr())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(cfg, market, output dir holding the finished run `ordinary` and its registry)."""
    cfg = load_config(None, CFG)
    market = make_market(1100, seed=5)
    out = tmp_path_factory.mktemp("enospc") / "out"
    driver.run(cfg, out / "ordinary", market=market)
    return cfg, market, out


@pytest.fixture
def copy(finished, tmp_path, monkeypatch):
    """The finished output directory copied to tmp_path/out; its config in tmp_path/c.yaml;
    the CLI reads the module's market."""
    cfg, market, out = finished
    dest = tmp_path / "out"
    shutil.copytree(out, dest)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    prepare = driver.prepare_run
    monkeypatch.setattr(driver, "prepare_run", lambda c, _: prepare(c, market))
    return dest


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "locks" not in p.relative_to(root).parts}


def _temp_files(root: Path) -> list[Path]:
    """The atomic writer's temp files (.<name>.<random>.tmp) and the writability probes."""
    return [p for p in root.rglob(".*") if p.is_file()]


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch) -> Iterator[None]:
    """`folder` read-only: chmod 0555; as root (whom a chmod does not stop) os.access also says
    no for it (not for the folders inside it, as the chmod)."""
    folder = folder.absolute()
    mode = folder.stat().st_mode
    with monkeypatch.context() as m:
        if os.geteuid() == 0:
            real = os.access

            def access(path, how, *args, **kwargs):
                if how & os.W_OK and Path(path).absolute() == folder:
                    return False
                return real(path, how, *args, **kwargs)

            m.setattr(os, "access", access)
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


class Disk:
    """The atomic writes made (`calls`) and, for the one that failed, its file's bytes just
    before (`kept`: None where it did not exist)."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.kept: bytes | None = None


def enospc_at(monkeypatch, fails: Callable[[Path, int], bool]) -> Disk:
    """Every atomic write (core.io) from now on is recorded; the one for which
    `fails(path, n)` holds (n: its 0-based number) writes half of a temp file, then fails with
    ENOSPC, as a full disk would."""
    real = REAL_WRITER
    disk = Disk()

    def replace(path, write, **kwargs):
        path = Path(path)
        disk.calls.append(path)
        if fails(path, len(disk.calls) - 1):
            disk.kept = path.read_bytes() if path.exists() else None

            def torn(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    f.write(b"half a file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(path, torn, **kwargs)
        return real(path, write, **kwargs)

    monkeypatch.setattr(core_io, "_replace_via_temp", replace)
    return disk


def _wfo(tmp_path: Path, out: Path, *extra: str) -> int:
    from cryptorl_jax.cli import wfo

    return wfo.main(["--config", str(tmp_path / "c.yaml"), "--out", str(out), *extra])


# --------------------------------------------------------------------------------------------
# Read-only
# --------------------------------------------------------------------------------------------


def test_a_run_into_a_read_only_output_directory_is_refused_before_any_work(
        tmp_path, monkeypatch, capsys, finished):
    """`cryptorl wfo --out <read-only>`: exit 1 at once, one line naming the run directory and
    where it would be created; no market is read (prepare_run would fail the test), nothing
    is written."""
    (tmp_path / "c.yaml").write_text(finished[0].to_yaml())
    out = tmp_path / "out"
    out.mkdir()

    def no_work(*args):
        raise AssertionError("the run read its market before checking its directory")

    monkeypatch.setattr(driver, "prepare_run", no_work)
    with read_only(out, monkeypatch):
        rc = _wfo(tmp_path, out)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err == (f"wfo: error: the run directory {out}/ordinary is not writable (it would be "
                   f"created in {out}): Permission denied (EACCES); nothing was written\n")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("which", ["run", "output"])
def test_a_report_into_a_read_only_directory_is_refused_and_changes_nothing(
        copy, tmp_path, monkeypatch, capsys, which):
    """`cryptorl wfo --report-only` where the run directory, or the output directory above it
    (the registry's), is read-only: exit 1 naming it, every file byte-identical."""
    folder = copy / "ordinary" if which == "run" else copy
    before = _snapshot(copy)
    with read_only(folder, monkeypatch):
        rc = _wfo(tmp_path, copy, "--report-only")
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith(f"wfo: error: the {which} directory {folder} is not writable: ")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert _snapshot(copy) == before and not _temp_files(copy)


def test_a_study_into_a_read_only_directory_is_refused_before_a_trial(tmp_path, monkeypatch,
                                                                      capsys):
    """`cryptorl tune --out <read-only>`: exit 1 naming the study directory; no market read,
    no study created."""
    from cryptorl_jax.cli import tune
    from cryptorl_jax.tuning import driver as tuning_driver
    from tests.faults.test_degenerate import FAILING_SPACE

    (tmp_path / "c.yaml").write_text(load_config(None, [*TINY_WFO, FAILING_SPACE]).to_yaml())
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(tuning_driver, "load_market", lambda data: pytest.fail("market read"))
    with read_only(out, monkeypatch):
        rc = tune.main(["--config", str(tmp_path / "c.yaml"), "--trials", "1", "--out",
                        str(out)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith(f"tune: error: the study directory {out}/tiny-tune is not "
                          f"writable (it would be created in {out}): ")
    assert list(out.iterdir()) == []


def test_a_paper_replay_into_a_read_only_book_is_refused_before_an_hour(finished, tmp_path,
                                                                        monkeypatch):
    """A paper replay whose book directory is read-only: refused naming it, nothing booked."""
    from cryptorl_jax.paper.session import replay

    cfg, market, out = finished
    book = tmp_path / "book"
    book.mkdir()
    test = market.index[RunDir(out / "ordinary").segment(0).done_meta()["test_rows"][0]:]
    with read_only(book, monkeypatch), pytest.raises(
            WriteError, match=f"the paper book's directory {book} is not writable"):
        replay(out / "ordinary", str(test[2]), str(test[4]), market=market, book_dir=book)
    assert list(book.iterdir()) == []


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------


def test_a_full_disk_at_any_write_of_a_report_names_the_file_and_keeps_the_old_one(
        copy, tmp_path, monkeypatch, capsys):
    """`cryptorl wfo --report-only` with ENOSPC at its n-th write, for every n: exit 1, one line
    `wfo: error: could not write <file>: No space left on device (ENOSPC); the earlier file is
    unchanged`; that file and every other byte-identical (those a report stamps with the time
    are whole files), no temp file left."""
    disk = enospc_at(monkeypatch, lambda path, n: False)
    assert _wfo(tmp_path, copy, "--report-only") == 0
    writes = list(disk.calls)
    assert {p.name for p in writes} >= {"config.yaml", "run_info.json", "runs.jsonl",
                                        "oos_returns.parquet", "metrics.csv", "summary.md",
                                        "report.html"}
    capsys.readouterr()
    for n, target in enumerate(writes):
        out = tmp_path / f"out{n}"
        shutil.copytree(copy, out)
        target = out / target.relative_to(copy)
        before = _snapshot(out)
        disk = enospc_at(monkeypatch, lambda path, k, n=n: k == n)
        assert _wfo(tmp_path, out, "--report-only") == 1, n
        err = capsys.readouterr().err
        assert err == (f"wfo: error: could not write {target}: {ENOSPC}; the earlier file is "
                       "unchanged\n"), n
        assert not _temp_files(out), n
        after = _snapshot(out)
        assert disk.kept is not None and target.read_bytes() == disk.kept, n
        for name in set(before) | set(after):
            if name not in STAMPED:
                assert after.get(name) == before[name], (n, name)
        json.loads(after["ordinary/run_info.json"])
        assert all(json.loads(line) for line in after["runs.jsonl"].splitlines())
        assert after["ordinary/report.html"].rstrip().endswith(b"</html>")
        shutil.rmtree(out)


@pytest.mark.slow  # trains one more segment
def test_a_full_disk_at_a_segments_last_write_leaves_it_unfinished_and_the_run_intact(
        copy, tmp_path, monkeypatch, capsys):
    """`cryptorl wfo --segments 1` (one more segment of the finished run) with ENOSPC at the
    segment's DONE record, after its training: exit 1 naming the file; the segment is not
    finished (a resume recomputes it), no temp file is left, the report is not rebuilt and
    every file of the run from before is byte-identical (run_info.json records the
    invocation)."""
    before = _snapshot(copy)
    done = copy / "ordinary" / "segment_1" / "DONE"
    enospc_at(monkeypatch, lambda path, n: path == done)
    rc = _wfo(tmp_path, copy, "--segments", "1")
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.endswith(f"wfo: error: could not write {done}: {ENOSPC}; nothing was written "
                        "there\n")
    assert "Traceback" not in err
    rd = RunDir(copy / "ordinary")
    assert rd.finished_segments() == [0] and (rd.segment(1).oos).is_file()
    assert not _temp_files(copy)
    after = _snapshot(copy)
    assert after.pop("ordinary/run_info.json") != before.pop("ordinary/run_info.json")
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("ordinary/segment_1") for k in set(after) - set(before))


def test_a_full_disk_at_a_studys_trial_log_keeps_the_log_and_the_trials(tmp_path, monkeypatch,
                                                                         capsys, finished):
    """A tuning study's trial log cannot be written (ENOSPC): `cryptorl tune` exits 1 naming
    it, the earlier log is byte-identical, and the study (its storage) keeps the trial: the
    next call's log holds it."""
    from cryptorl_jax.cli import tune
    from cryptorl_jax.tuning import driver as tuning_driver
    from cryptorl_jax.tuning.storage import TRIAL_LOG
    from tests.faults.test_degenerate import FAILING_SPACE

    cfg = load_config(None, [*TINY_WFO, FAILING_SPACE, "tune.segments=[0]"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    monkeypatch.setattr(tuning_driver, "load_market", lambda data: finished[1])
    argv = ["--config", str(tmp_path / "c.yaml"), "--trials", "1", "--out", str(tmp_path)]
    log = tmp_path / "tiny-tune" / TRIAL_LOG
    assert tune.main(argv) == 1  # every trial of this space fails (test_degenerate)
    first = log.read_bytes()
    capsys.readouterr()
    enospc_at(monkeypatch, lambda path, n: path == log)
    assert tune.main(argv) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"tune: error: could not write {log}: {ENOSPC}; the earlier file is "
                        "unchanged\n") and "Traceback" not in err
    assert log.read_bytes() == first and not _temp_files(tmp_path / "tiny-tune")
    enospc_at(monkeypatch, lambda path, n: False)
    assert tune.main(argv) == 1
    assert [json.loads(x)["number"] for x in log.read_text().splitlines()] == [0, 1, 2]


def test_a_full_disk_at_a_paper_export_names_it_and_the_book_keeps_the_hour(finished,
                                                                            tmp_path,
                                                                            monkeypatch):
    """Paper trading: ledger.parquet cannot be written (ENOSPC) after an hour was booked: the
    error names it, the earlier ledger is byte-identical, the book (SQLite) holds the hour, and
    the next call's export holds it."""
    from cryptorl_jax.paper.session import replay

    cfg, market, out = finished
    run = out / "ordinary"
    book = tmp_path / "book"
    test = market.index[RunDir(run).segment(0).done_meta()["test_rows"][0]:]
    first = replay(run, str(test[2]), str(test[4]), market=market, book_dir=book)
    ledger = book / "ledger.parquet"
    before = ledger.read_bytes()
    enospc_at(monkeypatch, lambda path, n: path == ledger)
    with pytest.raises(WriteError, match=f"could not write {ledger}: No space left on device "
                                         r"\(ENOSPC\); the earlier file is unchanged"):
        replay(run, str(test[2]), str(test[5]), market=market, book_dir=book)
    assert ledger.read_bytes() == before and not _temp_files(book)
    from cryptorl_jax.paper.book import PaperBook

    assert len(PaperBook(book).hours()) == len(first.ledger) + 1
    enospc_at(monkeypatch, lambda path, n: False)
    again = replay(run, str(test[2]), str(test[5]), market=market, book_dir=book)
    assert again.booked == 0 and len(again.ledger) == len(first.ledger) + 1


def test_a_full_disk_at_a_segments_scaler_or_csv_names_the_file_and_keeps_the_old_one(
        tmp_path, monkeypatch):
    """The fitted scaler (and the segment's CSVs, written the same way by walkforward.writer)
    go through the atomic writer: ENOSPC names the file, leaves no temp file and keeps the
    earlier file byte for byte. Before: `Path.write_text`, a bare OSError without a file and a
    half-written scaler.json in place."""
    import numpy as np
    import pandas as pd

    from cryptorl_jax.features.scaling import RobustScaler

    frame = pd.DataFrame({"a": np.arange(50.0), "b": np.linspace(-1, 1, 50)})
    path = tmp_path / "segment_0" / "scaler.json"
    RobustScaler().fit(frame).save(path)
    before = path.read_bytes()
    enospc_at(monkeypatch, lambda p, n: p.name == "scaler.json")
    with pytest.raises(WriteError, match=rf"could not write {path}: .*ENOSPC"):
        RobustScaler().fit(frame * 2).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["scaler.json"]
