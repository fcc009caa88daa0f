"""env: jitted vmapped trading env vs the lean numpy reference env stepped in a Python loop.

The JAX side runs `--chunk` vectorised steps of `--n-envs` envs inside one jitted `lax.scan`
(actions pre-drawn, per-env step keys split inside the jit); the [n_envs, W, F] observation
window is carried through the scan, so every step writes all windows, and a checksum over the
rewards and the final windows is returned and checked, so nothing can be dead-coded. The numpy
side is tests/reference/numpy_env.NumpyTradingEnv (one [W, F] slice copy and a few scalar ops
per step) on the same data, reset on done. Measurements alternate between the two, after
waiting for a quiet machine; the best of `--repeats` is reported for each (the median too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cryptorl_jax.core.machine import Load, wait_for_quiet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-envs", type=int, default=512,
                        help="envs stepped in parallel by the JAX side (default 512)")
    parser.add_argument("--extra-n-envs", type=str, default="",
                        help="comma-separated extra env counts timed for JAX only (e.g. 8192)")
    parser.add_argument("--window", type=int, default=64,
                        help="observation window in hours (default 64)")
    parser.add_argument("--n-features", type=int, default=16,
                        help="features per row of the synthetic market (default 16)")
    parser.add_argument("--rows", type=int, default=13_000,
                        help="synthetic market rows (default: one full-config train segment, "
                             "18 x 720 = 12,960 rows, plus lookback)")
    parser.add_argument("--chunk", type=int, default=1000, help="vectorised steps per jit call")
    parser.add_argument("--numpy-steps", type=int, default=200_000,
                        help="steps of the numpy reference loop (default 200,000)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repeats; the best and the median are reported (default 5)")
    parser.add_argument("--max-quiet-wait", type=float, default=60.0,
                        help="seconds to wait for other processes to go quiet (0: no wait)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the market and the actions (default 0)")




def _market(args):
    rng = np.random.default_rng(args.seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, args.rows)))
    features = np.clip(rng.normal(size=(args.rows, args.n_features)), -5, 5).astype(np.float32)
    return features, close


def _make_jax_runner(args, features, close, n_envs):
    import jax
    import jax.numpy as jnp

    from cryptorl_jax.config import EnvConfig
    from cryptorl_jax.env import trading

    cfg = EnvConfig(window=args.window)
    market = trading.MarketData.from_arrays(features, close, cfg)
    params = trading.EnvParams.from_config(cfg)
    start_range = trading.make_start_range(0, args.rows - 1, cfg, args.rows)
    coeffs = trading.Coeffs.create(0.1, 0.02)
    vstep = jax.vmap(trading.step, in_axes=(0, 0, 0, None, None, None))
    obs, state = jax.vmap(trading.reset, in_axes=(0, None, None, None))(
        jax.random.split(jax.random.key(args.seed), n_envs), params, market, start_range)

    @jax.jit
    def run_chunk(state, obs, key, actions, market):
        keys = jax.random.split(key, actions.shape)  # [chunk, n_envs]

        def body(carry, x):
            state, obs, reward_sum = carry
            action, step_keys = x
            obs, state, reward, _, _, _ = vstep(step_keys, state, action, params, market, coeffs)
            return (state, obs, reward_sum + reward), None  # [n_envs] running sums

        (state, obs, reward_sum), _ = jax.lax.scan(
            body, (state, obs, jnp.zeros((n_envs,), jnp.float32)), (actions, keys))
        return state, obs, reward_sum.sum() + obs.window.sum() + obs.agent.sum()

    actions = jax.random.uniform(jax.random.key(args.seed + 1), (args.chunk, n_envs),
                                 minval=-1.0, maxval=1.0)
    t0 = time.perf_counter()
    out = run_chunk(state, obs, jax.random.key(args.seed + 2), actions, market)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    carry = {"state": out[0], "obs": out[1], "i": 0}

    def measure() -> tuple[float, float, float]:
        carry["i"] += 1
        with Load() as load:
            t = time.perf_counter()
            state, obs, checksum = run_chunk(carry["state"], carry["obs"],
                                             jax.random.key(1000 + carry["i"]), actions, market)
            checksum = float(checksum)  # blocks
            elapsed = time.perf_counter() - t
        if not np.isfinite(checksum):
            raise RuntimeError(f"non-finite checksum {checksum}")
        carry["state"], carry["obs"] = state, obs
        return args.chunk * n_envs / elapsed, load.cores, args.chunk * n_envs / load.cpu_s

    return measure, compile_s


def _make_numpy_runner(args, features, close):
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from cryptorl_jax.config import EnvConfig
    from tests.reference.numpy_env import NumpyTradingEnv

    cfg = EnvConfig(window=args.window)
    first = max(args.window - 1, cfg.vol_window)
    env = NumpyTradingEnv.from_config(features, close, cfg, first, args.rows - 2, args.rows - 1,
                                      churn_coef=0.1, smooth_coef=0.02, seed=args.seed)
    actions = np.random.default_rng(args.seed + 1).uniform(-1, 1, args.numpy_steps).tolist()
    env.reset()

    def measure() -> tuple[float, float, float]:
        step, reset = env.step, env.reset
        with Load() as load:
            t = time.perf_counter()
            for a in actions:
                _, _, terminated, truncated, _ = step(a)
                if terminated or truncated:
                    reset()
            elapsed = time.perf_counter() - t
        return len(actions) / elapsed, load.cores, len(actions) / load.cpu_s

    return measure


def main(args: argparse.Namespace) -> None:
    import jax

    features, close = _market(args)
    jax_measure, compile_s = _make_jax_runner(args, features, close, args.n_envs)
    np_measure = _make_numpy_runner(args, features, close)
    np_measure()  # warm-up
    quiet = wait_for_quiet(args.max_quiet_wait) if args.max_quiet_wait > 0 else float("nan")
    jax_rates, np_rates, loads, jax_cpu, np_cpu = [], [], [], [], []
    for _ in range(args.repeats):
        rate, load, per_cpu = jax_measure()
        jax_rates.append(rate)
        jax_cpu.append(per_cpu)
        loads.append(load)
        rate, load, per_cpu = np_measure()
        np_rates.append(rate)
        np_cpu.append(per_cpu)
        loads.append(load)
    extra = {}
    for n in [int(x) for x in args.extra_n_envs.split(",") if x.strip()]:
        measure, _ = _make_jax_runner(args, features, close, n)
        extra[n] = max(measure()[0] for _ in range(max(args.repeats // 2, 1)))
    # Steps per CPU-second of this process (all its threads): less sensitive to other load.
    jax_cpu_best, np_cpu_best = max(jax_cpu), max(np_cpu)

    jax_best, np_best = max(jax_rates), max(np_rates)
    jax_med, np_med = statistics.median(jax_rates), statistics.median(np_rates)
    device = jax.devices()[0]
    rows = [("jax vmapped env", args.n_envs, jax_best, jax_med),
            ("numpy reference env (Python loop)", 1, np_best, np_med)]
    print(f"device: {device.platform} ({device.device_kind}); window {args.window} x "
          f"{args.n_features} features; chunk {args.chunk} steps; compile {compile_s:.1f} s; "
          f"other processes used {min(loads):.2f}-{max(loads):.2f} cores while timing "
          f"(before: {quiet:.2f})")
    cpu_rates = (jax_cpu_best, np_cpu_best)
    print(f"{'env':<36}{'n_envs':>8}{'best steps/s':>16}{'median steps/s':>16}"
          f"{'steps/cpu-s':>14}")
    for (name, n, best, med), per_cpu in zip(rows, cpu_rates):
        print(f"{name:<36}{n:>8}{best:>16,.0f}{med:>16,.0f}{per_cpu:>14,.0f}")
    for n, rate in extra.items():
        print(f"{'jax vmapped env':<36}{n:>8}{rate:>16,.0f}")
    print(f"{'ratio (jax / numpy)':<44}{jax_best / np_best:>16.1f}{jax_med / np_med:>16.1f}"
          f"{jax_cpu_best / np_cpu_best:>14.1f}")
    result = {"n_envs": args.n_envs, "jax_steps_per_s": round(jax_best),
              "numpy_steps_per_s": round(np_best), "ratio": round(jax_best / np_best, 2),
              "ratio_median": round(jax_med / np_med, 2), "device": device.platform,
              "window": args.window, "n_features": args.n_features,
              "rows": args.rows, "ratio_per_cpu_s": round(jax_cpu_best / np_cpu_best, 2),
              "max_foreign_cores": round(max(loads), 2)}
    for n, rate in extra.items():
        result[f"jax_steps_per_s_{n}"] = round(rate)
    print(json.dumps(result))
