"""Damaged files in a run directory (issue 41): a segment's DONE record, Parquet frames, JSON
state, encoder and agents (orbax) cut short or with one flipped bit, and a damaged training
checkpoint.

One tiny walk-forward run (one segment, two seeds, the last two training checkpoints kept) is
trained once for the module; each case damages a copy. A finished segment's DONE record holds
the size and sha256 of every file it vouches for, so:
  * the report (`write_report`, `cryptorl wfo --report-only`) refuses a damaged finished
    segment before reading or writing anything, naming the file and the recovery;
  * `--resume` moves it aside to segment_<k>.damaged-<time> (nothing deleted) and computes it
    again, with a warning naming the file: the numbers equal the undamaged run's;
  * a damaged training checkpoint of an unfinished segment is moved aside and training resumes
    from the one before it, or from its start when none is left; the numbers again equal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.core.integrity import FILES, SEAL
from cryptorl_jax.core.rundir import DONE, RunDir, SegmentDamagedError
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.report.write import write_report
from cryptorl_jax.training.checkpoint import SUMS, Checkpointer
from cryptorl_jax.walkforward import driver
from tests.walkforward.test_driver import TINY_WFO

NAME = "corrupt"
CFG = [*TINY_WFO, "wfo.max_segments=1", f"run_name={NAME}", "train.keep_checkpoints=2"]


@dataclasses.dataclass
class Finished:
    cfg: object
    market: pd.DataFrame
    workdir: Path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """One finished tiny run (segment 0, two seeds; checkpoints 4 and 5 of 5 kept)."""
    cfg = load_config(None, CFG)
    market = make_market(1100, seed=5)
    workdir = tmp_path_factory.mktemp("corrupt") / NAME
    driver.run(cfg, workdir, market=market)
    return Finished(cfg, market, workdir)


def _copy(f: Finished, out: Path) -> Path:
    shutil.copytree(f.workdir, out / NAME)
    return out / NAME


def _largest(folder: Path) -> Path:
    """The largest data file of an orbax folder: its arrays' bytes."""
    return max((p for p in folder.rglob("ocdbt.process_0/d/*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _target(seg: Path, kind: str) -> Path:
    return _largest(seg / kind) if kind in ("encoder", "agents") else seg / kind


def _damage(path: Path, how: str) -> None:
    """Cut the file to half its length, or flip one bit in its middle."""
    data = path.read_bytes()
    i = len(data) // 2
    path.write_bytes(data[:i] if how == "truncated"
                     else data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# every file kind the report or a finished segment's reader loads ("encoder" / "agents": the
# largest file of the orbax folder, its arrays)
KINDS = ["DONE", "oos.parquet", "insample.parquet", "metrics.json", "transforms.json",
         "scaler.json", "regime_model.json", "regime_stats.json", "baselines.json",
         "train_history.json", "encoder/meta.json", "encoder", "agents"]


# --------------------------------------------------------------------------------------------
# What DONE vouches for
# --------------------------------------------------------------------------------------------


def test_done_records_every_file_of_the_segment_but_its_checkpoints(finished):
    seg = RunDir(finished.workdir).segment(0)
    done = seg.done_meta()
    files = done[FILES]
    assert isinstance(done[SEAL], str) and seg.damage() is None
    on_disk = {p.relative_to(seg.path).as_posix() for p in seg.path.rglob("*") if p.is_file()}
    assert set(files) == {f for f in on_disk if f != DONE and not f.startswith("train/")}
    for name in ("oos.parquet", "scaler.json", "regime_model.json", "stationarity.csv",
                 "encoder/meta.json"):
        assert files[name]["size"] == (seg.path / name).stat().st_size
    assert any(f.startswith("agents/") for f in files)
    assert any(f.startswith("encoder/params/") for f in files)
    # each kept training checkpoint vouches for its own files
    ckpt = seg.checkpoints / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir()) == [4, 5]
    assert all((ckpt / s / SUMS).is_file() for s in ("4", "5"))


# --------------------------------------------------------------------------------------------
# The report refuses a damaged finished segment
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "flipped"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_report_refuses_a_damaged_finished_segment_naming_the_file(finished, tmp_path,
                                                                       kind, how):
    """Each kind of file cut short or with one bit flipped: `write_report` raises before it
    reads or writes anything, naming the file (DONE itself when the flip is in DONE) and how
    to recover; the output directory is byte-identical afterwards."""
    out = tmp_path / "out"
    workdir = _copy(finished, out)
    seg = RunDir(workdir).segment(0)
    path = _target(seg.path, kind)
    _damage(path, how)
    before = _snapshot(out)
    with pytest.raises(SegmentDamagedError) as err:
        write_report(finished.cfg, workdir)
    msg = str(err.value)
    assert msg.startswith(f"segment 0 is damaged: {path}")
    assert "none of its numbers is read" in msg
    assert f"delete {seg.path} and run again with --resume" in msg
    assert _snapshot(out) == before


def test_the_cli_report_names_a_damaged_done_record_without_a_traceback(finished, tmp_path,
                                                                         capsys):
    """`cryptorl wfo --report-only` over a truncated DONE (before: json.decoder.JSONDecodeError
    and a traceback): exit 2, one line naming the file and the recovery; every file but
    run_info.json (the invocation recorded) unchanged."""
    from cryptorl_jax.cli import wfo

    out = tmp_path / "out"
    workdir = _copy(finished, out)
    (tmp_path / "c.yaml").write_text(finished.cfg.to_yaml())
    _damage(workdir / "segment_0" / DONE, "truncated")
    before = _snapshot(out)
    rc = wfo.main(["--config", str(tmp_path / "c.yaml"), "--out", str(out), "--report-only"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line, = [x for x in err.splitlines() if x.startswith("wfo: error: ")]
    assert f"segment 0 is damaged: {workdir / 'segment_0' / DONE}: it is not a readable " in line
    assert "run again with --resume" in line
    after = _snapshot(out)
    assert after.pop(f"{NAME}/run_info.json") != before.pop(f"{NAME}/run_info.json")
    assert after == before


def test_evaluate_refuses_a_damaged_finished_segment(finished, tmp_path):
    from cryptorl_jax.walkforward.evaluate import evaluate_window

    workdir = _copy(finished, tmp_path)
    scaler = workdir / "segment_0" / "scaler.json"
    _damage(scaler, "flipped")
    with pytest.raises(SegmentDamagedError, match=re.escape(f"damaged: {scaler} does not ")):
        evaluate_window(workdir, 0)


# --------------------------------------------------------------------------------------------
# A DONE record written before the checksums
# --------------------------------------------------------------------------------------------


def _old_done(workdir: Path) -> None:
    done = RunDir(workdir).segment(0).done
    record = json.loads(done.read_text())
    del record[FILES], record[SEAL]
    done.write_text(json.dumps(record, indent=1))


def test_an_old_done_record_is_accepted_and_its_files_are_load_checked(finished, tmp_path):
    """A DONE record without checksums (an older run): the segment is finished and its report
    is the run's own; a Parquet or JSON file that does not load is still refused by name."""
    workdir = _copy(finished, tmp_path / "out")
    _old_done(workdir)
    seg = RunDir(workdir).segment(0)
    assert seg.damage() is None
    rep = write_report(finished.cfg, workdir)
    assert rep["segments"] == [0]
    assert ((workdir / "metrics.csv").read_text()
            == (finished.workdir / "metrics.csv").read_text())
    for name in ("oos.parquet", "regime_model.json"):
        _damage(seg.path / name, "truncated")
        with pytest.raises(SegmentDamagedError,
                           match=re.escape(f"damaged: {seg.path / name} does not load (")):
            write_report(finished.cfg, workdir)
        shutil.copy2(finished.workdir / "segment_0" / name, seg.path / name)


# --------------------------------------------------------------------------------------------
# --resume computes a damaged finished segment again
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,how", [("DONE", "truncated"), ("agents", "flipped")])
def test_resume_moves_a_damaged_segment_aside_and_computes_it_again(finished, tmp_path,
                                                                    caplog, kind, how):
    """--resume over a finished segment with a damaged file: a warning names the file and
    where the folder went; the folder is kept whole under segment_0.damaged-<time> (its
    training checkpoints back in the new segment_0, whose training resumes from the last);
    the segment's new files equal the undamaged run's and its new DONE vouches for them."""
    workdir = _copy(finished, tmp_path)
    seg = RunDir(workdir).segment(0)
    path = _target(seg.path, kind)
    _damage(path, how)
    before = {k: v for k, v in _snapshot(seg.path).items() if not k.startswith("train/")}
    caplog.set_level(logging.INFO)
    result = driver.run(finished.cfg, workdir, market=finished.market, resume=True)
    assert result.segments_run == [0] and result.segments_skipped == []
    aside, = workdir.glob("segment_0.damaged-*")
    warning, = [w for w in _warnings(caplog) if w.startswith("segment 0 is damaged: ")]
    assert warning.startswith(f"segment 0 is damaged: {path}")
    assert warning.endswith(f"its folder is moved aside to {aside} and the segment computed "
                            "again")
    assert _snapshot(aside) == before  # nothing lost: the damaged file too, as it was
    assert any("resumed training from" in r.getMessage() and "(chunk 5)" in r.getMessage()
               for r in caplog.records)
    assert seg.damage() is None and RunDir(workdir).finished_segments() == [0]
    pd.testing.assert_frame_equal(pd.read_parquet(seg.oos),
                                  pd.read_parquet(finished.workdir / "segment_0" / "oos.parquet"))
    assert ((workdir / "metrics.csv").read_text()
            == (finished.workdir / "metrics.csv").read_text())


# --------------------------------------------------------------------------------------------
# A damaged training checkpoint of an unfinished segment
# --------------------------------------------------------------------------------------------


def _checkpoint_data(ckpt: Path, step: int) -> Path:
    return _largest(ckpt / str(step))


@pytest.mark.parametrize("damaged", [[5], [4, 5]])
def test_resume_falls_back_past_a_damaged_training_checkpoint(finished, tmp_path, caplog,
                                                              damaged):
    """Segment 0 unfinished (its DONE removed) with a flipped bit in the arrays of its last
    checkpoint (orbax alone restores such a checkpoint as wrong numbers without a word):
    --resume warns, moves the checkpoint aside and resumes from checkpoint 4; with both kept
    checkpoints damaged, training starts again from its first chunk. The segment's numbers
    equal the undamaged run's either way."""
    workdir = _copy(finished, tmp_path)
    seg = RunDir(workdir).segment(0)
    seg.done.unlink()
    ckpt = seg.checkpoints / "checkpoints"
    damaged_bytes, files = {}, {}
    for step in damaged:
        files[step] = _checkpoint_data(ckpt, step)
        _damage(files[step], "flipped")
        damaged_bytes[step] = _snapshot(ckpt / str(step))
    caplog.set_level(logging.INFO)
    result = driver.run(finished.cfg, workdir, market=finished.market, resume=True)
    assert result.segments_run == [0]
    warnings = [w for w in _warnings(caplog) if w.startswith("training checkpoint")]
    assert len(warnings) == len(damaged)
    aside, = seg.checkpoints.glob("checkpoints.damaged-*")
    for w, step in zip(warnings, sorted(damaged, reverse=True), strict=True):
        assert w.startswith(f"training checkpoint {step} is damaged: "
                            f"{files[step]} does not match the sha256")
        assert w.endswith(f"moved aside to {aside / str(step)}")
        assert _snapshot(aside / str(step)) == damaged_bytes[step]  # kept as it was
    infos = [r.getMessage() for r in caplog.records]
    if damaged == [5]:
        assert any(m.endswith("checkpoints/4 (chunk 4)") for m in infos)
    else:
        assert any(m.endswith("no good training checkpoint is left; training starts again "
                              "from its first chunk") for m in _warnings(caplog))
    assert len(json.loads(seg.train_history.read_text())) == 5
    assert ((workdir / "metrics.csv").read_text()
            == (finished.workdir / "metrics.csv").read_text())


def test_a_checkpoint_without_its_manifest_is_load_checked_and_a_sound_one_restores(tmp_path):
    """The checkpointer alone: a step written before the manifests (none) that does not load
    is moved aside for the one before it; a step that matches its manifest but does not fit
    the structure asked for is an error of the caller, raised, and nothing is moved."""
    state = {"a": jnp.arange(1000, dtype=jnp.float32), "b": jnp.ones((40, 20))}
    with Checkpointer(tmp_path / "checkpoints", keep=2) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {k: v * step for k, v in state.items()}, {"chunk": step})
    with Checkpointer(tmp_path / "checkpoints", keep=2) as ckpt:
        with pytest.raises(Exception):  # noqa: B017 - orbax's own error for a wrong shape
            ckpt.restore_latest_good({"a": jnp.zeros(3), "b": state["b"]})
        assert ckpt.all_steps() == [1, 2]
    (tmp_path / "checkpoints" / "2" / SUMS).unlink()  # as before the manifests
    _damage(tmp_path / "checkpoints" / "2" / "state" / "manifest.ocdbt", "truncated")
    with Checkpointer(tmp_path / "checkpoints", keep=2) as ckpt:
        step, got, meta = ckpt.restore_latest_good(state)
        assert step == 1 and meta == {"chunk": 1} and ckpt.all_steps() == [1]
    np.testing.assert_array_equal(got["a"], state["a"])
    aside, = tmp_path.glob("checkpoints.damaged-*")
    assert (aside / "2" / "state" / "manifest.ocdbt").is_file()
