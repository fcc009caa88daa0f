"""Rotating orbax checkpoints of the training state plus a small JSON of host-side progress.

Each saved step holds a sealed manifest (`SUMS`: the size and sha256 of each of its files,
`core.integrity`): orbax reads a flipped bit in an array back as a wrong number without a
word, so `restore_latest_good` checks a step against its manifest before restoring it, and
sets a damaged step aside (to <directory>.damaged-<time>/<step>) to fall back to the one
before it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from cryptorl_jax.core.integrity import (
    FILES,
    manifest,
    manifest_problem,
    read_record,
    seal,
    seal_problem,
)
from cryptorl_jax.core.io import write_json

log = logging.getLogger("cryptorl_jax.training")

SUMS = "sha256.json"  # in each step's folder, written once orbax has finished the step


class Checkpointer:
    """Keep the last `keep` checkpoints of a pytree in `directory`; saves are atomic (orbax)."""

    def __init__(self, directory: str | Path, keep: int = 1):
        self.directory = Path(directory).resolve()
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                     enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save `state` (arrays) and `meta` (JSON-able host values) as checkpoint `step`, then
        its manifest (a step without one, from before the manifests or from a crash between
        the two writes, is checked by loading it)."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
        folder = self.directory / str(step)
        write_json(folder / SUMS, seal({"step": step}, manifest(folder, skip=(SUMS,))))

    def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
        """Restore checkpoint `step` into the structure, shapes, dtypes and shardings of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def damage(self, step: int) -> str | None:
        """None when step's files match its manifest (or it has none); else what is wrong."""
        folder = self.directory / str(step)
        if not (folder / SUMS).exists():
            return None
        record, problem = read_record(folder / SUMS)
        if problem is None:
            problem = seal_problem(record)
        if problem is not None:
            return f"{folder / SUMS}: {problem}"
        return manifest_problem(folder, record[FILES])

    def restore_latest_good(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest step that is whole, or None when none is left.

        A step whose files do not match its manifest, or one without a manifest that fails to
        load, is moved aside (never deleted) with a warning naming the file, and the step
        before it is tried (train.keep_checkpoints > 1 keeps one). A step that matches its
        manifest is restored as it is: an error then is not damage, and is raised."""
        for step in sorted(self.all_steps(), reverse=True):
            problem = self.damage(step)
            if problem is None:
                verified = (self.directory / str(step) / SUMS).exists()
                try:
                    state, meta = self.restore(step, like)
                    int(meta["chunk"])
                    return step, state, meta
                # orbax, tensorstore and json raise many kinds of error on a damaged file
                except Exception as exc:
                    if verified:
                        raise
                    problem = (f"{self.directory / str(step)} does not load "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})")
            aside = self._set_aside(step)
            log.warning("training checkpoint %d is damaged: %s; moved aside to %s", step,
                        problem, aside)
        return None

    def _set_aside(self, step: int) -> Path:
        self._manager.close()
        aside = self.directory.with_name(
            f"{self.directory.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}") / str(step)
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.directory / str(step), aside)
        self._manager = ocp.CheckpointManager(self.directory, options=self._options)
        return aside

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
