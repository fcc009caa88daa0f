"""The dry run of a walk-forward run (`cryptorl wfo --dry-run`): what `driver.run` would do with
a config, computed without training, compiling or writing anything, and without JAX.

`plan_run(cfg, workdir)` loads the data (the segments' dates need it), lays out the segments
as the run does (`walkforward.layout`), reads the run directory if it exists (what `--resume`
would skip), counts the training budget (`training_budget`) and estimates the time from a rate
recorded on this machine (`walkforward.rates`); `format_run_plan` is the text the CLI prints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import Config, identity
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market import load_market
from cryptorl_jax.walkforward.layout import Layout, make_segments, run_layout
from cryptorl_jax.walkforward.rates import Rate, estimate_seconds, estimate_text, recorded_rate

TIME = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Budget:
    """What one segment's training does, per agent and per compiled step."""

    asked: int  # train.total_env_steps
    chunks: int  # compiled chunks run: ceil(asked / (steps_per_chunk x n_envs))
    env_steps: int  # per agent: whole chunks, so at least `asked`
    updates: int  # per agent: gradient updates after learning starts
    seeds: int
    population: int  # trials (or configurations) per compiled step; 1 for a walk-forward run
    segments_per_batch: int
    encoder_batches: int | None  # the MAE's most optimiser steps (None: no pre-training)

    @property
    def members(self) -> int:
        """Members of one compiled step: seeds x population x segments per batch."""
        return self.seeds * self.population * self.segments_per_batch


def training_budget(cfg: Config, segments_per_batch: int = 1,
                    population: int = 1) -> Budget:
    """The training of one segment as the training loop runs it: whole chunks of
    steps_per_chunk vectorised steps of n_envs envs; an agent updates gradient_steps times a
    vectorised step once n_envs x steps >= tqc.learning_starts."""
    t, q, e = cfg.train, cfg.tqc, cfg.encoder
    if cfg.agent.kind == "direct":  # an iteration: one update on n_envs episodes of H hours
        per_update = t.n_envs * cfg.agent.direct.horizon  # as training.direct_step.chunk_updates
        chunk = min(t.steps_per_chunk, max(1, math.ceil(t.total_env_steps / per_update)))
        per_chunk = chunk * per_update
        chunks = math.ceil(t.total_env_steps / per_chunk)
        updates = chunks * chunk
    else:
        per_chunk = t.steps_per_chunk * t.n_envs
        chunks = math.ceil(t.total_env_steps / per_chunk)
        vec_steps = chunks * t.steps_per_chunk
        learning_from = math.ceil(q.learning_starts / t.n_envs)
        updates = max(0, vec_steps - learning_from) * q.gradient_steps
    mae = None
    if e.mode.startswith("pretrained"):
        mae = e.epochs * (e.batches_per_epoch or 0) or None
    return Budget(asked=t.total_env_steps, chunks=chunks, env_steps=chunks * per_chunk,
                  updates=updates, seeds=t.n_seeds, population=population,
                  segments_per_batch=segments_per_batch, encoder_batches=mae)


@dataclass
class Resume:
    """What the run directory already holds."""

    exists: bool
    finished: list[int]  # segments with DONE
    started: list[int]  # segment folders without DONE (--resume continues their checkpoints)
    held_digest: str | None
    refused: str | None  # why the run would stop at once (another config's finished segments)


def resume_state(cfg: Config, workdir: Path) -> Resume:
    rd = RunDir(workdir)
    if not rd.path.is_dir():
        return Resume(False, [], [], None, None)
    finished = rd.finished_segments()
    started = [s.index for s in rd.segment_dirs() if s.index not in finished]
    held = rd.config_digest.read_text().strip() if rd.config_digest.is_file() else None
    digest = identity(cfg).digest()
    refused = None
    if held is not None and held != digest and finished:
        refused = (f"{rd.path} holds a run of another config (digest {held} != {digest}) with "
                   f"finished segments {finished}: the run would stop at once; use another "
                   "run_name or --out, or delete the directory")
    return Resume(True, finished, started, held, refused)


