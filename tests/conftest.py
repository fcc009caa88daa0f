"""Shared test setup: CPU only, quiet JAX, no network."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # a unix socket path
        return True
    host = address[0] if isinstance(address, tuple) and address else None
    return isinstance(host, str) and (host in LOOPBACK or host.startswith("127."))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never touch the network: a connection to anything but the loopback interface (a
    local Ray instance) fails loudly."""
    connect = socket.socket.connect
    create_connection = socket.create_connection

    def guard_connect(self, address, *args, **kwargs):
        if not _is_loopback(address):
            raise RuntimeError(f"tests must not open network connections ({address!r})")
        return connect(self, address, *args, **kwargs)

    def guard_create(address, *args, **kwargs):
        if not _is_loopback(address):
            raise RuntimeError(f"tests must not open network connections ({address!r})")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard_connect)
    monkeypatch.setattr(socket, "create_connection", guard_create)
    yield


@pytest.fixture(scope="session", autouse=True)
def _user_cache(tmp_path_factory):
    """The market cache (data.cache_dir: auto) in a folder of this test session, not the user's
    ~/.cache: XDG_CACHE_HOME points there for the tests and their subprocesses."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished segment of the tiny walk-forward config on a synthetic market, run through
    the public `cryptorl_jax.run_walkforward` (one session-wide run shared by the report's and
    the public API's tests), with the data its summary.md was rendered from:
    (cfg, workdir, ReportData, Run)."""
    from cryptorl_jax import load_config, run_walkforward
    from cryptorl_jax.market.synthetic import make_market
    from cryptorl_jax.report import summary, write
    from tests.walkforward.test_driver import TINY_WFO

    cfg = load_config(None, [*TINY_WFO, "wfo.max_segments=1", "run_name=rep"])
    out = tmp_path_factory.mktemp("report")
    seen = []
    render = summary.render_summary
    mp = pytest.MonkeyPatch()
    mp.setattr(write, "render_summary", lambda d: seen.append(d) or render(d))
    try:
        run = run_walkforward(cfg, out, market=make_market(1100, seed=5))
    finally:
        mp.undo()
    return cfg, out / "rep", seen[-1], run


@pytest.fixture(scope="session")
def tiny_planted_run(tmp_path_factory, repo_root):
    """One finished tiny walk-forward run (one segment, two seeds) on a planted-trend market
    read from files (~20 s): (run_dir, data_dir, market, the OOS hours). Tests that write into
    the run (a paper book, a report) work on a copy of it or only add their own files."""
    import pandas as pd

    from cryptorl_jax.config import load_config, with_overrides
    from cryptorl_jax.market import load_market, planted
    from cryptorl_jax.walkforward import driver
    from tests.walkforward.test_driver import TINY_WFO

    base = tmp_path_factory.mktemp("planted-run")
    data = base / "data"
    planted.write_planted_files(data, "trend", 4.0, 0, template_dir=repo_root / "data",
                                start="2023-12-01", end="2024-02-20")
    cfg = load_config(None, [*TINY_WFO, "run_name=paper", "wfo.max_segments=1",
                             f"data.data_dir={data}", "data.cache_dir=null",
                             "output.plots=false"])
    run_dir = base / "run"
    driver.run(cfg, run_dir)
    market = load_market(with_overrides(cfg, ["data.end=null"]).data)
    test = pd.read_parquet(run_dir / "segment_0" / "oos.parquet").index
    return run_dir, data, market, test
