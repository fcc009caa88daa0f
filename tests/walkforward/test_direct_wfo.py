"""A tiny walk-forward with agent.kind: direct runs end to end (two segments trained as the
members of one step, two seeds each, a random encoder's embeddings), deterministically,
and its saved agents act again through `cryptorl evaluate`. ~45 s on 2 cores, mostly
compilation, so slow; the default suite checks the trainer, the rollout and the agents'
save / load of a direct learner in tests/training/test_direct.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cryptorl_jax.config import load_config
from cryptorl_jax.market.synthetic import make_market
from cryptorl_jax.walkforward import driver
from cryptorl_jax.walkforward.evaluate import evaluate_window
from tests.walkforward.test_driver import TINY_WFO

pytestmark = pytest.mark.slow

DIRECT_WFO = [*TINY_WFO, "run_name=direct", "agent.kind=direct", "agent.direct.horizon=32",
              "train.total_env_steps=4096", "wfo.max_segments=2", "wfo.segments_per_batch=2",
              "output.plots=false", "encoder.mode=random"]


@pytest.fixture(scope="module")
def market():
    return make_market(1100, seed=5)


@pytest.fixture(scope="module")
def direct_run(market, tmp_path_factory):
    cfg = load_config(None, DIRECT_WFO)
    out = tmp_path_factory.mktemp("direct") / "direct"
    driver.run(cfg, out, market=market)
    return cfg, out


def test_a_direct_walkforward_runs_end_to_end(direct_run):
    cfg, out = direct_run
    table = pd.read_csv(out / "metrics.csv", dtype={"segment": str})
    assert set(table["segment"]) >= {"0", "1", "all"}
    assert np.isfinite(table["sharpe"]).all()
    done = json.loads((out / "segment_1" / "DONE").read_text())
    assert done["env_steps"] == 4096  # 2 chunks x 16 updates x 4 episodes x 32 hours
    history = json.loads((out / "segment_0" / "train_history.json").read_text())
    assert [h["updates"] for h in history] == [16.0, 16.0]
    assert {"objective", "grad_norm", "pnl", "turnover"} <= set(history[-1])
    oos = pd.read_parquet(out / "segment_0" / "oos.parquet")
    assert len(oos) == cfg.wfo.hours_per_month and np.isfinite(oos["strategy"]).all()
    # the seeds trade: their actions are the deterministic policies' own
    assert oos["seed_0"].abs().sum() > 0 and not oos["seed_0"].equals(oos["seed_1"])


def test_same_seed_gives_the_same_numbers(direct_run, market, tmp_path):
    cfg, out = direct_run
    again = tmp_path / "direct"
    driver.run(cfg, again, market=market)
    assert (again / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    for k in (0, 1):
        a = pd.read_parquet(out / f"segment_{k}" / "oos.parquet")
        b = pd.read_parquet(again / f"segment_{k}" / "oos.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_saved_direct_agents_act_again(direct_run, market, tmp_path):
    _, out = direct_run
    seg = pd.read_parquet(out / "segment_1" / "oos.parquet")
    res = evaluate_window(out, 1, str(seg.index[0]), str(seg.index[-1]), market=market,
                          out_dir=tmp_path / "eval", tearsheet=False)
    for col in ("strategy", "seed_0", "seed_1"):
        np.testing.assert_allclose(res.oos[col].to_numpy(), seg[col].to_numpy(), atol=1e-7)
