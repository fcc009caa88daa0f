"""`cryptorl wfo` in a process that SIGKILLs itself at a chosen point (tests/faults/test_kills.py).

    python -m tests.faults.killed_wfo POINT SEGMENT MARKER -- WFO-ARGS...

runs `cryptorl wfo WFO-ARGS`, which at POINT of segment SEGMENT writes where it is into the
file MARKER and sends itself SIGKILL (no exception, no `finally`, no atexit: what a kill -9 or
the OOM killer does). POINT is one of

  encoder    after the segment's features/HMM fit, as its encoder stage starts
  mae        inside MAE pre-training, as the second epoch starts
  chunk      between training chunks, right after chunk 2's checkpoint was saved
  checkpoint inside the save of chunk 3's checkpoint: orbax has written its temporary
             directory and dies before renaming it to checkpoints/3
  backtest   inside the backtest, after the OOS backtest and before the in-sample one
  files      while the segment's files are written: after oos.parquet, before DONE
  report     in the run's report, after every segment is DONE: metrics.csv's temp file is
             written and fsynced, the process dies before renaming it into place (SEGMENT is
             ignored)

The stage boundaries come through the walk-forward driver's test hooks (core.hooks: `stop_at`
is called at the start of every stage); the points inside a stage wrap the function named
above. Nothing here changes what the run computes.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

POINTS = ("encoder", "mae", "chunk", "checkpoint", "backtest", "files", "report")


def _die(marker: Path, where: str) -> None:
    marker.write_text(f"{where} (pid {os.getpid()})\n")
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, segment: int, marker: Path) -> None:
    """Arm the kill at `point` of `segment` (wrapping driver.run to pass the hooks)."""
    from cryptorl_jax.core.hooks import Hooks
    from cryptorl_jax.walkforward import driver

    armed: dict[str, bool] = {}
    arm_at = {"encoder": "encoder", "mae": "encoder", "chunk": "train", "checkpoint": "train",
              "backtest": "backtest", "files": "backtest"}.get(point)

    def stage(seg: int, name: str) -> bool:
        if (seg, name) == (segment, arm_at):
            if point == "encoder":
                _die(marker, f"segment {segment}: fitted, its encoder stage starting")
            armed[point] = True
        return False  # never the in-process KeyboardInterrupt

    driver.run = functools.partial(driver.run, hooks=Hooks(stop_at=stage))

    if point == "mae":
        from cryptorl_jax.encoder import pretrain

        epochs = []
        train_epoch = pretrain._train_epoch

        def epoch(*args, **kwargs):
            if armed.get(point):
                epochs.append(1)
                if len(epochs) == 2:
                    _die(marker, f"segment {segment}: MAE pre-training, epoch 2 starting")
            return train_epoch(*args, **kwargs)

        pretrain._train_epoch = epoch
    elif point == "chunk":
        from cryptorl_jax.training.checkpoint import Checkpointer

        save = Checkpointer.save

        def saved(self, step, state, meta):
            save(self, step, state, meta)
            if armed.get(point) and step == 2:
                _die(marker, f"segment {segment}: training, after chunk 2's checkpoint")

        Checkpointer.save = saved
    elif point == "checkpoint":
        from orbax.checkpoint._src.path.atomicity import AtomicRenameTemporaryPath

        finalize = AtomicRenameTemporaryPath.finalize

        async def renamed(self):
            final = Path(self.get_final())
            if armed.get(point) and (final.parent.name, final.name) == ("checkpoints", "3"):
                _die(marker, f"segment {segment}: training, chunk 3's checkpoint written, "
                     "not renamed")
            await finalize(self)

        AtomicRenameTemporaryPath.finalize = renamed
    elif point == "backtest":
        from cryptorl_jax.walkforward import runner

        backtest_rows = runner.backtest_rows

        def backtest(*args, **kwargs):
            out = backtest_rows(*args, **kwargs)
            if armed.get(point):
                _die(marker, f"segment {segment}: backtest, OOS done, in-sample not")
            return out

        runner.backtest_rows = backtest
    elif point == "files":
        from cryptorl_jax.walkforward import writer

        write_parquet = writer.write_parquet

        def written(path, frame):
            write_parquet(path, frame)
            if armed.get(point) and Path(path).name == "oos.parquet":
                _die(marker, f"segment {segment}: files, oos.parquet written, no DONE")

        writer.write_parquet = written
    elif point == "report":
        replace = os.replace

        def renamed(src, dst, *args, **kwargs):
            if Path(dst).name == "metrics.csv":
                _die(marker, f"report: {Path(src).name} written, not renamed to metrics.csv")
            return replace(src, dst, *args, **kwargs)

        os.replace = renamed


def main(argv: list[str]) -> int:
    point, segment, marker, sep, *wfo_args = argv
    if point not in POINTS or sep != "--":
        raise SystemExit(f"usage: POINT SEGMENT MARKER -- WFO-ARGS (POINT one of {POINTS})")
    install(point, int(segment), Path(marker))
    from cryptorl_jax.cli import main as cli

    return cli(["wfo", *wfo_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
