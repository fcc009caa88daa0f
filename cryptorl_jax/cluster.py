"""Walk-forward segments and tuning batches as Ray tasks (`--executor ray`).

A segment and a population batch are independent jobs, so Ray core tasks run them: each task
asks for `cpus_per_task` CPUs and `gpus_per_task` GPUs (one task per GPU of a host by default),
Ray places it on a host of the cluster (or of the local instance it starts), retries it up to
`max_retries` times when its worker dies, and ships its result back to the driver.

- Walk-forward (`RayExecutor.run_segments`): the driver builds the run's data once and puts it
  in Ray's object store; a task runs the shared segment runner (`pipeline.run_wfo_segment`) into
  its own temporary directory, packs what it wrote (the segment folder without its training
  checkpoints, its TensorBoard folder and its regime plot) into a tar.gz and returns it; the
  driver unpacks it into the run directory through a staging folder renamed into place, with
  `DONE` written last (`install_segment`). No shared filesystem is needed. With
  `shared_fs=True` the tasks write into the run directory themselves (it must be the same path
  on every host), and resume an interrupted segment from its checkpoint there.
- Tuning (`RayExecutor.submit_batch` / `result`): the driver holds the Optuna study; each
  population batch (`tune.train_trials`) is a task, and the driver tells Optuna the batches'
  results in the order it asked for them.

A task that raises stops the run with `ClusterError` naming the segment (or batch) and the
worker's error; the segments already installed stay, so `--resume` continues. Ray's usage
statistics are turned off (`RAY_USAGE_STATS_ENABLED=0`) unless the environment sets them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptorl_jax.io import write_atomic
from cryptorl_jax.layout import DONE, RunDir

log = logging.getLogger("cryptorl_jax.cluster")

INSTALL_HINT = 'pip install -e ".[cluster]"'
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
        raise ClusterError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT} "
                           "(the 'cluster' extra)") from None
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


@dataclass
class SegmentTaskResult:
    index: int
    done: dict[str, Any]
    archive: bytes | None  # None with a shared filesystem (the task wrote the run dir)
    host: str


def pack_segment(rd: RunDir, index: int) -> bytes:
    """tar.gz of what a segment wrote: segment_<k>/ (without train/ checkpoints),
    tensorboard/segment_<k>/ and segment_<k>_regimes.png."""
    seg = rd.segment(index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(seg.path, arcname=seg.path.name,
                filter=lambda ti: None if ti.name.startswith(f"{seg.path.name}/train")
                else ti)
        tb = rd.tensorboard_segment(index)
        if tb.is_dir():
            tar.add(tb, arcname=f"tensorboard/{seg.path.name}")
        png = rd.regimes_png(index)
        if png.is_file():
            tar.add(png, arcname=png.name)
    return buf.getvalue()


def install_segment(rd: RunDir, index: int, archive: bytes) -> None:
    """Unpack a segment's archive into the run directory: everything through a staging folder
    renamed into place, the DONE marker last (a crash midway leaves an unfinished segment that
    --resume runs again, never a half-written finished one)."""
    name = rd.segment(index).path.name
    staging = rd.path / f".incoming_{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        done_file = staging / name / DONE
        if not done_file.is_file():
            raise ClusterError(f"segment {index}: the worker's archive has no {name}/{DONE}")
        done = done_file.read_bytes()
        done_file.unlink()
        target = rd.segment(index).path
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / name, target)
        tb_src = staging / "tensorboard" / name
        if tb_src.is_dir():
            tb_dst = rd.tensorboard_segment(index)
            tb_dst.parent.mkdir(parents=True, exist_ok=True)
            if tb_dst.exists():
                shutil.rmtree(tb_dst)
            os.replace(tb_src, tb_dst)
        png = staging / rd.regimes_png(index).name
        if png.is_file():
            os.replace(png, rd.regimes_png(index))
        write_atomic(target / DONE, done)  # last: the segment is finished
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _segment_task(cfg: Any, run: Any, seg: Any, shared_dir: str | None, resume: bool,
                  hooks: Any) -> SegmentTaskResult:
    """Runs in a Ray worker: one walk-forward segment through the shared segment runner."""
    import platform

    from cryptorl_jax.walkforward import pipeline

    host = platform.node()
    if shared_dir is not None:
        rd = RunDir(shared_dir)
        done = pipeline.run_wfo_segment(cfg, run, seg, rd, progress=False, resume=resume,
                                        hooks=hooks)
        return SegmentTaskResult(seg.index, done, None, host)
    tmp = Path(tempfile.mkdtemp(prefix=f"cryptorl-segment{seg.index}-"))
    try:
        rd = RunDir(tmp)
        done = pipeline.run_wfo_segment(cfg, run, seg, rd, progress=False, resume=False,
                                        hooks=hooks)
        return SegmentTaskResult(seg.index, done, pack_segment(rd, seg.index), host)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _segments_task(cfg: Any, run: Any, segs: list[Any], pending: list[int],
                   shared_dir: str | None, resume: bool, hooks: Any) -> list[SegmentTaskResult]:
    """Runs in a Ray worker: a batch of walk-forward segments trained in one step
    (wfo.segments_per_batch, `pipeline.run_wfo_batch`); one result per pending segment."""
    import platform

    from cryptorl_jax.walkforward import pipeline

    host = platform.node()
    if shared_dir is not None:
        rd = RunDir(shared_dir)
        dones = pipeline.run_wfo_batch(cfg, run, segs, rd, progress=False, resume=resume,
                                       hooks=hooks)
        return [SegmentTaskResult(d["segment"], d, None, host) for d in dones]
    tmp = Path(tempfile.mkdtemp(prefix=f"cryptorl-batch{segs[0].index}-"))
    try:
        rd = RunDir(tmp)
        dones = pipeline.run_wfo_batch(cfg, run, segs, rd, progress=False, resume=False,
                                       hooks=hooks)
        return [SegmentTaskResult(d["segment"], d, pack_segment(rd, d["segment"]), host)
                for d in dones if d["segment"] in pending]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _batch_task(cfg: Any, market: Any, segments: Any, overrides: Any, population: int) -> Any:
    """Runs in a Ray worker: one tuning population batch (tune.train_trials), in a scratch
    directory of the worker's machine."""
    from cryptorl_jax.walkforward import tune

    tmp = Path(tempfile.mkdtemp(prefix="cryptorl-batch-"))
    return tune.train_trials(cfg, market, segments, overrides, population, tmp, False)


