"""A `cryptorl wfo` process SIGKILLed at every stage boundary of a segment, then `cryptorl wfo
--resume` in a fresh process (issue 41): the resumed run's results equal an uninterrupted run's,
byte for byte, and what was finished before the kill is not touched.

Every run is a real process on the bundled BTC data (a tiny config, two segments of 300 train
and 100 test hours): the uninterrupted reference (`scripts/wfo.py`, shared by the module), the
killed run (`tests/faults/killed_wfo.py`: the same CLI, SIGKILLed at one point of segment 1,
or in the run's report), and the resumed run (`scripts/wfo.py --resume`). The kill points:
after the features/HMM fit (the encoder stage starting), inside MAE pre-training, between
training chunks (after chunk 2's checkpoint), inside the save of a training checkpoint (its
temporary directory written, not renamed), inside the backtest, while the segment's files are
written (oos.parquet there, no DONE), and inside the report (after every segment is DONE,
metrics.csv's temp file written, not renamed).

"The same results": every file of the reference run directory is byte-identical in the resumed
one (metrics.csv, every segment's oos.parquet and insample.parquet, the tables, the fitted
scaler and HMM, the training history...), except the files that record wall times or the host
(`TIMED`) and the orbax and TensorBoard folders (their metadata holds time stamps; the agents
they hold are what the backtests and oos.parquet are computed from). No file is missing and
none is added, except what a kill leaves behind and no reader opens (`LEFT_BEHIND`).

The processes share one persistent XLA cache, so only the first compiles. The default suite
runs the kill between training chunks; the other points are marked slow.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.walkforward.test_driver import TINY_WFO

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [*(s for s in TINY_WFO if not s.startswith("wfo.max_segments")), "wfo.max_segments=2"]
CONFIG = """\
seed: 0
run_name: tiny
data:
  data_dir: {data}
  traded_asset: BTC
  assets:
    - {{name: BTC, file: BTC_1h.csv.gz, kind: crypto}}
  start: "2024-01-01"
  end: "2024-02-20"
  cache_dir: {cache}
features:
  ta_assets: [BTC]
  equity_asset: null
  dollar_asset: null
  ratio_asset: null
