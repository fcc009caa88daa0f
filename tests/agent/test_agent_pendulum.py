"""Slow: TQC solves gymnax Pendulum-v1 with rl-zoo's settings (median of 3 seeds >= -150)."""

from __future__ import annotations

import importlib.util
import statistics
import sys

import pytest


def _bench_module(repo_root):
    path = repo_root / "scripts" / "benches" / "pendulum.py"
    spec = importlib.util.spec_from_file_location("pendulum_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pendulum_quality_three_seeds(repo_root):
    """rl-zoo's TQC reaches -151 +- 88 on Pendulum after 20k steps; we ask for median >= -150.

    The criterion is checked on a 100-episode deterministic evaluation per seed: the bench's
    10-episode mean (also computed here) has a sampling std of about 25 per seed (episode
    returns spread ~80 with the random start angle), so on 10 episodes the same agents pass or
    fail by the luck of the reset draws.
    """
    pytest.importorskip("gymnax")
    bench = _bench_module(repo_root)
    out = bench.run_pendulum([0, 1, 2], bench.zoo_config(), steps=20_000, chunk=1990,
                             eval_episodes=10, vmap_seeds=True, extra_eval_episodes=100,
                             log=None)
    assert len(out["returns"]) == 3 and len(out["extra_returns"]) == 3
    print("10-episode returns", out["returns"], "100-episode returns", out["extra_returns"])
    assert statistics.median(out["extra_returns"]) >= -150.0, out
    assert statistics.median(out["returns"]) >= -200.0, out  # solved, even on 10 episodes


def test_pendulum_runner_smoke(repo_root):
    """A few hundred steps with a tiny net: the jitted loop runs, stores and learns."""
    pytest.importorskip("gymnax")
    import jax

    bench = _bench_module(repo_root)
    cfg = bench.zoo_config(net_arch=(8,), batch_size=16, buffer_size=300)
    runner = bench.make_pendulum_runner(cfg, chunk=50, eval_episodes=2)
    carry = jax.jit(runner["warmup"])(runner["init"](jax.random.key(0)))
    assert int(carry.buffer.size) == cfg.learning_starts
    carry, metrics = jax.jit(runner["train_chunk"])(carry)
    assert int(carry.buffer.size) == cfg.learning_starts + 50
    assert int(carry.agent.step) == 50
    assert all(bool(jax.numpy.isfinite(v)) for v in metrics.values())
    ret = float(jax.jit(runner["evaluate"])(carry.agent, jax.random.key(1)))
    assert -2000.0 < ret <= 0.0
