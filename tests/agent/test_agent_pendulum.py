"""TQC solves Pendulum-v1 with rl-zoo's settings (slow: median of 3 seeds >= -150), and the
bench evaluates on the peers' start states."""

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
    """The issue's criterion: `bench.py pendulum --seeds 3` gives a median return >= -150.

    Exactly the bench's run (seeds 0, 1, 2 one after another) and its headline evaluation, the
    peers' protocol: 10 deterministic episodes per seed on gymnasium's Pendulum-v1 reset from
    seed + 1000, the start states on which sb3-contrib and sbx scored about -114 (seed 0).
    The 100-episode mean of the same stream, whose sampling noise is ~3x smaller than the
    10-episode mean's (~25), must pass too, so the criterion does not rest on 10 draws.
    """
    pytest.importorskip("gymnax")
    pytest.importorskip("gymnasium")
    bench = _bench_module(repo_root)
    out = bench.run_pendulum([0, 1, 2], bench.zoo_config(), steps=20_000, chunk=1990,
                             eval_episodes=10, vmap_seeds=False, extra_eval_episodes=100,
                             log=None)
    assert len(out["returns"]) == 3 and len(out["extra_returns"]) == 3
    print("10-episode returns", out["returns"], "100-episode returns", out["extra_returns"],
          "gymnax-key 10-episode returns", out["jax_returns"])
    assert statistics.median(out["returns"]) >= -150.0, out
    assert statistics.median(out["extra_returns"]) >= -150.0, out
    assert statistics.median(out["jax_returns"]) >= -200.0, out  # solved on other starts too


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


def test_run_pendulum_vmapped_seeds_evaluates_each_seed_on_its_own_stream(repo_root):
    """--vmap-seeds: each seed's slice of the batched agent goes through the gymnasium
    evaluation; the 10-episode (here 2) and longer (here 3) figures share one stream."""
    pytest.importorskip("gymnax")
    pytest.importorskip("gymnasium")
    bench = _bench_module(repo_root)
    cfg = bench.zoo_config(net_arch=(8,), batch_size=16, buffer_size=300)
    out = bench.run_pendulum([0, 1], cfg, steps=150, chunk=50, eval_episodes=2,
                             vmap_seeds=True, extra_eval_episodes=3, log=None)
    assert out["mode"] == "vmapped"
    for key in ("returns", "extra_returns", "jax_returns"):
        assert len(out[key]) == 2 and all(-2000.0 < r <= 0.0 for r in out[key]), out
    assert out["returns"][0] != out["returns"][1]  # different agents, different start states
    # one vmapped group: its rate counts both agents' steps, i.e. the overall rate
    assert out["group_env_steps_per_s"] == [pytest.approx(out["env_steps_per_s"])]
    assert out["updates_per_s"] > 0.0


def test_gymnasium_evaluate_uses_the_peers_start_states(repo_root):
    """The headline evaluation replays the peers' episodes: reset(seed=seed + 1000) is drawn
    and discarded, then SB3's evaluate_policy resets once per episode (draws 2..11)."""
    gym = pytest.importorskip("gymnasium")
    import numpy as np
    from gymnasium.utils import seeding

    bench = _bench_module(repo_root)
    seed = 2
    returns, starts = bench.gymnasium_evaluate(lambda obs: np.zeros(1), seed, episodes=4)
    rng, _ = seeding.np_random(seed + 1000)
    high = np.array([np.pi, 1.0])
    draws = np.stack([rng.uniform(low=-high, high=high) for _ in range(5)])
    np.testing.assert_array_equal(starts, draws[1:])

    # the returns are those of the same episodes stepped by hand in gymnasium's env
    env = gym.make("Pendulum-v1")
    env.reset(seed=seed + 1000)
    for k in range(4):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(np.zeros(1))
            total += r
            done = term or trunc
        assert returns[k] == pytest.approx(total, abs=1e-9)
    assert np.all(returns < 0)


def test_gymnasium_evaluate_scales_actions_to_the_torque_range(repo_root):
    """Actions in [-1, 1] become torques in [-2, 2] (SB3 unscales its tanh policy's actions);
    a bang-bang policy that would be clipped otherwise scores exactly as torque +-2."""
    gym = pytest.importorskip("gymnasium")
    import numpy as np

    bench = _bench_module(repo_root)

    def policy(obs):
        return np.array([1.0 if obs[2] >= 0 else -1.0], np.float32)

    returns, _ = bench.gymnasium_evaluate(policy, 0, episodes=2)
    env = gym.make("Pendulum-v1")
    env.reset(seed=1000)
    for k in range(2):
        obs, _ = env.reset()
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(np.array([2.0 if obs[2] >= 0 else -2.0]))
            total += r
            done = term or trunc
        assert returns[k] == pytest.approx(total, abs=1e-9)
