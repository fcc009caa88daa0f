"""Test hooks that interrupt a run the way a kill would (production code passes none).

One object carries them through the walk-forward driver, the segment runner and `train`, so a
test can stop a run at a stage, kill a segment's training after a chunk (its checkpoint is on
disk), or cut a bare `train` call short, and then check that resuming gives the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Hooks:
    # (segment, stage) -> True: raise KeyboardInterrupt at the start of that stage
    # (stages: fit, encoder, train, backtest, report)
    stop_at: Callable[[int, str], bool] | None = None
    # (segment, chunk): that segment's training stops after `chunk` chunks, then
    # KeyboardInterrupt (as a kill right after the checkpoint)
    kill_at: tuple[int, int] | None = None
    # train(): end the loop after this many chunks in all, as a kill would (no exception)
    stop_after_chunk: int | None = None
    # (segment, stage, marker file): the process dies (os._exit) at the start of that stage,
    # once: the first process to get there writes the marker, a retry finds it and goes on
    # (a worker killed mid-segment)
    crash_once: tuple[int, str, str] | None = None

    def stage(self, segment: int, name: str) -> None:
        if self.stop_at is not None and self.stop_at(segment, name):
            raise KeyboardInterrupt(f"stopped at segment {segment}, stage {name}")
        if self.crash_once is not None and self.crash_once[:2] == (segment, name):
            marker = Path(self.crash_once[2])
            if not marker.exists():
                marker.write_text(f"{os.getpid()}\n")
                os._exit(17)

    def for_segment(self, segment: int) -> Hooks:
        """The hooks `train` gets inside segment `segment` (kill_at becomes its chunk limit)."""
        if self.kill_at is not None and self.kill_at[0] == segment:
            return replace(self, stop_after_chunk=self.kill_at[1])
        return self

    def killed(self, segment: int) -> bool:
        """Whether kill_at names this segment (its training was cut: raise after it)."""
        return self.kill_at is not None and self.kill_at[0] == segment


NO_HOOKS = Hooks()