@dataclass
class RunPlan:
    cfg: Config
    workdir: Path
    digest: str
    layout: Layout
    segments_in_data: int  # before wfo.segments / max_segments
    budget: Budget
    batches: list[list[int]]  # the batches of segments that would train
    resume: Resume
    resuming: bool
    pending: list[int]
    rate: Rate | None
    seconds: float | None

    @property
    def table(self) -> pd.DataFrame:
        return segment_table(self.layout, self.resume.finished, self.resume.started)


def segment_table(layout: Layout, finished: list[int] = (),
                  started: list[int] = ()) -> pd.DataFrame:
    """One row per segment: its train and test hours (first and last, UTC) and rows, and its
    state in the run directory (DONE, started, or nothing)."""
    idx = layout.index
    rows = []
    for s in layout.segments:
        state = "DONE" if s.index in finished else "started" if s.index in started else ""
        rows.append({"segment": s.index, "train_start": f"{idx[s.train_start]:{TIME}}",
                     "train_end": f"{idx[s.train_end - 1]:{TIME}}",
                     "test_start": f"{idx[s.test_start]:{TIME}}",
                     "test_end": f"{idx[s.test_end - 1]:{TIME}}",
                     "train_rows": s.train_end - s.train_start,
                     "test_rows": s.test_end - s.test_start, "in run dir": state})
    return pd.DataFrame(rows)


def batches_of(cfg: Config, segments: list[int], pending: list[int]) -> list[list[int]]:
    """The batches (wfo.segments_per_batch, cut from all the run's segments in order, as
    `driver.segment_batches` cuts them) that hold a pending segment."""
    k = cfg.wfo.segments_per_batch
    k = max(len(segments), 1) if k == "all" else int(k)
    out = [segments[i:i + k] for i in range(0, len(segments), k)]
    return [b for b in out if set(b) & set(pending)]


def plan_run(cfg: Config, workdir: str | Path, *, resume: bool = False,
             market: pd.DataFrame | None = None, layout: Layout | None = None,
             rate_roots: list[Path] | None = None) -> RunPlan:
    """The dry run of `driver.run(cfg, workdir, resume=resume)`: it reads the data (the
    market cache too, but writes none), lays out the segments (or takes `layout`, made by
    `run_layout` for the same data, features and wfo sections) and reads the run directory;
    it writes nothing."""
    workdir = Path(workdir)
    if layout is None:
        market = load_market(cfg.data, write_cache=False) if market is None else market
        layout = run_layout(cfg, market)
    every = dataclasses.replace(cfg.wfo, segments=None, max_segments=None)
    in_data = len(make_segments(len(layout.index), every, offset=layout.offset))
    state = resume_state(cfg, workdir)
    numbers = [s.index for s in layout.segments]
    pending = [k for k in numbers if not (resume and k in state.finished)]
    batches = batches_of(cfg, numbers, pending)
    sizes = {len(b) for b in batches}
    budget = training_budget(cfg, max(sizes) if sizes else 1)
    roots = rate_roots if rate_roots is not None else [workdir.parent]
    rate = recorded_rate(cfg.to_dict(), roots)
    seconds = None
    if rate is not None:
        seconds = estimate_seconds(rate, member_env_steps=budget.env_steps * budget.seeds
                                   * len(pending), batches=len(batches), segments=len(pending))
    return RunPlan(cfg=cfg, workdir=workdir, digest=identity(cfg).digest(), layout=layout,
                   segments_in_data=in_data, budget=budget, batches=batches, resume=state,
                   resuming=resume, pending=pending, rate=rate, seconds=seconds)


def text_table(frame: pd.DataFrame) -> str:
    """A frame as aligned plain text: numbers to the right, text to the left."""
    cols = [str(c) for c in frame.columns]
    cells = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    right = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right)).rstrip()

    return "\n".join([line(cols), *(line(r) for r in cells)])


