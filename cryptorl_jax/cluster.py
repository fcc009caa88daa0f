"""The drivers' batches as Ray tasks (`--executor ray`): `RayExecutor`.

A walk-forward batch of segments and a tuning population batch are independent jobs, so Ray
core tasks run them. `RayExecutor` follows the executor interface (walkforward.executor): it
runs the callable it is given and knows nothing of what it computes. Each task asks for
`cpus_per_task` CPUs and `gpus_per_task` GPUs (one task per GPU of a host by default), Ray
places it on a host of the cluster (or of the local instance it starts), retries it up to
`max_retries` times when its worker dies, and ships its return value back to the driver.

- Walk-forward (walkforward.driver): the driver puts the run's data in Ray's object store once;
  each task runs a batch of segments into a scratch directory of its worker and returns the
  segments' files as archives, which the driver installs into the run directory
  (`walkforward.writer.install_segment`, DONE last). No shared filesystem is needed. With
  `shared_fs=True` the tasks write into the run directory themselves (it must be the same path
  on every host), and resume an interrupted segment from its checkpoint there.
- Tuning (tuning.driver): the driver holds the Optuna study; each population batch is a task
  (in a scratch directory of its worker), and the driver tells Optuna the batches' results in
  the order it asked for them.

A task that raises stops the run with `ClusterError` naming the segment (or batch) and the
worker's error; the segments already installed stay, so `--resume` continues. Ray's usage
statistics are turned off (`RAY_USAGE_STATS_ENABLED=0`) unless the environment sets them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger("cryptorl_jax.cluster")

INSTALL_HINT = 'pip install -e ".[cluster]"'
# core.extras.missing_text("ray", "--executor ray"), spelled out: this module imports nothing
# from cryptorl_jax (tests/cli/test_extras.py checks that the two agree)
MISSING_RAY = ("ray is not installed (--executor ray needs it; the 'cluster' extra): "
               f"{INSTALL_HINT} in a checkout, or pip install \"cryptorl_jax[cluster]\"")
# forwarded to the workers when the driver's environment sets them
FORWARD_ENV = ("JAX_PLATFORMS", "XLA_FLAGS", "JAX_ENABLE_X64", "RAY_USAGE_STATS_ENABLED",
               "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")


class ClusterError(RuntimeError):
    """Ray is missing, the cluster does not answer, or a task failed for good."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(MISSING_RAY) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of 'host:port' or 'ray://host:port'; None for 'auto' / 'local'."""
    addr = address.removeprefix("ray://")
    if addr in ("auto", "local") or ":" not in addr:
        return None
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"--address {address!r}: expected HOST:PORT (the head's GCS port, "
                           "6379 by default) or ray://HOST:PORT") from None


