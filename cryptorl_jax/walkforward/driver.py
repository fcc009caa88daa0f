"""The walk-forward driver: `run(cfg, workdir)`, what `cryptorl wfo` (scripts/wfo.py) calls.

For the segments of `data.prepare_run` (features built once for the run: they are causal) it
  1. checks the run directory's config (`config.identity`: a finished segment of another
     config is refused) and records the invocation in run_info.json;
  2. skips the segments finished before (--resume; a finished segment whose files do not
     match its DONE record is moved aside and computed again) or clears them;
  3. cuts the pending segments into batches of wfo.segments_per_batch (`segment_batches`) and
     hands each batch to the executor (walkforward.executor) as `run_batch`: the runner
     computes the batch (`runner.run_segments`: transforms, encoder, baselines, TQC, the OOS
     and in-sample backtests), then the writer writes each segment's files and its DONE
     record (`writer.write_segment_files`). Where the executor's calls do not see this run
     directory, `run_batch_in_scratch` does the same in a scratch directory and returns the
     segments as archives, which are installed here (`writer.install_segment`);
  4. rebuilds the run's report (report.write) from all finished segments.
Before any of it the run and output directories must be writable (`core.io.check_writable`),
and the segments it computes are claimed (`core.runlock.SegmentClaim`): a second process whose
segments overlap is refused naming this one; processes with disjoint --segments share the run,
taking turns (`runlock.run_files_lock`) at the files they all rewrite: config.yaml,
run_info.json and the report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from cryptorl_jax.config import Config, ConfigError, identity
from cryptorl_jax.core import provenance
from cryptorl_jax.core.hooks import NO_HOOKS, Hooks
from cryptorl_jax.core.io import check_writable, write_atomic, write_json
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.core.runlock import RunLockedError, SegmentClaim, holder_record, run_files_lock
from cryptorl_jax.report.write import write_report
from cryptorl_jax.training.logging import ScalarLogger
from cryptorl_jax.walkforward.data import RunData, prepare_run
from cryptorl_jax.walkforward.executor import Executor, LocalExecutor
from cryptorl_jax.walkforward.runner import SegmentControls, run_segments
from cryptorl_jax.walkforward.segments import Segment
from cryptorl_jax.walkforward.writer import (
    install_segment,
    pack_segment,
    set_aside,
    write_segment_files,
)

log = logging.getLogger("cryptorl_jax.walkforward")


@dataclass
class RunResult:
    workdir: Path
    segments_run: list[int]
    segments_skipped: list[int]
    seconds: float
    report: dict[str, Any]


def run(cfg: Config, workdir: str | Path, *, resume: bool = False, report_only: bool = False,
        progress: bool | None = None, market: pd.DataFrame | None = None,
        hooks: Hooks = NO_HOOKS, executor: Executor | None = None) -> RunResult:
    """Run (or resume) the walk-forward study in `workdir` and write the report.

    `executor` runs the pending batches of segments: None is `LocalExecutor` (one after the
    other in this process); a `cluster.RayExecutor` runs them as Ray tasks. `hooks` (tests)
    interrupt the run as a kill would: see cryptorl_jax.core.hooks.
    """
    with contextlib.ExitStack() as held:  # this run's claim on its segments, released at the end
        return _run(cfg, Path(workdir), held, resume=resume, report_only=report_only,
                    progress=progress, market=market, hooks=hooks, executor=executor)


def _run(cfg: Config, workdir: Path, held: contextlib.ExitStack, *, resume: bool,
         report_only: bool, progress: bool | None, market: pd.DataFrame | None, hooks: Hooks,
         executor: Executor | None) -> RunResult:
    t0 = time.perf_counter()
    # a read-only directory is found before any work (the registry is in the output dir)
    check_writable(workdir, "the run directory")
    check_writable(workdir.parent, "the output directory")
    progress = cfg.output.progress if progress is None else progress
    run_data = None
    if not report_only:  # bad data or a bad --segments fails here, before the run dir exists
        run_data = prepare_run(cfg, market)
    workdir.mkdir(parents=True, exist_ok=True)
    rd = RunDir(workdir)
    mine = [s.index for s in run_data.segments] if run_data is not None else []
    claim = held.enter_context(SegmentClaim(
        workdir, mine, holder_record(mine, identity(cfg).digest())))
    ex = executor if executor is not None else LocalExecutor()
    with run_files_lock(workdir):
        _check_run_config(cfg, rd, claim.others())
        info = _start_run_info(rd, report_only, ex.name)
    ran: list[int] = []
    skipped: list[int] = []
    if run_data is not None:
        log.info("walk-forward: %d segments over %d rows (offset %d), run dir %s",
                 len(run_data.segments), len(run_data.market), run_data.offset, workdir)
        pending = []
        for seg in run_data.segments:
            out = rd.segment(seg.index)
            if resume and out.is_done():
                damage = out.damage()  # its files against the checksums in its DONE record
                if damage is None:
                    skipped.append(seg.index)
                    log.info("segment %d: finished before, skipped (--resume)", seg.index)
                    continue
                aside = set_aside(rd, seg.index)  # nothing deleted; train/ stays in place
                log.warning("segment %d is damaged: %s; its folder is moved aside to %s and "
                            "the segment computed again", seg.index, damage, aside)
            if not resume and out.path.exists():
                shutil.rmtree(out.path)
            pending.append(seg)
        if not resume:  # the batches' training checkpoints belong to the run started over
            for stale in _stale_batch_dirs(rd, claim.others()):
                shutil.rmtree(stale)
        ran = _run_pending(cfg, run_data, pending, rd, ex, progress=progress, resume=resume,
                           hooks=hooks)
    with run_files_lock(workdir):  # one report at a time: the last one sees every segment
        report = write_report(cfg, workdir)
        _finish_run_info(rd, info, ran, skipped, time.perf_counter() - t0)
    return RunResult(workdir=workdir, segments_run=ran, segments_skipped=skipped,
                     seconds=time.perf_counter() - t0, report=report)


def _check_run_config(cfg: Config, rd: RunDir, others: Sequence[dict[str, Any]] = ()
                      ) -> None:
    """Write config.yaml (the run's `config.identity`), or refuse a run directory whose
    finished segments came from a different config, or that a live process (`others`: their
    segment claims' records) is computing with a different config. A directory with no
    finished segment (a run that stopped on bad input, or was killed in its first segment)
    holds nothing worth keeping: its partial segments are removed and the new config replaces
    the old one."""
    ident = identity(cfg)
    digest = ident.digest()
    for rec in others:
        if rec.get("config_digest") not in (None, digest):
            raise RunLockedError(
                f"{rd.path} is being computed with another config (digest "
                f"{rec['config_digest']} != {digest}) by pid {rec.get('pid')} on "
                f"{rec.get('host')}, started {rec.get('started')}, segments "
                f"{rec.get('segments')}, command: {rec.get('command')}; use another run_name "
                "or --out")
    held = rd.config_digest.read_text().strip() if rd.config_digest.exists() else None
    if held is not None and held != digest:
        if rd.finished_segments():
            raise ConfigError(
                "run_name", f"{rd.path} holds a run with a different config (digest {held} != "
                f"{digest}); use another run_name or --out, or delete the directory",
                cfg.source)
        log.warning("%s: no finished segment from its earlier config %s; starting over with "
                    "config %s", rd.path, held, digest)
        for stale in [*(d.path for d in rd.segment_dirs()), *rd.batch_dirs()]:
            shutil.rmtree(stale)
    write_atomic(rd.config, ident.to_yaml())
    write_atomic(rd.config_digest, digest + "\n")


def _start_run_info(rd: RunDir, report_only: bool, executor_name: str) -> dict[str, Any]:
    """Record this invocation in run_info.json (earlier invocations are kept in `history`)."""
    history: list[dict[str, Any]] = []
    if rd.run_info.is_file():
        try:
            old = json.loads(rd.run_info.read_text())
            history = [*old.pop("history", []), old]
        except (json.JSONDecodeError, AttributeError):
            log.warning("%s: unreadable, replaced", rd.run_info)
    info = {**provenance.run_info(), "report_only": report_only, "executor": executor_name,
            "invocation": secrets.token_hex(8), "history": history}
    write_json(rd.run_info, info)
    return info


def _finish_run_info(rd: RunDir, info: dict[str, Any], ran: list[int], skipped: list[int],
                     seconds: float) -> None:
    """Complete this invocation's record in run_info.json as the file holds it now: a process
    of the same run (disjoint --segments) may have added its own record since this one began,
    and keeps it (this record is completed where it is, at the top or in the history)."""
    segs = {}
    for k in ran:
        if rd.segment(k).is_done():
            t = rd.segment(k).done_meta().get("timings", {})
            segs[str(k)] = {key: t.get(key) for key in ("segment_s", "rss_mb", "peak_rss_mb")}
    done = {key: value for key, value in info.items() if key != "history"}
    done.update({"finished": provenance.now(), "seconds": seconds,
                 "loadavg_end": provenance.loadavg(), "segments_run": ran,
                 "segments_skipped": skipped, "segment_memory": segs,
                 "peak_rss_mb": provenance.peak_rss_mb()})
    try:
        now = json.loads(rd.run_info.read_text())
    except (OSError, json.JSONDecodeError):
        now = None
    if not isinstance(now, dict):  # gone or damaged: this record and its own history
        now = {"invocation": info.get("invocation"), "history": info.get("history", [])}
    if now.get("invocation") == info.get("invocation"):
        write_json(rd.run_info, {**done, "history": now.get("history", [])})
        return
    history = now.get("history", [])
    at = [i for i, rec in enumerate(history) if rec.get("invocation") == info.get("invocation")]
    if at:
        history[at[-1]] = done
    else:
        history.append(done)
    write_json(rd.run_info, {**now, "history": history})


def _stale_batch_dirs(rd: RunDir, others: Sequence[dict[str, Any]]) -> list[Path]:
    """The batch_<a>-<b>/ checkpoint folders a fresh (not --resume) run removes: all but those
    of a live process computing other segments of the run (a batch is named by its first and
    last segment, both that process's)."""
    theirs = {int(k) for rec in others for k in rec.get("segments", [])}
    out = []
    for path in rd.batch_dirs():
        first, _, last = path.name.removeprefix("batch_").partition("-")
        if not (first.isdigit() and last.isdigit() and {int(first), int(last)} & theirs):
            out.append(path)
    return out


# --------------------------------------------------------------------------------------------
# Batches of segments, through the executor
# --------------------------------------------------------------------------------------------


def segment_batches(cfg: Config, segments: Sequence[Segment], pending: Sequence[Segment]
                    ) -> list[tuple[list[Segment], list[Segment]]]:
    """(batch, its pending segments) for the pending segments: the run's `segments` (all of
    them, finished or not) cut into batches of wfo.segments_per_batch in order (fixed, so a
    resumed batch is the batch its checkpoints were written by); batches with nothing pending
    are left out."""
    k = cfg.wfo.segments_per_batch
    if k == "all":
        k = max(len(segments), 1)
    wanted = {s.index for s in pending}
    out = []
    for i in range(0, len(segments), int(k)):
        batch = list(segments[i:i + int(k)])
        todo = [s for s in batch if s.index in wanted]
        if todo:
            out.append((batch, todo))
    return out


def _run_pending(cfg: Config, run: RunData, pending: list[Segment], rd: RunDir, ex: Executor,
                 *, progress: bool, resume: bool, hooks: Hooks) -> list[int]:
    """Every batch with a pending segment through the executor (`run_batch` where its calls
    see this run directory, else `run_batch_in_scratch` and the archives installed here, each
    as it arrives). Returns the segments run, in the order they finished."""
    batches = segment_batches(cfg, run.segments, pending)
    if not batches:
        return []
    task_progress = progress and not ex.remote
    run_ref = ex.put(run)
    submitted: list[tuple[Any, list[Segment]]] = []
    for batch, todo in batches:
        if ex.shared_fs:
            handle = ex.submit(run_batch, cfg, run_ref, batch, RunDir(rd.path.absolute()),
                               progress=task_progress, resume=resume, hooks=hooks)
        else:
            handle = ex.submit(run_batch_in_scratch, cfg, run_ref, batch,
                               [s.index for s in todo], hooks)
        submitted.append((handle, todo))
    if ex.remote:
        log.info("%s: %d task(s) for %d segment(s) submitted (%s filesystem)", ex.name,
                 len(submitted), len(pending), "shared" if ex.shared_fs else "no shared")
    ran: list[int] = []
    bar = tqdm(total=len(pending), desc="segments", disable=not task_progress, leave=True)
    try:
        while submitted:
            handle = ex.wait([h for h, _ in submitted])
            i = next(i for i, (h, _) in enumerate(submitted) if h is handle)
            _, todo = submitted.pop(i)
            bar.set_postfix(segment=",".join(str(s.index) for s in todo))
            what = ", ".join(str(s.index) for s in todo)
            out = ex.result(handle, f"segment{'s' if len(todo) > 1 else ''} {what}")
            if ex.shared_fs:  # the call wrote the run directory: its DONE records
                ran += [done["segment"] for done in out]
            else:
                for index, archive in out:
                    install_segment(rd, index, archive)
                    ran.append(index)
            if ex.remote:
                for s in todo:
                    done = rd.segment(s.index).done_meta()
                    log.info("%s: segment %d finished on %s (OOS sharpe %.2f)", ex.name,
                             s.index, done.get("host"), done.get("sharpe", float("nan")))
            bar.update(len(todo))
    finally:
        bar.close()
        ex.cancel([h for h, _ in submitted])
    return ran


def run_batch(cfg: Config, run: RunData, segs: Sequence[Segment], rd: RunDir, *,
              progress: bool = False, resume: bool = False,
              hooks: Hooks = NO_HOOKS) -> list[dict[str, Any]]:
    """One batch of walk-forward segments into rd: computed together (`runner.run_segments`:
    the agents of K segments train in one compiled step), then each written into its own
    segment directory with its own DONE record, in order (`writer.write_segment_files`).
    Returns the DONE records written. A segment of the batch already DONE (a resumed batch) is
    trained again with the others but not rewritten (its encoder is saved into a scratch
    folder). The batch's training checkpoints live in
    rd.batch(first, last) (K > 1) or the segment's own directory (K = 1)."""
    t_seg = time.perf_counter()
    k = len(segs)
    for seg in segs:
        rd.segment(seg.index).path.mkdir(parents=True, exist_ok=True)
    train_dir = rd.segment(segs[0].index).path if k == 1 else rd.batch(segs[0].index,
                                                                          segs[-1].index)
    tb_dir = None
    if cfg.output.tensorboard:
        tb_dir = (rd.tensorboard_segment(segs[0].index) if k == 1
                  else rd.tensorboard / train_dir.name)
    logger = ScalarLogger(tb_dir)
    dones = []
    # a finished segment of a resumed batch is computed again into a scratch folder: its own
    # files (its encoder's among them) stay byte for byte as its DONE record vouches
    spare = Path(tempfile.mkdtemp(prefix="cryptorl-finished-"))
    workdirs = [spare / f"segment_{s.index}" if k > 1 and rd.segment(s.index).is_done()
                else rd.segment(s.index).path for s in segs]
    try:
        controls = SegmentControls(logger=logger, tensorboard_dir=tb_dir, progress=progress,
                                   resume=resume, hooks=hooks)
        outcomes = run_segments(cfg, run, segs, workdirs, train_dir,
                                eval_rows=[(s.test_start, s.test_end) for s in segs],
                                controls=controls, with_baselines=True, with_insample=True)
        for seg, outcome in zip(segs, outcomes, strict=True):
            if k > 1 and rd.segment(seg.index).is_done():
                log.info("segment %d: finished before; its batch was trained again for the "
                         "others, its files are kept", seg.index)
                continue
            dones.append(write_segment_files(cfg, run, seg, rd, outcome, hooks, t_seg))
    finally:
        logger.close()
        shutil.rmtree(spare, ignore_errors=True)
    return dones


def run_batch_in_scratch(cfg: Config, run: RunData, segs: Sequence[Segment],
                         pending: Sequence[int], hooks: Hooks) -> list[tuple[int, bytes]]:
    """`run_batch` into a scratch run directory of the machine it runs on (an executor's call
    that does not see the run directory); returns (index, `writer.pack_segment` archive) of
    each pending segment, for `writer.install_segment`."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cryptorl-batch{segs[0].index}-"))
    try:
        rd = RunDir(tmp)
        dones = run_batch(cfg, run, segs, rd, progress=False, resume=False, hooks=hooks)
        return [(d["segment"], pack_segment(rd, d["segment"])) for d in dones
                if d["segment"] in pending]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
