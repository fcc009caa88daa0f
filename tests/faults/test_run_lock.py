"""Two processes writing one run directory (issue 41): refused with the lock's holder named unless
their --segments are disjoint.

A real second process holds the run: it runs `driver.run` until segment 0's first stage, where a
hook (`core.hooks.Hooks.stop_at`) parks it until the test releases it or kills it (kill -9). This
process then tries the same run: over the same segments it is refused at once naming the holder
(the CLI: one line, no traceback, nothing changed); over disjoint segments it gets past the lock
to its own segment's first stage (a hook stops it there: nothing is trained); once the holder is
killed its lock file and record stay behind and block nothing. No test trains an agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.runlock import (
    RunLockedError,
    SegmentClaim,
    run_files_lock,
    segment_lock_path,
)
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO

ROOT = Path(__file__).resolve().parents[2]
BASE = [*TINY_WFO, "run_name=shared", "output.tensorboard=false"]

# the holder: a walk-forward run parked at the start of segment 0 (after its claim, its config
# and its run_info record are written) until the file `release` appears
HOLDER = """
import sys, time
from pathlib import Path
from cryptorl_jax.config import load_config
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO

workdir, marks = Path(sys.argv[1]), Path(sys.argv[2])

def park(segment, stage):
    (marks / "reached").write_text(f"{segment} {stage}")
    while not (marks / "release").exists():
        time.sleep(0.1)
    return True  # then stop as a kill would (KeyboardInterrupt)

cfg = load_config(None, [*TINY_WFO, "run_name=shared", "output.tensorboard=false",
                         "wfo.segments=[0]"])
driver.run(cfg, workdir, market=make_market(1100, seed=5), hooks=Hooks(stop_at=park))
"""


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


@pytest.fixture
def holder(tmp_path):
    """A second process holding segment 0 of tmp_path/out/shared, parked at its first stage."""
    workdir, marks = tmp_path / "out" / "shared", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), str(marks)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (marks / "reached").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the holder did not reach segment 0: {proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    yield proc, workdir
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class Reached(Exception):
    """This process got to a segment's first stage (past every lock)."""


def _stop_at(segment: int) -> Hooks:
    """Stop this process at the start of `segment` (past every lock: nothing trained)."""

    def stop(k: int, stage: str) -> bool:
        if k == segment:
            raise Reached(f"segment {k}, stage {stage}")
        return False

    return Hooks(stop_at=stop)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "locks" not in p.relative_to(root).parts}


def test_overlapping_segments_are_refused_naming_the_holder_and_disjoint_ones_run(
        holder, market, tmp_path, capsys, monkeypatch):
    """While a process computes segment 0: a second run over all segments, or over segment 0,
    is refused at once (the CLI: exit 2, one line naming the holder's pid, host, start and
    command; nothing in the run directory changes); a run over segment 1 gets past the lock to
    its segment's first stage. The holder's claim is intact afterwards."""
    from cryptorl_jax.cli import wfo

    proc, workdir = holder
    prepare = driver.prepare_run
    monkeypatch.setattr(driver, "prepare_run", lambda cfg, _: prepare(cfg, market))
    rec = json.loads(segment_lock_path(workdir, 0).read_text())
    assert rec["pid"] == proc.pid and rec["segments"] == [0] and "-c" in rec["command"]
    (tmp_path / "c.yaml").write_text(load_config(None, BASE).to_yaml())
    before = _snapshot(workdir.parent)
    for extra in ([], ["--segments", "0"], ["--segments", "2,0", "--resume"]):
        rc = wfo.main(["--config", str(tmp_path / "c.yaml"), "--out", str(workdir.parent),
                       *extra])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith(f"wfo: error: {workdir}: segment 0 is being computed by another "
                              f"process (pid {proc.pid} on {rec['host']}, started "
                              f"{rec['started']}, segments [0], command: ")
        assert "overlap it at [0]" in err and "disjoint --segments" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert _snapshot(workdir.parent) == before
    # disjoint segments share the run: past the lock to segment 1's first stage
    cfg1 = load_config(None, [*BASE, "wfo.segments=[1]"])
    with pytest.raises(Reached, match="segment 1, stage fit"):
        driver.run(cfg1, workdir, market=market, hooks=_stop_at(1))
    assert RunDir(workdir).segment(1).path.is_dir()
    with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):  # the holder still holds 0
        driver.run(load_config(None, BASE), workdir, market=market)
    assert proc.poll() is None