def budget_lines(cfg: Config, b: Budget, what: str = "segment") -> list[str]:
    """The training budget of one segment (or trial and segment), as the dry runs print it."""
    t = cfg.train
    if cfg.agent.kind == "direct":
        lines = [f"training per {what} (direct learner): {b.env_steps:,} env steps per agent "
                 f"({b.chunks} chunks of {b.updates // b.chunks} updates, each on {t.n_envs} "
                 f"episodes x {cfg.agent.direct.horizon} hours; train.total_env_steps "
                 f"{b.asked:,}), {b.updates:,} updates per agent"]
    else:
        lines = [f"training per {what}: {b.env_steps:,} env steps per agent ({b.chunks} chunks "
                 f"of {t.steps_per_chunk} vectorised steps x {t.n_envs} envs; "
                 f"train.total_env_steps {b.asked:,}), {b.updates:,} updates per agent "
                 f"({cfg.tqc.gradient_steps} per vectorised step from "
                 f"{cfg.tqc.learning_starts:,} env steps on)"]
    who = f"{b.seeds} seeds" + (f" x {b.population} trials" if b.population > 1 else "") + (
        f" x {b.segments_per_batch} segments" if b.segments_per_batch > 1 else "")
    lines.append(f"members per compiled step: {b.members} ({who}), on {t.devices} device(s)")
    if b.encoder_batches:
        e = cfg.encoder
        lines.append(f"MAE encoder ({e.mode}): up to {e.epochs} epochs x {e.batches_per_epoch} "
                     f"batches of {e.batch_size} windows ({b.encoder_batches:,} steps; early "
                     f"stopping after {e.patience} epochs without a better validation loss)")
    elif cfg.encoder.mode != "none":
        lines.append(f"encoder: {cfg.encoder.mode} (no pre-training)")
    return lines


def data_line(cfg: Config, layout: Layout) -> str:
    idx = layout.index
    assets = ", ".join(a.name for a in cfg.data.assets)
    return (f"data: {len(idx):,} hourly rows {idx[0]:{TIME}} .. {idx[-1]:{TIME}} UTC ({assets} "
            f"from {cfg.data.data_dir}); the first {layout.offset} rows are the features' "
            "warm-up and the first decision's lookback")


def resume_lines(plan: RunPlan) -> list[str]:
    r, where = plan.resume, plan.workdir
    if r.refused:
        return [f"resume: refused: {r.refused}"]
    if not r.exists:
        return [f"resume: {where} does not exist yet: every segment runs"]
    if not r.finished and not r.started:
        return [f"resume: {where} holds no segment yet: every segment runs"]
    out = []
    if r.finished:
        out.append(f"resume: --resume would skip segments {r.finished} (DONE in {where})"
                   + ("" if plan.resuming else "; without --resume they are cleared and run "
                      "again"))
    if r.started:
        out.append(f"resume: segments {r.started} started without finishing: --resume "
                   "continues each from its last training checkpoint")
    return out


def format_run_plan(plan: RunPlan, *, with_config: bool = True) -> str:
    """The dry run's text: the resolved config (YAML), its digest, the segments, the budget,
    the run directory, what --resume would skip and the estimate."""
    cfg = plan.cfg
    lines = []
    if with_config:
        lines += [f"# resolved config ({cfg.source or 'defaults'})", cfg.to_yaml().rstrip(), ""]
    lines += [f"config digest: {plan.digest} (the run directory's config.digest)",
              f"run directory: {plan.workdir}", data_line(cfg, plan.layout),
              f"segments: {len(plan.layout.segments)} of the {plan.segments_in_data} the data "
              f"holds (wfo.max_segments {cfg.wfo.max_segments}, wfo.segments "
              f"{list(cfg.wfo.segments) if cfg.wfo.segments is not None else 'all'})",
              text_table(plan.table), *budget_lines(cfg, plan.budget),
              f"batches that would train: {len(plan.batches)} "
              f"({', '.join(str(b) for b in plan.batches) or 'none'}); segments to run: "
              f"{plan.pending}", *resume_lines(plan), estimate_text(plan.rate, plan.seconds)]
    return "\n".join(lines)
