"""pendulum: TQC learning quality and training speed on gymnax Pendulum-v1 (rl-zoo settings).

rl-baselines3-zoo's TQC entry for Pendulum-v1: 20k env steps, lr 1e-3, otherwise sb3-contrib's
defaults (buffer 1e6, learning_starts 100, batch 256, tau 0.005, gamma 0.99, train_freq 1,
gradient_steps 1, ent_coef auto, [256, 256], 25 quantiles x 2 critics, drop 2 per net) and no
gradient clipping. One env; the first `learning_starts` steps take uniform random actions and
then every env step is followed by one gradient update, as SB3's loop does. The WHOLE loop (policy,
env step, replay insert, update) runs inside jit as a lax.scan over chunks of steps; the host only
loops over chunks. Actions are tanh outputs in [-1, 1], scaled by 2 for Pendulum's torque.

Timing: compilation is done ahead of time and reported separately; `wall_s` and
`env_steps_per_s` cover training only (random warm-up steps + training steps, not evaluation).
Seeds run one after another (per-agent speed at 1 env) unless --vmap-seeds trains them as one
vmapped batch (then env_steps_per_s counts the steps of all seeds together, and the per-agent
rate is printed as well). `group_env_steps_per_s` gives each group's own rate (one per seed, or
one for the vmapped batch), so a slow spell of the host shows; `updates_per_s` times the
training phase alone (the learning_starts random steps excluded), as the peers' benches do.

Evaluation, three figures per seed, all deterministic:
- `returns` (the headline): the peers' protocol, exactly. The harness that measured sb3-contrib
  and sbx (../shared/peers/pendulum_quality.py, i.e. rl-zoo's evaluate_policy) evaluates 10
  episodes on gymnasium's Pendulum-v1 after `reset(seed=seed + 1000)`, so the episodes start
  from draws 2..11 of that env's seeded generator. We run our trained actor on the same
  gymnasium env with the same seeding, so both sides face the same start states. Pendulum's
  return depends strongly on the start angle (episode returns spread ~80), so comparing
  10-episode means on different start states mostly compares the start states.
- `returns_jax_10ep`: 10 episodes of gymnax's env reset with JAX keys seed + 1000 (this bench's
  protocol before it matched the peers').
- `returns_100ep`: the mean over --extra-eval-episodes (100) episodes of that same gymnasium
  stream (its first 10 are the headline's), the low-noise figure: a 10-episode mean has a
  sampling std of ~25 on Pendulum.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from cryptorl_jax.core.machine import Load, wait_for_quiet

ZOO_STEPS = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed's number (default 0)")
    parser.add_argument("--steps", type=int, default=ZOO_STEPS, help="env steps per seed")
    parser.add_argument("--chunk", type=int, default=1990,
                        help="training steps per jitted chunk (must divide steps - "
                             "learning_starts)")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="evaluation episodes per seed (default 10)")
    parser.add_argument("--extra-eval-episodes", type=int, default=100,
                        help="also report a low-noise evaluation over this many episodes of "
                             "the same gymnasium stream (0: off)")
    parser.add_argument("--vmap-seeds", action="store_true",
                        help="train all seeds as one vmapped batch instead of one after another")
    parser.add_argument("--buffer-size", type=int, default=ZOO_STEPS,
                        help="replay capacity; rl-zoo's 1e6 never wraps within 20k steps, so "
                             "20k holds exactly the same transitions")
    parser.add_argument("--net-arch", type=str, default="256,256",
                        help="hidden layer sizes, a comma list (default 256,256)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="minibatch size (default 256)")
    parser.add_argument("--max-quiet-wait", type=float, default=30.0,
                        help="seconds to wait for other processes to go quiet before timing")


# --------------------------------------------------------------------------------------------
# The jitted Pendulum training loop (importable by the slow test)
# --------------------------------------------------------------------------------------------


def zoo_config(lr: float = 1e-3, batch_size: int = 256, buffer_size: int = ZOO_STEPS,
               net_arch: tuple[int, ...] = (256, 256)):
    """sb3-contrib TQC defaults with rl-zoo's Pendulum lr, no gradient clipping."""
    from cryptorl_jax.config import TQCConfig

    return replace(TQCConfig(), learning_rate=lr, critic_learning_rate=None,
                   batch_size=batch_size, buffer_size=buffer_size, learning_starts=100,
                   gamma=0.99, tau=0.005, n_quantiles=25, n_critics=2,
                   top_quantiles_to_drop_per_net=2, net_arch=net_arch, policy_delay=1,
                   gradient_steps=1, ent_coef_init=1.0, target_entropy="auto",
                   max_grad_norm=None)