def test_a_killed_holders_lock_file_blocks_nothing(holder, market):
    """kill -9 of the holder: its lock file and record stay (only informative); the next run
    over segment 0 takes the lock and goes on."""
    proc, workdir = holder
    lock = segment_lock_path(workdir, 0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(lock.read_text())["pid"] == proc.pid  # the dead holder's record
    with pytest.raises(Reached, match="segment 0, stage fit"):
        driver.run(load_config(None, [*BASE, "wfo.segments=[0]"]), workdir, market=market,
                   resume=True, hooks=_stop_at(0))
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # released, the record is ours


def test_another_config_is_refused_while_a_process_computes_the_run(holder, market):
    """A run with another config into the directory a live process is computing (no segment
    finished yet) is refused naming it; before the check it took the directory for an
    abandoned one and deleted the holder's segment folder while it was being computed."""
    proc, workdir = holder
    seg0 = RunDir(workdir).segment(0).path
    assert seg0.is_dir()
    other = load_config(None, [*BASE, "tqc.gamma=0.9", "wfo.segments=[2]"])
    with pytest.raises(RunLockedError, match=rf"with another config .* by pid {proc.pid} on "):
        driver.run(other, workdir, market=market, hooks=_stop_at(2))
    assert seg0.is_dir() and not RunDir(workdir).segment(2).path.exists()


def test_a_claim_takes_every_segment_or_none(tmp_path):
    """A claim over segments [1, 2] where another claim holds 2 is refused and leaves 1 free."""
    with SegmentClaim(tmp_path, [2]):
        with pytest.raises(RunLockedError, match=r"segment 2 .* overlap it at \[2\]"):
            SegmentClaim(tmp_path, [1, 2]).acquire()
        with SegmentClaim(tmp_path, [1]) as claim:
            assert [r["segments"] for r in claim.others()] == [[2]]


def test_the_run_info_of_two_processes_keeps_both_records(tmp_path):
    """Two processes of one run (disjoint segments) record their invocations in run_info.json;
    the first to finish completes its own record and keeps the other's (before, it rewrote the
    file from what it had read when it started, dropping the other's record)."""
    rd = RunDir(tmp_path)
    a = driver._start_run_info(rd, False, "local")
    b = driver._start_run_info(rd, False, "local")
    driver._finish_run_info(rd, a, [0], [], 1.0)
    info = json.loads(rd.run_info.read_text())
    assert info["invocation"] == b["invocation"] and info["finished"] is None
    assert [(r["invocation"], r["segments_run"]) for r in info["history"]] == [
        (a["invocation"], [0])]
    driver._finish_run_info(rd, b, [1], [], 1.0)
    info = json.loads(rd.run_info.read_text())
    assert (info["invocation"], info["segments_run"]) == (b["invocation"], [1])
    assert [r["invocation"] for r in info["history"]] == [a["invocation"]]


def test_a_fresh_run_keeps_the_batch_checkpoints_of_a_live_process(tmp_path):
    """Without --resume a run removes the batches' training checkpoints, except those of a
    live process computing other segments (its batch folders are named by its segments)."""
    rd = RunDir(tmp_path)
    for name in ("batch_0-1", "batch_2-3", "batch_4-5"):
        (tmp_path / name).mkdir()
    stale = driver._stale_batch_dirs(rd, [{"segments": [2, 3]}])
    assert [p.name for p in stale] == ["batch_0-1", "batch_4-5"]


def test_reports_take_turns(tmp_path):
    """The report (and run_info.json, config.yaml) of a run waits while another process of
    the same run writes them, so the last report sees every finished segment."""
    cfg = load_config(None, BASE)
    workdir = tmp_path / "shared"
    workdir.mkdir()
    done = threading.Event()

    def report() -> None:
        driver.run(cfg, workdir, report_only=True)
        done.set()

    with run_files_lock(workdir):
        thread = threading.Thread(target=report)
        thread.start()
        assert not done.wait(1.5) and not RunDir(workdir).run_info.exists()
    thread.join(60)
    assert done.is_set() and RunDir(workdir).run_info.is_file()
