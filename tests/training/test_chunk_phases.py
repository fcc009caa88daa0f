"""The chunk's warm-up and learning loops (no conditional inside either) train as the plain
per-iteration loop: random actions and no updates before `tqc.learning_starts`, the policy's
actions and G updates from it on, whether a chunk lies wholly in the warm-up or straddles it."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cryptorl_jax.agent import replay
from cryptorl_jax.env import trading
from cryptorl_jax.training.curriculum import penalty_coefficients_arrays
from cryptorl_jax.training.state import LocalState
from cryptorl_jax.training.trainer import trainer_for
from tests.training.helpers import synthetic_data, tiny_config


def _reference_iteration(trainer, agent, local, iteration, data, hyper, learning: bool):
    """One iteration of collect + learn as plain Python (a Python `if` on `learning`, i.e.
    iteration * n_envs >= learning_starts, where the step selects): the numbers the chunk's
    loops must reproduce."""
    spec, tqc, q = trainer.spec, trainer.tqc, trainer.spec.tqc
    params = trainer.env_params.replace(reward_scale=hyper.reward_scale)
    key, k_random, k_policy, k_env, k_update = jax.random.split(local.key, 5)
    progress = jnp.float32(iteration * spec.n_envs) / float(spec.total_env_steps)
    churn, smooth = penalty_coefficients_arrays(
        progress, jnp.asarray(spec.phase_ends, jnp.float32), hyper.churn, hyper.smooth)
    coeffs = trading.Coeffs(churn=churn, smooth=smooth)
    env = local.env
    obs = jax.vmap(trainer.observe, in_axes=(None, 0, 0))(
        data, env.t, trading.book_agent_state(env.book))
    n = trainer.n_envs_local
    actions = tqc.act(agent, obs, k_policy) if learning \
        else jax.random.uniform(k_random, (n, 1), jnp.float32, -1.0, 1.0)
    _, env_next, _, terminated, truncated, _ = jax.vmap(
        trading.step, in_axes=(0, 0, 0, None, None, None))(
        jax.random.split(k_env, n), env, actions, params, data.market, coeffs)
    buffer = replay.add(local.buffer, jax.vmap(trading.compact)(env, actions, terminated,
                                                                 truncated))
    if learning:
        def sample_fn(k):
            return trainer.rebuild(data, replay.sample(buffer, k, trainer.batch_local), coeffs,
                                   params)

        agent, _ = tqc.update_many(agent, sample_fn, k_update, q.gradient_steps, hyper.tqc)
    return agent, LocalState(env=env_next, buffer=buffer, key=key)


LEARNING_STARTS = 72


@pytest.fixture(scope="module")
def phases():
    """Chunks of 8 iterations of 4 envs, learning from iteration 18: chunks 0 and 1 run the
    warm-up loop, chunk 2 straddles learning_starts, chunk 3 learns throughout."""
    cfg = tiny_config("train.n_seeds=1", f"tqc.learning_starts={LEARNING_STARTS}",
                      "train.steps_per_chunk=8")
    trainer = trainer_for(cfg, 4)
    return cfg, trainer, trainer.put_data(synthetic_data(cfg))


def test_the_chunk_loops_train_as_the_plain_loop(phases):
    """Each kind of chunk (warm-up, straddling, learning) trains as the plain loop."""
    cfg, trainer, data = phases
    learning_starts = LEARNING_STARTS
    hyper = trainer.default_hyper
    state = trainer.init(jax.random.key(5), data, hyper=hyper, seeds=[0])
    first = jax.tree.map(lambda x: x[0], (state.agent, state.local))
    updates = []
    for _ in range(4):
        state, metrics = trainer.train_chunk(state, data, hyper)
        updates.append(float(metrics["updates"][0]))
    steps = cfg.train.steps_per_chunk
    learn_from = -(-learning_starts // cfg.train.n_envs)
    assert learn_from == 18 and updates == [0.0, 0.0, 6.0, 8.0]

    agent, local = first[0], jax.tree.map(lambda x: x[0], first[1])  # device 0, member 0
    one = jax.jit(lambda a, lo, i, learning: _reference_iteration(
        trainer, a, lo, i, data, jax.tree.map(lambda x: x[0], hyper), learning),
        static_argnums=3)
    for i in range(4 * steps):
        agent, local = one(agent, local, jnp.int32(i), i >= learn_from)
    got = jax.tree.map(lambda x: x[0], (state.agent, state.local))
    got = (got[0], jax.tree.map(lambda x: x[0], got[1]))
    for want, have in zip(jax.tree.leaves((agent, local)), jax.tree.leaves(got), strict=True):
        if jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            want, have = jax.random.key_data(want), jax.random.key_data(have)
        want, have = np.asarray(want), np.asarray(have)
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(have, want, rtol=1e-5,
                                       atol=1e-6 * max(float(np.abs(want).max()), 1.0))
        else:
            np.testing.assert_array_equal(have, want)


def _loop_bodies(hlo: str) -> dict[str, list[str]]:
    """The body computations of the compiled program's while loops: name -> instruction lines
    (with the lines of the loops and conditional branches nested in them)."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            comps[name].append(line)

    def lines(body):
        out = list(comps[body])
        text = "\n".join(comps[body])
        for nested in re.findall(r"body=%?([\w.\-]+)", text):
            out += lines(nested)
        for branches in re.findall(r"branch_computations=\{([^}]*)\}", text):
            for branch in branches.split(","):
                out += lines(branch.strip().lstrip("%"))
        return out

    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    return {b: lines(b) for b in bodies}


def test_the_learning_loop_has_no_conditional(phases):
    """The compiled chunk's learning loop (the one with the updates' matmuls and no
    conditional) exists: the warm-up decision is taken outside it. Its control: the loop of
    the chunk that straddles learning_starts keeps its two conditionals."""
    _, trainer, data = phases
    hyper = trainer.default_hyper
    state = jax.eval_shape(lambda: trainer.init(jax.random.key(0), data, hyper=hyper,
                                                seeds=[0]))
    hlo = jax.jit(lambda s: trainer.train_chunk(s, data, hyper)).lower(state).compile() \
        .as_text()
    with_dots = {b: body for b, body in _loop_bodies(hlo).items()
                 if sum(" dot(" in line for line in body) >= 6}
    conds = sorted(sum(" conditional(" in line for line in body) for body in with_dots.values())
    assert conds[0] == 0 and conds[-1] >= 2, conds