def make_pendulum_runner(tqc_cfg, chunk: int, eval_episodes: int = 10) -> dict[str, Any]:
    """Pure functions: init(seed_key), warmup(carry), train_chunk(carry), evaluate(state, key)."""
    import gymnax
    import jax
    import jax.numpy as jnp
    from flax import struct

    from cryptorl_jax.agent import replay
    from cryptorl_jax.agent.tqc import Batch, make_tqc

    env, env_params = gymnax.make("Pendulum-v1")
    max_torque = float(env_params.max_torque)
    obs_example = jnp.zeros((3,), jnp.float32)
    tqc = make_tqc(tqc_cfg, obs_example, 1)
    item_example = {"obs": obs_example, "action": jnp.zeros((1,), jnp.float32),
                    "reward": jnp.zeros((), jnp.float32), "next_obs": obs_example,
                    "terminated": jnp.zeros((), bool)}

    @struct.dataclass
    class Carry:
        agent: Any
        buffer: replay.ReplayState
        env_state: Any
        obs: jax.Array  # [3]
        key: jax.Array
        episode_return: jax.Array
        finished_return_sum: jax.Array  # over episodes finished in this chunk
        finished_episodes: jax.Array

    def init(key: jax.Array) -> Carry:
        k_agent, k_env, k_carry = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env, env_params)
        zero = jnp.zeros((), jnp.float32)
        return Carry(agent=tqc.init(k_agent), buffer=replay.init(item_example,
                                                                 tqc_cfg.buffer_size),
                     env_state=env_state, obs=obs, key=k_carry, episode_return=zero,
                     finished_return_sum=zero, finished_episodes=zero)

    def env_step(carry: Carry, action: jax.Array, key: jax.Array) -> Carry:
        """Step with action in [-1, 1]^1; store (obs, action, r, final next_obs, terminated)."""
        obs, env_state, reward, terminated, truncated, info = env.step(
            key, carry.env_state, max_torque * action, env_params)
        item = {"obs": carry.obs, "action": action, "reward": reward.astype(jnp.float32),
                "next_obs": info["final_observation"], "terminated": terminated}
        buffer = replay.add(carry.buffer, jax.tree.map(lambda x: x[None], item))
        done = jnp.logical_or(terminated, truncated)
        ep_return = carry.episode_return + reward
        return carry.replace(
            buffer=buffer, env_state=env_state, obs=obs,
            episode_return=jnp.where(done, 0.0, ep_return),
            finished_return_sum=carry.finished_return_sum + jnp.where(done, ep_return, 0.0),
            finished_episodes=carry.finished_episodes + done)

    def random_step(carry: Carry, _):
        key, k_action, k_env = jax.random.split(carry.key, 3)
        action = jax.random.uniform(k_action, (1,), jnp.float32, -1.0, 1.0)
        return env_step(carry.replace(key=key), action, k_env), None

    def train_step(carry: Carry, _):
        key, k_act, k_env, k_update = jax.random.split(carry.key, 4)
        action = tqc.act(carry.agent, carry.obs[None], k_act)[0]  # [1]
        carry = env_step(carry.replace(key=key), action, k_env)
        buffer = carry.buffer

        def sample_fn(k):
            b = replay.sample(buffer, k, tqc_cfg.batch_size)
            return Batch(b["obs"], b["action"], b["reward"], b["next_obs"], b["terminated"])

        agent, metrics = tqc.update_many(carry.agent, sample_fn, k_update,
                                         tqc_cfg.gradient_steps)
        return carry.replace(agent=agent), metrics

    def reset_stats(carry: Carry) -> Carry:
        zero = jnp.zeros((), jnp.float32)
        return carry.replace(finished_return_sum=zero, finished_episodes=zero)

    def warmup(carry: Carry) -> Carry:
        carry, _ = jax.lax.scan(random_step, carry, None, length=tqc_cfg.learning_starts)
        return carry

    def train_chunk(carry: Carry) -> tuple[Carry, dict]:
        carry, metrics = jax.lax.scan(train_step, reset_stats(carry), None, length=chunk)
        out = jax.tree.map(jnp.mean, metrics)
        out["train_episode_return"] = (carry.finished_return_sum
                                       / jnp.maximum(carry.finished_episodes, 1.0))
        return carry, out

    def evaluate(agent, key: jax.Array) -> jax.Array:
        """Mean return of `eval_episodes` deterministic episodes (200 steps each)."""
        keys = jax.random.split(key, eval_episodes)

        def episode(k):
            k_reset, k_steps = jax.random.split(k)
            obs, state = env.reset(k_reset, env_params)

            def step(c, k_step):
                obs, state, total = c
                action = tqc.act_deterministic(agent, obs[None])[0]
                obs, state, reward, _, _, _ = env.step(k_step, state, max_torque * action,
                                                       env_params)
                return (obs, state, total + reward), None

            (_, _, total), _ = jax.lax.scan(
                step, (obs, state, jnp.zeros((), jnp.float32)),
                jax.random.split(k_steps, env_params.max_steps_in_episode))
            return total

        return jnp.mean(jax.vmap(episode)(keys))

    return {"tqc": tqc, "init": init, "warmup": warmup, "train_chunk": train_chunk,
            "evaluate": evaluate, "Carry": Carry}


