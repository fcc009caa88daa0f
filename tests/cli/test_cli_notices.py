"""The data-window notices (bars dropped to the common window, hours forward-filled, stale
context rows carried forward) are logged once per asset per process, and only with -v (issue 42).

`cryptorl wfo` runs in process with the walk-forward replaced by what it repeats: loading the
data and building the features, twice, as segments and tuning trials do. The data: four months
of the bundled files, around DXY's longest gap (192 hours older than max_stale_hours)."""

from __future__ import annotations

import gzip
import logging
from types import SimpleNamespace

import pytest

from cryptorl_jax.core import notices

NOTICES = ("dropped", "forward-filled", "older than max_stale_hours", "carried forward")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, repo_root):
    """2024-04-01 .. 2024-08-01 of the bundled BTC, ETH, SPY and DXY files."""
    out = tmp_path_factory.mktemp("data")
    for asset in ("BTC", "ETH", "SPY", "DXY"):
        with gzip.open(repo_root / "data" / f"{asset}_1h.csv.gz", "rt") as f:
            lines = f.read().splitlines()
        keep = [x for x in lines[1:] if "2024-04-01" <= x[:10] < "2024-08-01"]
        with gzip.open(out / f"{asset}_1h.csv.gz", "wt") as f:
            f.write("\n".join([lines[0], *keep]) + "\n")
    return out


@pytest.fixture
def fresh_notices():
    notices.forget()
    yield
    notices.forget()
    notices.set_verbose(False)


def _wfo(repo_root, data_dir, tmp_path, monkeypatch, caplog,
         *extra: str) -> list[logging.LogRecord]:
    from cryptorl_jax.cli import main
    from cryptorl_jax.market import load_market
    from cryptorl_jax.walkforward import driver
    from cryptorl_jax.walkforward.layout import build_run_features

    def twice(cfg, workdir, **kwargs):
        for _ in range(2):
            build_run_features(cfg, load_market(cfg.data))
        return SimpleNamespace(segments_run=[], segments_skipped=[], seconds=0.0,
                               report={"segments": []}, workdir=workdir)

    monkeypatch.setattr(driver, "run", twice)
    caplog.clear()
    caplog.set_level(logging.INFO)  # the commands' root level (configure_cli_logging) ...
    caplog.handler.setLevel(logging.NOTSET)  # ... and their handler's (basicConfig)
    argv = ["wfo", "--config", str(repo_root / "configs" / "quick.yaml"), "--out",
            str(tmp_path), "--set", "data.start=2024-05-01", "--set", "data.end=2024-07-15",
            "--set", "data.cache_dir=null", "--set", f"data.data_dir={data_dir}", *extra]
    assert main(argv) == 0
    return [r for r in caplog.records if r.name.startswith("cryptorl_jax")
            and any(n in r.getMessage() for n in NOTICES)]


def test_notices_appear_once_per_asset_and_only_with_verbose(fresh_notices, repo_root, data_dir,
                                                             tmp_path, monkeypatch, caplog):
    args = (repo_root, data_dir, tmp_path, monkeypatch, caplog)
    assert _wfo(*args) == []
    notices.forget()
    shown = _wfo(*args, "-v")
    messages = [r.getMessage() for r in shown]
    assert all(r.levelno == logging.DEBUG for r in shown)
    dropped = [m for m in messages if "dropped" in m]
    assert {m.split(":")[0].rsplit("/", 1)[-1] for m in dropped} == {
        "BTC_1h.csv.gz", "ETH_1h.csv.gz", "SPY_1h.csv.gz", "DXY_1h.csv.gz"}
    assert [m for m in messages if "older than max_stale_hours" in m] == [
        f"{data_dir / 'DXY_1h.csv.gz'}: 192 rows older than max_stale_hours=96 are NaN"]
    assert [m for m in messages if "carried forward" in m] == [
        "features: DXY has 192 stale/missing rows carried forward as flat bars"]
    assert len(messages) == len(set(messages)) == 6, messages  # loaded twice, said once
    # a later command in the same process without -v is quiet again
    notices.forget()
    assert _wfo(*args) == []