"""
# files that record wall times, memory or the host (or render them): not compared
TIMED = {"DONE", "run_info.json", "encoder_report.json", "meta.json", "summary.md",
         "report.html"}
# orbax checkpoints (their metadata holds time stamps), TensorBoard's event files and the run
# lock's holder records (core/runlock.py: pid, host, start time; informative only)
UNCOMPARED_DIRS = {"agents", "params", "train", "tensorboard", "locks"}
# a file renamed into place by core.io leaves its temp file `.<name>.<random>.tmp` when the
# process dies between the write and the rename; orbax leaves `<step>.orbax-checkpoint-tmp`
LEFT_BEHIND = re.compile(r"(^|/)(\.[^/]+\.tmp|[^/]+\.orbax-checkpoint-tmp[^/]*)(/|$)")


@dataclass(frozen=True)
class Wfo:
    """`cryptorl wfo` of the tiny config in a child process."""

    config: Path
    env: dict[str, str]

    def args(self, out: Path) -> list[str]:
        sets = [a for s in SETTINGS for a in ("--set", s)]
        return ["--config", str(self.config), "--out", str(out), "-q", *sets]

    def run(self, out: Path, *, resume: bool = False) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "scripts" / "wfo.py"), *self.args(out)]
        return self._call([*cmd, *(["--resume"] if resume else [])])

    def killed(self, out: Path, point: str, marker: Path) -> subprocess.CompletedProcess:
        return self._call([sys.executable, "-m", "tests.faults.killed_wfo", point, "1",
                           str(marker), "--", *self.args(out)])

    def _call(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=900)


@pytest.fixture(scope="module")
def wfo(tmp_path_factory) -> Wfo:
    root = tmp_path_factory.mktemp("kills")
    config = root / "tiny.yaml"
    config.write_text(CONFIG.format(data=ROOT / "data", cache=root / "market-cache"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
               "PYTHONPATH", "")]).rstrip(os.pathsep),
           "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(root / "xla-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    return Wfo(config, env)


@pytest.fixture(scope="module")
def reference(wfo, tmp_path_factory) -> Path:
    """The uninterrupted run's directory."""
    out = tmp_path_factory.mktemp("reference")
    done = wfo.run(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 segment(s) run, 0 skipped" in done.stdout
    return out / "tiny"


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _results(root: Path) -> dict[str, bytes]:
    """The files compared with the reference: all but `TIMED`, the orbax and TensorBoard
    folders, and what a kill leaves behind."""
    return {name: data for name, data in _files(root).items()
            if Path(name).name not in TIMED and not LEFT_BEHIND.search(name)
            and not UNCOMPARED_DIRS & set(Path(name).parts[:-1])}


def assert_same_results(resumed: Path, reference: Path) -> None:
    got, want = _results(resumed), _results(reference)
    assert sorted(got) == sorted(want)  # no file missing, none added
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"not byte-identical to the uninterrupted run: {differ}"
    for k in (0, 1):  # the results the issue names, stated once more
        assert f"segment_{k}/oos.parquet" in want
    assert "metrics.csv" in want and b"sharpe" in want["metrics.csv"]


def kill_and_resume(wfo: Wfo, reference: Path, tmp_path: Path, point: str,
                    where: str) -> tuple[Path, subprocess.CompletedProcess, dict[str, bytes]]:
    """Kill a run at `point` (its marker must say `where`), check what it left, resume it in a
    fresh process and compare with the reference. Returns (run dir, the resumed process, the
    run dir's files as the kill left them)."""
    out, marker = tmp_path / "out", tmp_path / "killed_at"
    killed = wfo.killed(out, point, marker)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    assert marker.read_text().startswith(where), marker.read_text()
    run = out / "tiny"
    left = _files(run)
    if point != "report":
        assert "segment_0/DONE" in left and "segment_1/DONE" not in left
    resumed = wfo.run(out, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert "segment 0: finished before, skipped (--resume)" in resumed.stderr
    # segment 0, finished before the kill, is not touched (its orbax metadata included)
    seg0 = {n: b for n, b in left.items() if n.startswith("segment_0/")}
    assert {n: b for n, b in _files(run).items() if n.startswith("segment_0/")} == seg0
    assert_same_results(run, reference)
    return run, resumed, left


# --------------------------------------------------------------------------------------------
# Default suite: a kill between training chunks
# --------------------------------------------------------------------------------------------


def test_killed_between_training_chunks_resumes_from_the_checkpoint(wfo, reference, tmp_path):
    """SIGKILL right after chunk 2's checkpoint of segment 1: --resume skips segment 0,
    restores chunk 2 and trains chunks 3-5 (the training history holds all five, as in the
    uninterrupted run: it is compared byte for byte)."""
    run, resumed, left = kill_and_resume(wfo, reference, tmp_path, "chunk",
                                         "segment 1: training, after chunk 2's checkpoint")
    assert "segment_1/train/checkpoints/2/commit_success.txt" in left
    assert "1 segment(s) run, 1 skipped" in resumed.stdout
    assert "resumed training from" in resumed.stderr and "(chunk 2)" in resumed.stderr


# --------------------------------------------------------------------------------------------
# The other boundaries (slow)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("point", "where"), [pytest.param(p, w, id=p) for p, w in [
    ("encoder", "segment 1: fitted, its encoder stage starting"),
    ("mae", "segment 1: MAE pre-training, epoch 2 starting"),
    ("checkpoint", "segment 1: training, chunk 3's checkpoint written, not renamed"),
    ("backtest", "segment 1: backtest, OOS done, in-sample not"),
    ("files", "segment 1: files, oos.parquet written, no DONE"),
]])
def test_killed_inside_segment_1_resumes_to_the_same_results(wfo, reference, tmp_path, point,
                                                             where):
    run, resumed, left = kill_and_resume(wfo, reference, tmp_path, point, where)
    assert "1 segment(s) run, 1 skipped" in resumed.stdout
    if point == "checkpoint":  # the unrenamed checkpoint is not restored: chunk 2 is
        assert any(LEFT_BEHIND.search(n) and "/checkpoints/3.orbax" in n for n in left)
        assert "(chunk 2)" in resumed.stderr
    if point == "files":  # the killed run's oos.parquet was there; it is computed again
        assert "segment_1/oos.parquet" in left


@pytest.mark.slow
def test_killed_while_the_report_is_written_resumes_to_the_same_report(wfo, reference,
                                                                        tmp_path):
    """Every segment is DONE; the process dies with metrics.csv's temp file written and not
    renamed. --resume runs no segment, leaves both as they were and writes the report."""
    run, resumed, left = kill_and_resume(
        wfo, reference, tmp_path, "report",
        "report: .metrics.csv.")
    assert "segment_0/DONE" in left and "segment_1/DONE" in left
    assert "metrics.csv" not in left
    assert any(re.fullmatch(r"\.metrics\.csv\.[^/]+\.tmp", n) for n in left)
    assert "0 segment(s) run, 2 skipped" in resumed.stdout
    seg1 = {n: b for n, b in left.items() if n.startswith("segment_1/")}
    assert {n: b for n, b in _files(run).items() if n.startswith("segment_1/")} == seg1
    # the registry holds the run once (the killed run had registered it before its tables)
    assert len((run.parent / "runs.jsonl").read_text().splitlines()) == 1
