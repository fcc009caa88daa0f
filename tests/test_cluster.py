"""Walk-forward segments and tuning batches as Ray tasks, on a local Ray instance (2 CPUs, the
loopback interface only; each test starts and shuts down its own).

Every Ray test compares with the same work done locally in this process: the metrics of a run
(and the trial records of a study) must be identical.
"""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest

from cryptorl_jax.cluster import ClusterError, RayExecutor
from cryptorl_jax.config import load_config
from cryptorl_jax.core.hooks import Hooks
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.tuning.driver import run_study
from cryptorl_jax.walkforward import driver
from cryptorl_jax.walkforward.writer import SegmentArchiveError, install_segment, pack_segment
from tests.tuning import golden
from tests.tuning.test_tune import HYPER_SPACE
from tests.walkforward.test_driver import TINY_WFO

ray = pytest.importorskip("ray")

TWO = [*TINY_WFO, "wfo.max_segments=2", "output.tearsheet=false"]


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TWO)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cfg, market):
    """The reference: the same two segments, one after the other in this process."""
    workdir = tmp_path_factory.mktemp("local") / "tiny"
    driver.run(cfg, workdir, market=market)
    return workdir


@pytest.fixture(scope="module", autouse=True)
def _worker_compile_cache(tmp_path_factory):
    """The workers of every test share a persistent XLA cache (forwarded through the Ray
    runtime env), so each test's fresh workers load the tiny train step instead of compiling
    it again. This process's JAX is already configured and does not use it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    yield
    mp.undo()


def _ray_executor(**kwargs) -> RayExecutor:
    return RayExecutor(**{"num_cpus": 2, "max_retries": 2, **kwargs})


def test_segments_as_ray_tasks_match_the_local_run_without_a_shared_fs(cfg, market, local_run,
                                                                       tmp_path):
    workdir = tmp_path / "ray" / "tiny"
    with _ray_executor() as ex:
        result = driver.run(cfg, workdir, market=market, executor=ex)
    assert not ray.is_initialized()  # the local instance is shut down
    assert sorted(result.segments_run) == [0, 1]
    assert (workdir / "metrics.csv").read_text() == (local_run / "metrics.csv").read_text()
    for k in (0, 1):
        seg = RunDir(workdir).segment(k)
        assert seg.is_done() and seg.oos.is_file() and seg.agents.is_dir()
        # the worker ran in its own temporary directory: the folder came back as an archive,
        # which leaves the training checkpoints behind
        assert not seg.checkpoints.exists()
        assert (workdir / "tensorboard" / f"segment_{k}").is_dir()
        assert (workdir / f"segment_{k}_regimes.png").is_file()
    assert not list(workdir.glob(".incoming_*"))
    assert json.loads((workdir / "run_info.json").read_text())["executor"] == "ray"


def test_shared_fs_tasks_write_the_run_dir_and_resume_skips_finished(cfg, market, local_run,
                                                                      tmp_path):
    workdir = tmp_path / "shared" / "tiny"
    first = load_config(None, [*TWO, "wfo.segments=[0]"])
    driver.run(first, workdir, market=market)  # segment 0 here, as a killed driver left it
    done0 = (workdir / "segment_0" / "DONE").read_text()
    with _ray_executor(shared_fs=True) as ex:
        result = driver.run(cfg, workdir, market=market, executor=ex, resume=True)
    assert result.segments_skipped == [0] and result.segments_run == [1]
    assert (workdir / "segment_0" / "DONE").read_text() == done0
    assert (workdir / "segment_1" / "train").is_dir()  # written in place by the worker
    assert (workdir / "metrics.csv").read_text() == (local_run / "metrics.csv").read_text()


def test_a_worker_killed_mid_segment_is_retried(cfg, market, local_run, tmp_path):
    marker = tmp_path / "killed-once"
    workdir = tmp_path / "retry" / "tiny"
    hooks = Hooks(crash_once=(1, "train", str(marker)))
    with _ray_executor() as ex:
        driver.run(cfg, workdir, market=market, executor=ex, hooks=hooks)
    assert marker.is_file()  # segment 1's first worker died at the start of training
    assert (workdir / "metrics.csv").read_text() == (local_run / "metrics.csv").read_text()


def test_a_segment_that_keeps_failing_names_the_segment(cfg, market, tmp_path):
    bad = market.copy()
    workdir = tmp_path / "fail" / "tiny"

    def boom(segment, stage):
        if segment == 1 and stage == "encoder":
            raise ValueError("poisoned encoder input")
        return False

    with _ray_executor(max_retries=0) as ex, \
            pytest.raises(ClusterError, match=r"segment 1 failed on the cluster: "
                                              r"ValueError: poisoned encoder input"):
        driver.run(cfg, workdir, market=bad, executor=ex, hooks=Hooks(stop_at=boom))
    assert not (workdir / "segment_1" / "DONE").exists()


def test_a_tuning_study_through_ray_logs_the_same_trials(market, tmp_path):
    tcfg = load_config(None, [*TINY_WFO, HYPER_SPACE, "tune.segments=[0]"])
    local = run_study(tcfg, 4, workdir=tmp_path / "local", market=market, progress=False,
                      population=2)
    with _ray_executor() as ex:
        remote = run_study(tcfg, 4, workdir=tmp_path / "ray", market=market,
                           progress=False, population=2, executor=ex)

    def records(path):
        out = []
        for line in path.read_text().splitlines():
            r = json.loads(line)
            for k in ("datetime_start", "datetime_complete", "duration_s"):
                r.pop(k)
            out.append(r)
        return out

    assert records(remote.trial_log) == records(local.trial_log)
    assert len(records(local.trial_log)) == 4
    assert remote.best_config.read_text() == local.best_config.read_text().replace(
        str((tmp_path / "local").absolute()), str((tmp_path / "ray").absolute()))
    assert remote.overfitting == local.overfitting
    golden.check("ray", tmp_path / "ray", tcfg)


# --------------------------------------------------------------------------------------------
# Without a cluster
# --------------------------------------------------------------------------------------------


def test_an_address_that_does_not_answer_fails_within_the_timeout():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match=rf"no Ray cluster answers at --address "
                                           rf"127\.0\.0\.1:{port}"):
        with RayExecutor(address=f"127.0.0.1:{port}", connect_timeout_s=2.0):
            pass
    assert time.perf_counter() - t0 < 30
    assert not ray.is_initialized()


def test_without_ray_the_error_names_the_extra(monkeypatch, capsys, repo_root):
    from cryptorl_jax.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    rc = main(["wfo", "--config", str(repo_root / "configs" / "quick.yaml"), "--executor", "ray",
               "--out", "/nonexistent-never-written"])
    assert rc == 2
    assert 'pip install -e ".[cluster]"' in capsys.readouterr().err


def test_archive_roundtrip_installs_done_last(tmp_path):
    src = RunDir(tmp_path / "src")
    seg = src.segment(3)
    (seg.path / "train").mkdir(parents=True)
    (seg.path / "train" / "ckpt").write_text("big")
    seg.oos.write_bytes(b"frame")
    seg.done.write_text('{"segment": 3}')
    (src.tensorboard / "segment_3").mkdir(parents=True)
    (src.tensorboard / "segment_3" / "events").write_text("tb")
    archive = pack_segment(src, 3)
    dst = RunDir(tmp_path / "dst")
    dst.path.mkdir()
    install_segment(dst, 3, archive)
    out = dst.segment(3)
    assert out.is_done() and out.oos.read_bytes() == b"frame"
    assert not out.checkpoints.exists()  # checkpoints stay on the worker
    assert (dst.tensorboard / "segment_3" / "events").read_text() == "tb"
    assert out.done.stat().st_mtime_ns >= out.oos.stat().st_mtime_ns
    # an archive without DONE is refused and installs nothing
    seg.done.unlink()
    with pytest.raises(SegmentArchiveError, match="no segment_3/DONE"):
        install_segment(RunDir(tmp_path / "dst2"), 3, pack_segment(src, 3))
    assert not (tmp_path / "dst2" / "segment_3").exists()


def test_the_network_guard_allows_only_loopback():
    with pytest.raises(RuntimeError, match="must not open network connections"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def test_a_batch_of_segments_is_one_ray_task(cfg, market, tmp_path):
    """wfo.segments_per_batch through Ray: the batch trains in one task on one worker and
    gives the local batched run's numbers."""
    from cryptorl_jax.config import with_overrides

    batched = with_overrides(cfg, ["wfo.segments_per_batch=2"])
    local = tmp_path / "local" / "tiny"
    driver.run(batched, local, market=market)
    workdir = tmp_path / "ray" / "tiny"
    with _ray_executor() as ex:
        result = driver.run(batched, workdir, market=market, executor=ex)
    assert sorted(result.segments_run) == [0, 1]
    assert (workdir / "metrics.csv").read_text() == (local / "metrics.csv").read_text()
    for k in (0, 1):
        done = json.loads((workdir / f"segment_{k}" / "DONE").read_text())
        assert done["timings"]["train_batch"] == 2
