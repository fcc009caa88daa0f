"""Where the work of a driver runs: the one executor interface (issue 26).

A driver hands an executor two kinds of work: walk-forward segments (`run_segments`: the
segments run, their files written into the run directory) and tuning batches (`submit_batch`
then `result`: a batch of trials trained by `tune.train_trials`, its `tune.BatchOutcome`
returned; `slots` batches may be in flight). `LocalExecutor` runs both in this process, one
after the other; `cluster.RayExecutor` runs them as Ray tasks. `cryptorl wfo`, `cryptorl tune`
and `cryptorl power` take either.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from cryptorl_jax.config import Config
    from cryptorl_jax.hooks import Hooks
    from cryptorl_jax.layout import RunDir
    from cryptorl_jax.walkforward.data import RunData
    from cryptorl_jax.walkforward.segments import Segment
    from cryptorl_jax.walkforward.tune import BatchOutcome


@runtime_checkable
class Executor(Protocol):
    """What the walk-forward, tuning and power drivers need from an executor."""

    name: str

    @property
    def slots(self) -> int:
        """How many tuning batches it runs at once (the batches a study keeps in flight)."""
        ...

    def run_segments(self, cfg: Config, run: RunData, segments: list[Segment], rd: RunDir, *,
                     progress: bool, resume: bool, hooks: Hooks) -> list[int]:
        """Run the walk-forward segments into rd; returns the indices run, as they finished."""
        ...

    def submit_batch(self, cfg: Config, market: pd.DataFrame, segments: list[Segment],
                     overrides: list[list[str]], population: int, workdir: Path) -> Any:
        """Start training one population batch of trials (`tune.train_trials`); returns a
        handle for `result`. workdir: scratch space where the executor shares this machine's
        filesystem (a remote task uses its own)."""
        ...

    def result(self, handle: Any, what: str) -> BatchOutcome:
        """The batch's outcome; an error that is not the trials' own names `what`."""
        ...


def segment_batches(cfg: Config, layout: list[Segment], pending: list[Segment]
                    ) -> list[tuple[list[Segment], list[Segment]]]:
    """(batch, its pending segments) for the pending segments: the run's segments cut into
    batches of wfo.segments_per_batch in order (fixed, so a resumed batch is the batch its
    checkpoints were written by); batches with nothing pending are left out."""
    k = cfg.wfo.segments_per_batch
    if k == "all":
        k = max(len(layout), 1)
    wanted = {s.index for s in pending}
    out = []
    for i in range(0, len(layout), int(k)):
        batch = layout[i:i + int(k)]
        todo = [s for s in batch if s.index in wanted]
        if todo:
            out.append((batch, todo))
    return out


class LocalExecutor:
    """The segments and the tuning batches one after the other, in this process. A batch is
    trained when its result is asked for (one slot: the study asks, trains, tells in turn)."""

    name = "local"

    def __init__(self, *, progress: bool | None = None, keep_dirs: bool = False):
        self.progress = progress  # the batches' progress bars (None: the config's)
        self.keep_dirs = keep_dirs  # keep each batch's scratch directory

    @property
    def slots(self) -> int:
        return 1

    def run_segments(self, cfg: Config, run: RunData, segments: list[Segment], rd: RunDir, *,
                     progress: bool, resume: bool, hooks: Hooks) -> list[int]:
        from tqdm.auto import tqdm

        from cryptorl_jax.walkforward.pipeline import run_wfo_batch

        ran: list[int] = []
        batches = segment_batches(cfg, run.segments, segments)
        bar = tqdm(total=len(segments), desc="segments", disable=not progress, leave=True)
        for batch, todo in batches:
            bar.set_postfix(segment=",".join(str(s.index) for s in todo))
            run_wfo_batch(cfg, run, batch, rd, progress=progress, resume=resume, hooks=hooks)
            ran += [s.index for s in todo]
            bar.update(len(todo))
        bar.close()
        return ran

    def submit_batch(self, cfg: Config, market: pd.DataFrame, segments: list[Segment],
                     overrides: list[list[str]], population: int, workdir: Path) -> Any:
        return (cfg, market, segments, overrides, population, Path(workdir))

    def result(self, handle: Any, what: str) -> BatchOutcome:
        from cryptorl_jax.walkforward.tune import train_trials

        cfg, market, segments, overrides, population, workdir = handle
        progress = cfg.output.progress if self.progress is None else self.progress
        return train_trials(cfg, market, segments, overrides, population, workdir, progress,
                            keep_dir=self.keep_dirs)
