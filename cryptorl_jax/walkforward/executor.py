"""Where a driver's work runs: the one executor interface (issue 26).

An executor runs callables it is given and knows nothing of what they compute: the
walk-forward driver (walkforward.driver) submits its batches of segments, the tuning driver
(tuning.driver) its population batches of trials, each as a module-level function and its
arguments. `LocalExecutor` runs them in this process, one after the other, when their result
is asked for; `cluster.RayExecutor` runs them as Ray tasks. `cryptorl wfo`, `cryptorl tune` and
`cryptorl power` take either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    """What the walk-forward, tuning and power drivers need from an executor.

    `remote`: the callables run in other processes (they draw no progress bars there);
    `shared_fs`: they see this process's filesystem, so they may write into a run directory
    and keep scratch space under it (otherwise a driver has them work in scratch space of
    their own and return what they wrote).
    """

    name: str
    remote: bool
    shared_fs: bool

    @property
    def slots(self) -> int:
        """How many callables it runs at once (the batches a driver keeps in flight)."""
        ...

    def put(self, value: Any) -> Any:
        """`value` as an argument that many `submit` calls share (sent to the workers once)."""
        ...

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start fn(*args, **kwargs) (fn: a module-level function); returns a handle for
        `result`."""
        ...

    def wait(self, handles: Sequence[Any]) -> Any:
        """One of `handles` whose call has finished (or, in this process, the first)."""
        ...

    def result(self, handle: Any, what: str) -> Any:
        """The call's return value; an error raised by the call is raised here (naming `what`
        where it comes from another process)."""
        ...

    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop the calls not yet finished (best effort; their results are not asked for)."""
        ...


@dataclass(eq=False)
class LocalCall:
    """A `LocalExecutor` handle: the call, made when its result is asked for."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class LocalExecutor:
    """The calls one after the other in this process: a call runs when its result is asked for
    (one slot: a driver submits, asks, and submits the next in turn)."""

    name = "local"
    remote = False
    shared_fs = True

    @property
    def slots(self) -> int:
        return 1

    def put(self, value: Any) -> Any:
        return value

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return LocalCall(fn, args, kwargs)

    def wait(self, handles: Sequence[Any]) -> Any:
        return handles[0]

    def result(self, handle: LocalCall, what: str) -> Any:
        return handle.fn(*handle.args, **handle.kwargs)

    def cancel(self, handles: Sequence[Any]) -> None:
        pass