def gymnasium_evaluate(policy, seed: int, episodes: int = 10):
    """The peers' evaluation: `episodes` deterministic episodes of gymnasium's Pendulum-v1.

    Mirrors ../shared/peers/pendulum_quality.py: `eval_env.reset(seed=seed + 1000)` and then
    SB3's evaluate_policy, whose vector-env wrapper resets again (unseeded) before the first
    episode and after each one. `policy(obs)` maps a float32 [3] observation to an action in
    [-1, 1]^1; it is scaled to the torque range as SB3 unscales its tanh policy's actions.
    Returns (episode returns, start states [theta, theta_dot]) as numpy arrays.
    """
    import gymnasium as gym
    import numpy as np

    env = gym.make("Pendulum-v1")
    high = env.action_space.high.astype(np.float64)
    env.reset(seed=seed + 1000)
    returns, starts = [], []
    for _ in range(episodes):
        obs, _ = env.reset()
        starts.append(np.array(env.unwrapped.state, np.float64))
        total, done = 0.0, False
        while not done:
            action = np.clip(high * np.asarray(policy(obs), np.float64), -high, high)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.array(returns), np.stack(starts)


def run_pendulum(seeds: list[int], tqc_cfg=None, steps: int = ZOO_STEPS, chunk: int = 1990,
                 eval_episodes: int = 10, vmap_seeds: bool = False, extra_eval_episodes: int = 0,
                 log=print) -> dict[str, Any]:
    """Train one agent per seed, evaluate deterministically; returns returns and timings."""
    import jax

    tqc_cfg = tqc_cfg or zoo_config()
    n_train = steps - tqc_cfg.learning_starts
    if n_train <= 0 or n_train % chunk:
        raise ValueError(f"--chunk {chunk} must divide steps - learning_starts = {n_train}")
    runner = make_pendulum_runner(tqc_cfg, chunk, eval_episodes)
    n_chunks = n_train // chunk

    def batched(f):
        return jax.vmap(f) if vmap_seeds else f

    init = jax.jit(batched(runner["init"]))
    warmup = jax.jit(batched(runner["warmup"]), donate_argnums=0)
    train_chunk = jax.jit(batched(runner["train_chunk"]), donate_argnums=0)
    evaluate = jax.jit(batched(runner["evaluate"]))

    def seed_keys(group):
        keys = [jax.random.key(s) for s in group]
        eval_keys = [jax.random.key(s + 1000) for s in group]
        if vmap_seeds:
            return jax.numpy.stack(keys), jax.numpy.stack(eval_keys)
        return keys[0], eval_keys[0]

    groups = [list(seeds)] if vmap_seeds else [[s] for s in seeds]
    t0 = time.perf_counter()
    key0, eval_key0 = seed_keys(groups[0])
    carry_shape = jax.eval_shape(init, key0)
    compiled_warmup = warmup.lower(carry_shape).compile()
    compiled_chunk = train_chunk.lower(carry_shape).compile()
    compiled_eval = evaluate.lower(carry_shape.agent, eval_key0).compile()
    compile_s = time.perf_counter() - t0

    act = jax.jit(lambda agent, obs: runner["tqc"].act_deterministic(agent, obs[None])[0])
    returns, jax_returns, extra_returns, wall, foreign, group_walls = [], [], [], 0.0, [], []
    train_wall = 0.0  # the training phase alone: learning_starts random steps excluded
    for group in groups:
        key, eval_key = seed_keys(group)
        carry = jax.block_until_ready(init(key))
        with Load() as load:
            t = time.perf_counter()
            carry = jax.block_until_ready(compiled_warmup(carry))
            t_train = time.perf_counter()
            for i in range(n_chunks):
                carry, metrics = compiled_chunk(carry)
                jax.block_until_ready(carry)
                if log and (i + 1) % max(n_chunks // 5, 1) == 0:
                    m = {k: [round(float(x), 3) for x in jax.numpy.ravel(v)]
                         for k, v in metrics.items()
                         if k in ("critic_loss", "alpha", "train_episode_return")}
                    log(f"  seeds {group}: step {tqc_cfg.learning_starts + (i + 1) * chunk}"
                        f" {m}")
            seconds = time.perf_counter() - t
            train_wall += time.perf_counter() - t_train
        wall += seconds
        group_walls.append(seconds)
        foreign.append(load.cores)
        for i, s in enumerate(group):
            agent = (jax.tree.map(lambda x, i=i: x[i], carry.agent) if vmap_seeds
                     else carry.agent)
            episode_returns, _ = gymnasium_evaluate(lambda obs, a=agent: act(a, obs), s,
                                                    max(eval_episodes, extra_eval_episodes))
            returns.append(float(episode_returns[:eval_episodes].mean()))
            if log:
                log(f"seed {s}: mean deterministic return over {eval_episodes} episodes "
                    f"(gymnasium Pendulum-v1 reset from seed + 1000, the peers' protocol): "
                    f"{returns[-1]:.1f}")
            if extra_eval_episodes:
                extra_returns.append(float(episode_returns[:extra_eval_episodes].mean()))
                if log:
                    log(f"seed {s}: mean deterministic return over {extra_eval_episodes} "
                        f"episodes of the same stream: {extra_returns[-1]:.1f}")
        result = jax.numpy.ravel(compiled_eval(carry.agent, eval_key))
        for s, r in zip(group, result):
            jax_returns.append(float(r))
            if log:
                log(f"seed {s}: mean deterministic return over {eval_episodes} episodes "
                    f"(gymnax reset keys seed + 1000): {float(r):.1f}")
    total_steps = steps * len(seeds)
    return {"returns": returns, "jax_returns": jax_returns, "extra_returns": extra_returns,
            "steps": steps, "wall_s": wall,
            "env_steps_per_s": total_steps / wall,
            # updates (= training-phase env steps) per second: the peers' benches time only
            # their training phase, so this is the like-for-like figure against them
            "updates_per_s": n_train * len(seeds) / train_wall,
            # each group (one seed, or all seeds vmapped) trains `steps` per agent
            "per_agent_env_steps_per_s": steps * len(groups) / wall,
            "compile_s": compile_s, "foreign_cores": foreign,
            # each group's env steps/s (all its agents): the host's speed drifts, so a slow
            # group shows instead of hiding in the mean
            "group_env_steps_per_s": [steps * len(g) / w for g, w in zip(groups, group_walls)],
            "mode": "vmapped" if vmap_seeds else "sequential"}


def compact_buffer_bytes(capacity: int = 2_500_000) -> int:
    """Bytes of a replay buffer of `capacity` compact trading transitions (shape-only)."""
    import jax
    import jax.numpy as jnp

    from cryptorl_jax.agent import replay

    f32 = jnp.zeros((), jnp.float32)
    item = {"t": jnp.zeros((), jnp.int32), "prev_action": f32, "prev_exposure": f32,
            "nav": f32, "peak_nav": f32, "action": f32, "terminated": jnp.zeros((), bool),
            "truncated": jnp.zeros((), bool)}
    return replay.nbytes(jax.eval_shape(lambda: replay.init(item, capacity)))


def main(args: argparse.Namespace) -> None:
    import jax

    cfg = zoo_config(batch_size=args.batch_size, buffer_size=args.buffer_size,
                     net_arch=tuple(int(x) for x in args.net_arch.split(",")))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU cores;"
          f" XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    n_bytes = compact_buffer_bytes(2_500_000)
    print(f"replay: 2,500,000 compact trading transitions (int32 t, 5 float32, 2 bool) = "
          f"{n_bytes / 1e6:.1f} MB (limit 200 MB)")
    if args.max_quiet_wait > 0:
        print(f"other processes use {wait_for_quiet(args.max_quiet_wait):.2f} cores")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = run_pendulum(seeds, cfg, steps=args.steps, chunk=args.chunk,
                       eval_episodes=args.eval_episodes, vmap_seeds=args.vmap_seeds,
                       extra_eval_episodes=args.extra_eval_episodes)
    print(f"compile {out['compile_s']:.1f} s (not timed); training {out['wall_s']:.1f} s for "
          f"{len(seeds)} x {args.steps} env steps ({out['mode']}): "
          f"{out['env_steps_per_s']:.1f} env steps/s, "
          f"{out['per_agent_env_steps_per_s']:.1f} per agent; "
          f"{out['updates_per_s']:.1f} updates/s in the training phase alone "
          f"(the {cfg.learning_starts} random steps per seed excluded, as the peers time it); "
          f"foreign cores during timing {[round(c, 2) for c in out['foreign_cores']]}; "
          f"env steps/s per group {[round(r, 1) for r in out['group_env_steps_per_s']]}")
    print(f"median return {statistics.median(out['returns']):.1f} ({args.eval_episodes} "
          f"episodes per seed, the peers' protocol)")
    print(f"median return {statistics.median(out['jax_returns']):.1f} ({args.eval_episodes} "
          f"episodes per seed, gymnax keys seed + 1000)")
    if out["extra_returns"]:
        print(f"median return {statistics.median(out['extra_returns']):.1f} "
              f"({args.extra_eval_episodes} episodes per seed, the same gymnasium stream)")
    print(json.dumps({"returns": [round(r, 2) for r in out["returns"]], "steps": args.steps,
                      "wall_s": round(out["wall_s"], 2),
                      "env_steps_per_s": round(out["env_steps_per_s"], 1),
                      "per_agent_env_steps_per_s": round(out["per_agent_env_steps_per_s"], 1),
                      "updates_per_s": round(out["updates_per_s"], 1),
                      "group_env_steps_per_s": [round(r, 1)
                                                for r in out["group_env_steps_per_s"]],
                      "compile_s": round(out["compile_s"], 2), "mode": out["mode"],
                      f"returns_jax_{args.eval_episodes}ep": [
                          round(r, 2) for r in out["jax_returns"]],
                      f"returns_{args.extra_eval_episodes}ep": [
                          round(r, 2) for r in out["extra_returns"]],
                      "replay_2_5m_compact_bytes": n_bytes}))
    sys.stdout.flush()