def probe(address: str, timeout_s: float) -> None:
    """ClusterError within timeout_s if nothing listens at the address's host:port."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at --address {address} (a TCP connection to "
            f"{hp[0]}:{hp[1]} failed within {timeout_s:g} s: {exc}); start the head there with "
            "`ray start --head`, or leave --address out to run a local Ray instance") from None


def _runtime_env() -> dict[str, Any]:
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    return {"env_vars": env} if env else {}


class RayExecutor:
    """Each submitted call a Ray task; a context manager that connects to the cluster at
    `address` (or starts a local instance) and disconnects (shuts a local one down) on exit.
    `shared_fs`: the calls may write into this machine's run directory (the same path on
    every host)."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, *, gpus_per_task: float | None = None,
                 cpus_per_task: float = 1.0, max_retries: int = 2, shared_fs: bool = False,
                 num_cpus: int | None = None, connect_timeout_s: float = 10.0,
                 max_in_flight: int | None = None):
        if max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0, got {max_retries}")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ValueError(f"--gpus-per-task must be >= 0, got {gpus_per_task}")
        self.address = address
        self.gpus_per_task = gpus_per_task
        self.cpus_per_task = cpus_per_task
        self.max_retries = max_retries
        self.shared_fs = shared_fs
        self.num_cpus = num_cpus
        self.connect_timeout_s = connect_timeout_s
        self.max_in_flight = max_in_flight
        self._ray: Any = None
        self._owned = False
        self._remotes: dict[Any, Any] = {}

    # -- connection -------------------------------------------------------------------------

    def __enter__(self) -> RayExecutor:
        ray = require_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if ray.is_initialized():
            self._ray, self._owned = ray, False
            return self
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "runtime_env": _runtime_env()}
        if self.address:
            probe(self.address, self.connect_timeout_s)
            try:
                ray.init(address=self.address, **kwargs)
            except Exception as exc:
                raise ClusterError(f"cannot join the Ray cluster at --address {self.address}: "
                                   f"{type(exc).__name__}: {exc}") from None
        else:  # a local instance, on the loopback interface only
            ray.init(num_cpus=self.num_cpus, _node_ip_address="127.0.0.1", **kwargs)
        self._ray, self._owned = ray, True
        # the driver only prepares data and writes reports: if its JAX ever starts a GPU
        # backend, it must not reserve the memory the tasks on this host's GPUs need (set after
        # ray.init, so the local workers do not inherit it)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        res = ray.cluster_resources()
        log.info("ray: %s cluster, %g CPUs, %g GPUs, %d node(s)",
                 "joined" if self.address else "local", res.get("CPU", 0), res.get("GPU", 0),
                 len(ray.nodes()))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned and self._ray is not None:
            self._ray.shutdown()
        self._ray = None
        self._remotes = {}

    def _gpus(self) -> float:
        if self.gpus_per_task is not None:
            return float(self.gpus_per_task)
        return 1.0 if self._ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def _remote(self, fn: Any) -> Any:
        """fn as a Ray remote function with this executor's resources (made once per fn)."""
        if fn not in self._remotes:
            self._remotes[fn] = self._ray.remote(
                num_cpus=self.cpus_per_task, num_gpus=self._gpus(),
                max_retries=self.max_retries, retry_exceptions=False)(fn)
        return self._remotes[fn]

    @property
    def slots(self) -> int:
        """How many tasks the cluster runs at once (the batches a driver keeps in flight)."""
        if self.max_in_flight is not None:
            return max(1, self.max_in_flight)
        res = self._ray.cluster_resources()
        gpus = self._gpus()
        n = res.get("GPU", 0) / gpus if gpus > 0 else res.get("CPU", 1) / self.cpus_per_task
        return max(1, int(n))

    def _get(self, ref: Any, what: str) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise ClusterError(f"{what} failed on the cluster: {type(cause).__name__}: "
                               f"{cause}") from None
        except ray.exceptions.RayError as exc:  # the worker died more than max_retries times
            raise ClusterError(f"{what} failed on the cluster after {self.max_retries} "
                               f"retries: {type(exc).__name__}: {exc}") from None

    # -- calls ------------------------------------------------------------------------------

    def put(self, value: Any) -> Any:
        """`value` in the object store once; a task given the reference receives the value."""
        return self._ray.put(value)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) as a Ray task; returns its object reference."""
        return self._remote(fn).remote(*args, **kwargs)

    def wait(self, handles: Sequence[Any]) -> Any:
        ready, _ = self._ray.wait(list(handles), num_returns=1)
        return ready[0]

    def result(self, handle: Any, what: str) -> Any:
        return self._get(handle, what)

    def cancel(self, handles: Sequence[Any]) -> None:
        for ref in handles:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)


@contextlib.contextmanager
def maybe_executor(executor: str, **kwargs: Any) -> Iterator[RayExecutor | None]:
    """`--executor local` gives None (the in-process loop); `ray` a connected RayExecutor."""
    if executor == "local":
        yield None
        return
    if executor != "ray":
        raise ClusterError(f"--executor must be 'local' or 'ray', got {executor!r}")
    with RayExecutor(**kwargs) as ex:
        yield ex