class RayExecutor:
    """Ray tasks for segments and tuning batches; a context manager that connects to the
    cluster at `address` (or starts a local instance) and disconnects (shuts a local one
    down) on exit."""

    name = "ray"

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
        self._market_ref: Any = None
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
        self._market_ref = None
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
        """How many tasks the cluster runs at once (the tuning batches kept in flight)."""
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

    # -- walk-forward segments --------------------------------------------------------------

    def run_segments(self, cfg: Any, run: Any, segments: list[Any], rd: RunDir, *,
                     progress: bool, resume: bool, hooks: Any) -> list[int]:
        """One task per segment, or per batch of wfo.segments_per_batch segments (trained in
        one step on one worker); each result is installed as it arrives. Returns the segments
        run, in the order they finished."""
        if not segments:
            return []
        from cryptorl_jax.walkforward.executor import segment_batches

        ray = self._ray
        run_ref = ray.put(run)
        shared = str(rd.path.absolute()) if self.shared_fs else None
        batches = segment_batches(cfg, run.segments, segments)
        if all(len(batch) == 1 for batch, _ in batches):
            task = self._remote(_segment_task)
            pending = {task.remote(cfg, run_ref, seg, shared, resume, hooks): [seg]
                       for seg in segments}
        else:
            task = self._remote(_segments_task)
            pending = {task.remote(cfg, run_ref, batch, [s.index for s in todo], shared,
                                   resume, hooks): todo for batch, todo in batches}
        log.info("ray: %d task(s) for %d segment(s) submitted (%s filesystem)", len(pending),
                 len(segments), "shared" if shared else "no shared")
        ran: list[int] = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                segs = pending.pop(ready[0])
                what = ", ".join(str(s.index) for s in segs)
                out = self._get(ready[0], f"segment{'s' if len(segs) > 1 else ''} {what}")
                for res in out if isinstance(out, list) else [out]:
                    if res.archive is not None:
                        install_segment(rd, res.index, res.archive)
                    ran.append(res.index)
                    log.info("ray: segment %d finished on %s (OOS sharpe %.2f)", res.index,
                             res.host, res.done.get("sharpe", float("nan")))
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        return ran

    # -- tuning batches ---------------------------------------------------------------------

    def submit_batch(self, cfg: Any, market: Any, segments: list[Any],
                     overrides: list[list[str]], population: int, workdir: Path) -> Any:
        """`workdir` is not used: the task trains in a scratch directory on its worker."""
        if self._market_ref is None:
            self._market_ref = self._ray.put(market)
        return self._remote(_batch_task).remote(cfg, self._market_ref, segments, overrides,
                                                population)

    def result(self, handle: Any, what: str) -> Any:
        return self._get(handle, what)


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
