"""TQC losses against plain numpy, update semantics, compile-once, vmap and pmean."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cryptorl_jax.agent import replay
from cryptorl_jax.agent import tqc as T
from cryptorl_jax.config import TQCConfig
from tests.reference import numpy_tqc as ref

SMALL = dataclasses.replace(TQCConfig(), net_arch=(16, 16), n_quantiles=5, n_critics=2,
                            top_quantiles_to_drop_per_net=1, batch_size=32,
                            learning_rate=1e-3, max_grad_norm=None)
OBS_DIM, ACTION_DIM = 3, 1


def _random_tensors(seed=0, batch=16, n_critics=3, n_quantiles=7):
    rng = np.random.default_rng(seed)
    return dict(
        current=rng.normal(size=(batch, n_critics, n_quantiles)).astype(np.float32) * 2,
        next_quantiles=rng.normal(size=(batch, n_critics, n_quantiles)).astype(np.float32) * 2,
        next_log_prob=rng.normal(size=batch).astype(np.float32),
        reward=rng.normal(size=batch).astype(np.float32),
        terminated=rng.random(batch) < 0.3,
    )


# --------------------------------------------------------------------------------------------
# Losses on fixed tensors vs numpy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop_per_net", [0, 2])
def test_truncated_target_matches_numpy(drop_per_net):
    t = _random_tensors()
    n_keep = 3 * 7 - drop_per_net * 3
    out = T.truncated_quantile_target(t["next_quantiles"], t["next_log_prob"], t["reward"],
                                      t["terminated"], 0.3, 0.99, n_keep)
    expected = ref.truncated_target(t["next_quantiles"], t["next_log_prob"], t["reward"],
                                    t["terminated"], 0.3, 0.99, drop_per_net)
    assert out.shape == (16, n_keep)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_only_termination_stops_the_bootstrap():
    t = _random_tensors()
    terminated = np.array([True, False] * 8)
    out = np.asarray(T.truncated_quantile_target(t["next_quantiles"], t["next_log_prob"],
                                                 t["reward"], terminated, 0.3, 0.99, 15))
    np.testing.assert_allclose(out[0], np.full(15, t["reward"][0]), rtol=1e-6)
    assert np.ptp(out[1]) > 0  # a truncated-but-not-terminated row still bootstraps


@pytest.mark.parametrize("n_drop", [1, 6, T._ARGMAX_DROP_LIMIT + 2])  # argmax rounds, top_k
def test_truncation_mask_keeps_the_same_atoms_as_sorting(n_drop):
    t = _random_tensors()
    pooled = t["next_quantiles"].reshape(16, -1)
    pooled[0, :4] = pooled[0, 4]  # ties at the top of one row
    pooled[0, 4:] = pooled[0, 4] - 1.0
    mask = np.asarray(T.truncation_mask(jnp.asarray(pooled), n_drop))
    assert np.all(mask.sum(1) == 21 - n_drop)
    for row, m in zip(pooled, mask):
        np.testing.assert_allclose(np.sort(row[m > 0]), np.sort(row)[:21 - n_drop])


@pytest.mark.parametrize("drop_per_net", [0, 2])
def test_critic_loss_and_gradient_match_numpy(drop_per_net):
    t = _random_tensors(seed=1)
    target_sorted = ref.truncated_target(t["next_quantiles"], t["next_log_prob"], t["reward"],
                                         t["terminated"], 0.2, 0.99, drop_per_net)
    expected = ref.quantile_huber_loss(t["current"], target_sorted)
    # (a) on the explicit truncated target [B, K]
    loss = T.quantile_huber_loss(t["current"], target_sorted.astype(np.float32))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)
    # (b) the update's path: every pooled atom as a target, masked by truncation
    pooled = t["next_quantiles"].reshape(16, -1)
    target_all = T.soft_td_target(pooled, t["next_log_prob"], t["reward"], t["terminated"],
                                  0.2, 0.99)
    mask = T.truncation_mask(pooled, drop_per_net * 3)
    loss_masked, grad = jax.value_and_grad(T.quantile_huber_loss)(t["current"], target_all,
                                                                  mask)
    np.testing.assert_allclose(float(loss_masked), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref.quantile_huber_grad(t["current"], target_sorted),
                               rtol=1e-5, atol=1e-7)


def test_critic_loss_gradient_equals_autodiff_of_the_plain_formula():
    t = _random_tensors(seed=2)
    target = jnp.asarray(t["next_quantiles"].reshape(16, -1))

    def plain(current):
        m = current.shape[-1]
        tau = (jnp.arange(m) + 0.5) / m
        delta = target[:, None, None, :] - current[..., None]
        huber = jnp.where(jnp.abs(delta) > 1, jnp.abs(delta) - 0.5, 0.5 * delta**2)
        return jnp.mean(jnp.abs(tau[:, None] - (delta < 0)) * huber)

    np.testing.assert_allclose(jax.grad(T.quantile_huber_loss)(t["current"], target),
                               jax.grad(plain)(jnp.asarray(t["current"])), rtol=1e-5,
                               atol=1e-8)
    # and no gradient flows into the target
    g_target = jax.grad(lambda y: T.quantile_huber_loss(t["current"], y))(target)
    assert float(jnp.abs(g_target).max()) == 0.0


def test_actor_and_entropy_losses_match_numpy():
    t = _random_tensors(seed=3)
    log_prob = t["next_log_prob"]
    np.testing.assert_allclose(float(T.actor_loss(0.37, log_prob, t["current"])),
                               ref.actor_loss(0.37, log_prob, t["current"]), rtol=1e-5,
                               atol=1e-6)
    loss, grad = jax.value_and_grad(T.entropy_coef_loss)(jnp.float32(-0.4), log_prob, -1.0)
    exp_loss, exp_grad = ref.entropy_coef_loss(-0.4, log_prob, -1.0)
    np.testing.assert_allclose(float(loss), exp_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(grad), exp_grad, rtol=1e-5, atol=1e-6)


def test_drop_count_is_validated():
    cfg = dataclasses.replace(SMALL, top_quantiles_to_drop_per_net=5)
    with pytest.raises(ValueError, match="top_quantiles_to_drop_per_net"):
        T.make_tqc(cfg, jnp.zeros(OBS_DIM), ACTION_DIM)


# --------------------------------------------------------------------------------------------
# Update semantics
# --------------------------------------------------------------------------------------------


def _batch(key, batch=32, terminated_rate=0.1):
    k = jax.random.split(key, 5)
    return T.Batch(obs=jax.random.normal(k[0], (batch, OBS_DIM)),
                   action=jax.random.uniform(k[1], (batch, ACTION_DIM), minval=-1, maxval=1),
                   reward=jax.random.normal(k[2], (batch,)),
                   next_obs=jax.random.normal(k[3], (batch, OBS_DIM)),
                   terminated=jax.random.uniform(k[4], (batch,)) < terminated_rate)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def small():
    """One SMALL learner with its jitted functions, shared so each compiles once per module."""
    tqc = T.make_tqc(SMALL, jnp.zeros(OBS_DIM), ACTION_DIM)
    init = jax.jit(tqc.init)
    run_n = jax.jit(lambda s, batch, key, n: tqc.update_many(s, lambda _: batch, key, n),
                    static_argnums=3)
    return dataclasses.make_dataclass("Small", ["tqc", "init", "update", "run_n"])(
        tqc, init, jax.jit(tqc.update), run_n)


def test_one_update_polyak_alpha_and_metrics(small):
    tqc = small.tqc
    state = small.init(jax.random.key(0))
    assert _max_diff(state.critic_params, state.target_critic_params) == 0.0
    new, metrics = small.update(state, _batch(jax.random.key(1)), jax.random.key(2))
    assert int(new.step) == 1
    # Polyak: target' = tau * critic' + (1 - tau) * target
    for c, t_old, t_new in zip(_leaves(new.critic_params), _leaves(state.target_critic_params),
                               _leaves(new.target_critic_params)):
        np.testing.assert_allclose(t_new, SMALL.tau * c + (1 - SMALL.tau) * t_old, rtol=1e-6,
                                   atol=1e-7)
    assert _max_diff(new.actor_params, state.actor_params) > 0
    # entropy coefficient: one Adam step on d/dlog_alpha = -(mean log_pi + target_entropy)
    grad = -(float(metrics["log_prob"]) + tqc.target_entropy)
    expected, _, _ = ref.adam_step(0.0, grad, 0.0, 0.0, 1, SMALL.learning_rate)
    np.testing.assert_allclose(float(new.log_alpha), expected, rtol=1e-4, atol=1e-7)
    assert float(metrics["alpha"]) == pytest.approx(1.0)  # the pre-update value is reported
    assert set(T.METRIC_NAMES) <= set(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_policy_delay_updates_actor_every_second_step():
    cfg = dataclasses.replace(SMALL, policy_delay=2)
    tqc = T.make_tqc(cfg, jnp.zeros(OBS_DIM), ACTION_DIM)
    update = jax.jit(tqc.update)
    s0 = jax.jit(tqc.init)(jax.random.key(0))
    s1, m1 = update(s0, _batch(jax.random.key(1)), jax.random.key(2))
    s2, m2 = update(s1, _batch(jax.random.key(3)), jax.random.key(4))
    assert _max_diff(s1.actor_params, s0.actor_params) == 0.0  # update 1: critic only
    assert float(s1.log_alpha) == float(s0.log_alpha) and float(m1["actor_updated"]) == 0.0
    assert _max_diff(s1.critic_params, s0.critic_params) > 0
    assert _max_diff(s2.actor_params, s1.actor_params) > 0  # update 2: actor and alpha too
    assert float(s2.log_alpha) != float(s1.log_alpha) and float(m2["actor_updated"]) == 1.0


def test_critic_loss_decreases_on_a_fixed_batch(small):
    batch = _batch(jax.random.key(5))
    state, first = small.update(small.init(jax.random.key(0)), batch, jax.random.key(1))
    state, _ = small.run_n(state, batch, jax.random.key(2), 200)
    _, last = small.update(state, batch, jax.random.key(3))
    assert float(last["critic_loss"]) < 0.5 * float(first["critic_loss"])


@pytest.mark.parametrize("target_entropy, direction", [(5.0, 1), (-50.0, -1)])
def test_entropy_coefficient_moves_toward_its_target(target_entropy, direction):
    """alpha rises while the policy's entropy is below the target, falls while above."""
    cfg = dataclasses.replace(SMALL, target_entropy=target_entropy)
    tqc = T.make_tqc(cfg, jnp.zeros(OBS_DIM), ACTION_DIM)
    batch = _batch(jax.random.key(5))
    run = jax.jit(lambda s, key: tqc.update_many(s, lambda _: batch, key, 50))
    state, metrics = run(jax.jit(tqc.init)(jax.random.key(0)), jax.random.key(2))
    assert float(jnp.sign(state.log_alpha)) == direction
    below = float(metrics["entropy"]) < target_entropy
    assert below == (direction == 1)


def test_hyper_takes_the_entropy_learning_rate_or_falls_back_to_the_actors():
    h = T.TQCHyper.from_config(SMALL)
    assert float(h.alpha_lr) == pytest.approx(SMALL.learning_rate)  # None: sb3's behaviour
    own = T.TQCHyper.from_config(dataclasses.replace(SMALL, ent_coef_learning_rate=5e-3))
    assert float(own.alpha_lr) == pytest.approx(5e-3)
    assert float(own.actor_lr) == float(h.actor_lr) == pytest.approx(SMALL.learning_rate)
    assert float(own.critic_lr) == float(h.critic_lr)


def test_entropy_coefficient_steps_at_its_own_learning_rate():
    """tqc.ent_coef_learning_rate is log_alpha's Adam step size; the actor keeps learning_rate.
    Adam's first step is lr * sign(grad), so |log_alpha| after one update is the alpha lr."""
    tqc = T.make_tqc(SMALL, jnp.zeros(OBS_DIM), ACTION_DIM)
    init, update = jax.jit(tqc.init), jax.jit(tqc.update)
    batch = _batch(jax.random.key(5))
    runs = {}
    for ent_lr in (None, 1e-2):
        hyper = T.TQCHyper.from_config(dataclasses.replace(SMALL, ent_coef_learning_rate=ent_lr))
        state = init(jax.random.key(0), hyper)
        first, _ = update(state, batch, jax.random.key(1), hyper)
        log_alpha, state = [float(first.log_alpha)], first
        for i in range(30):
            state, _ = update(state, batch, jax.random.key(2 + i), hyper)
            log_alpha.append(float(state.log_alpha))
        runs[ent_lr] = (first, np.asarray(log_alpha))
    (slow_first, slow), (fast_first, fast) = runs[None], runs[1e-2]
    # the same actor step (same actor lr, alpha = 1 before the first update in both) ...
    assert _max_diff(slow_first.actor_params, fast_first.actor_params) == 0.0
    # ... but log_alpha moved by the actor's lr in one run and by 1e-2 in the other
    np.testing.assert_allclose(abs(slow[0]), SMALL.learning_rate, rtol=1e-3)
    np.testing.assert_allclose(abs(fast[0]), 1e-2, rtol=1e-3)
    assert np.abs(fast[-1]) > 5 * np.abs(slow[-1])
    # a zero alpha lr (built directly: the config refuses it) holds alpha at ent_coef_init
    frozen = T.TQCHyper.from_config(SMALL).replace(alpha_lr=jnp.float32(0.0))
    state = init(jax.random.key(0), frozen)
    for i in range(3):
        state, _ = update(state, batch, jax.random.key(2 + i), frozen)
    assert float(state.log_alpha) == 0.0


def test_update_many_traces_once_and_is_deterministic(small):
    tqc = small.tqc
    item = {"obs": jnp.zeros(OBS_DIM), "action": jnp.zeros(ACTION_DIM),
            "reward": jnp.zeros(()), "next_obs": jnp.zeros(OBS_DIM),
            "terminated": jnp.zeros((), bool)}
    buf = replay.init(item, 256)
    b = _batch(jax.random.key(9), batch=256)
    buf = replay.add(buf, {"obs": b.obs, "action": b.action, "reward": b.reward,
                           "next_obs": b.next_obs, "terminated": b.terminated})
    traces = {"outer": 0, "body": 0}

    @jax.jit
    def train(state, buf, key):
        traces["outer"] += 1

        def sample_fn(k):  # called once per trace of the scan body
            traces["body"] += 1
            s = replay.sample(buf, k, SMALL.batch_size)
            return T.Batch(s["obs"], s["action"], s["reward"], s["next_obs"], s["terminated"])

        return tqc.update_many(state, sample_fn, key, 4)

    state = small.init(jax.random.key(0))
    for i in range(5):
        state, metrics = train(state, buf, jax.random.key(i))
    assert traces == {"outer": 1, "body": 1}
    assert int(state.step) == 20 and float(metrics["actor_updates"]) == 4.0
    # determinism: the same seed and keys give bit-identical parameters
    again = small.init(jax.random.key(0))
    for i in range(5):
        again, _ = train(again, buf, jax.random.key(i))
    assert _max_diff(again.actor_params, state.actor_params) == 0.0


def test_vmap_over_seeds(small):
    tqc = small.tqc
    states = jax.jit(jax.vmap(tqc.init))(jax.random.split(jax.random.key(0), 3))
    batch = _batch(jax.random.key(1))

    @jax.jit
    def train(states, keys):
        return jax.vmap(lambda s, k: tqc.update_many(s, lambda _: batch, k, 3))(states, keys)

    states, metrics = train(states, jax.random.split(jax.random.key(2), 3))
    assert metrics["critic_loss"].shape == (3,) and bool(jnp.all(jnp.isfinite(
        metrics["critic_loss"])))
    k = np.asarray(jax.tree.leaves(states.actor_params)[0])
    assert k.shape[0] == 3 and not np.allclose(k[0], k[1])
    actions = jax.vmap(tqc.act, in_axes=(0, None, 0))(
        states, batch.obs, jax.random.split(jax.random.key(3), 3))
    assert actions.shape == (3, 32, 1) and float(jnp.max(jnp.abs(actions))) <= 1.0
    det = jax.vmap(tqc.act_deterministic, in_axes=(0, None))(states, batch.obs)
    assert det.shape == (3, 32, 1)


def test_axis_name_averages_gradients_across_replicas(small):
    """Under a named vmap axis (as under shard_map), replicas stay identical."""
    batches = jax.vmap(lambda k: _batch(k))(jax.random.split(jax.random.key(1), 2))
    state = small.init(jax.random.key(0))
    replicated = jax.tree.map(lambda x: jnp.stack([x, x]), state)
    keys = jax.random.split(jax.random.key(2), 2)

    def run(axis_name):
        tqc = T.make_tqc(SMALL, jnp.zeros(OBS_DIM), ACTION_DIM, axis_name=axis_name)
        return jax.jit(jax.vmap(tqc.update, axis_name="devices"))(replicated, batches, keys)

    shared, metrics = run("devices")
    independent, _ = run(None)
    for leaf in _leaves(shared.actor_params) + _leaves(shared.critic_params):
        np.testing.assert_allclose(leaf[0], leaf[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["critic_loss"][0], metrics["critic_loss"][1])
    assert max(float(np.max(np.abs(leaf[0] - leaf[1])))
               for leaf in _leaves(independent.critic_params)) > 0


class _Encoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.proj = nnx.Linear(4 * 2, 5, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.proj(x.reshape(x.shape[0], -1)))


@pytest.mark.parametrize("encoder_lr, frozen", [(0.0, True), (1e-3, False)])
def test_encoder_learning_rate(encoder_lr, frozen):
    obs_example = (jnp.zeros((4, 2)), jnp.zeros(3))
    tqc = T.make_tqc(SMALL, obs_example, ACTION_DIM, encoder_factory=_Encoder,
                     encoder_lr=encoder_lr)
    # init traces under vmap over seeds with an encoder (as the trainer calls it)
    shapes = jax.eval_shape(jax.vmap(tqc.init), jax.random.split(jax.random.key(0), 2))
    assert shapes.actor_params["encoder"]["proj"]["kernel"].shape == (2, 8, 5)
    state = jax.jit(tqc.init)(jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 4)
    batch = T.Batch(obs=(jax.random.normal(k[0], (32, 4, 2)), jax.random.normal(k[1], (32, 3))),
                    action=jax.random.uniform(k[2], (32, 1), minval=-1, maxval=1),
                    reward=jax.random.normal(k[3], (32,)),
                    next_obs=(jax.random.normal(k[1], (32, 4, 2)),
                              jax.random.normal(k[0], (32, 3))),
                    terminated=jnp.zeros(32, bool))
    new, _ = jax.jit(tqc.update)(state, batch, jax.random.key(2))
    for name in ("actor_params", "critic_params"):
        old_p, new_p = getattr(state, name), getattr(new, name)
        moved = _max_diff(old_p["encoder"], new_p["encoder"]) > 0
        assert moved != frozen, name
        rest_old = {k: v for k, v in old_p.items() if k != "encoder"}
        rest_new = {k: v for k, v in new_p.items() if k != "encoder"}
        assert _max_diff(rest_old, rest_new) > 0


def test_weight_decay_is_adamw_and_spares_the_encoder():
    """tqc.weight_decay: one optimiser step is numpy's AdamW step (decay lr * wd * param,
    decoupled from the gradient); a fine-tuned encoder's parameters are never decayed."""
    lr, wd = 1e-2, 0.5
    params = {"trunk": jnp.array([1.0, -2.0, 3.0]), "encoder": jnp.array([4.0, -5.0])}
    grads = {"trunk": jnp.array([0.1, 0.2, -0.3]), "encoder": jnp.array([0.0, 0.0])}
    tx = T.make_optimizer(lr, float("inf"), encoder_lr=1e-3, weight_decay=wd)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    want, _, _ = ref.adam_step(np.asarray(params["trunk"], np.float64),
                               np.asarray(grads["trunk"], np.float64), 0.0, 0.0, 1, lr,
                               weight_decay=wd)
    np.testing.assert_allclose(new["trunk"], want, rtol=1e-6)
    np.testing.assert_array_equal(new["encoder"], params["encoder"])  # zero grad, no decay
    plain = T.make_optimizer(lr, float("inf"))
    updates, _ = plain.update(grads, plain.init(params), params)
    want, _, _ = ref.adam_step(np.asarray(params["trunk"], np.float64),
                               np.asarray(grads["trunk"], np.float64), 0.0, 0.0, 1, lr)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["trunk"], want, rtol=1e-6)


def test_batched_critics_update_as_the_per_critic_form(small):
    """The GPU form of the critics (`batched_critics`: one batched matmul per layer) starts
    from the same parameters and makes the same updates to float rounding: 5 updates, every
    parameter and metric within 1e-5 relative."""
    tqc_b = T.make_tqc(SMALL, jnp.zeros(OBS_DIM), ACTION_DIM, batched_critics=True)
    state = small.init(jax.random.key(0))
    state_b = jax.jit(tqc_b.init)(jax.random.key(0))
    assert _max_diff(state.critic_params, state_b.critic_params) == 0.0
    run_b = jax.jit(lambda s, batch, key: tqc_b.update_many(s, lambda _: batch, key, 5))
    batch = _batch(jax.random.key(1))
    new, metrics = small.run_n(state, batch, jax.random.key(2), 5)
    new_b, metrics_b = run_b(state_b, batch, jax.random.key(2))
    for name in ("actor_params", "critic_params", "target_critic_params", "log_alpha"):
        for x, y in zip(_leaves(getattr(new_b, name)), _leaves(getattr(new, name)), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for name, value in metrics.items():
        np.testing.assert_allclose(metrics_b[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_grad_norm", [None, 1e-3])
def test_flat_parameters_update_as_the_trees(max_grad_norm):
    """`TQC.flatten` (each network and its Adam moments one vector, what the chunk's loops
    carry with params="flat") round-trips exactly, and 3 updates in the flat form give the tree
    form's numbers to float rounding, with and without clipping acting (XLA compiles the two
    forms' reductions differently: 1 ulp in a bias measured without clipping)."""
    cfg = dataclasses.replace(SMALL, max_grad_norm=max_grad_norm)
    tqc = T.make_tqc(cfg, jnp.zeros(OBS_DIM), ACTION_DIM)
    run = jax.jit(lambda s, batch, key: tqc.update_many(s, lambda _: batch, key, 3))
    # from a state whose target critics, moments and counts are not their initial values
    state = run(jax.jit(tqc.init)(jax.random.key(0)), _batch(jax.random.key(5)),
                jax.random.key(6))[0]
    assert _max_diff(state.critic_params, state.target_critic_params) > 0
    flat = jax.jit(tqc.flatten)(state)
    assert isinstance(flat.critic_params, jax.Array) and flat.critic_params.ndim == 1
    assert isinstance(flat.critic_opt_state[1][0].mu, jax.Array)
    back = jax.jit(tqc.unflatten)(flat)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    assert _max_diff(back, state) == 0.0
    batch = _batch(jax.random.key(1))
    new, metrics = run(state, batch, jax.random.key(2))
    new_flat, metrics_flat = run(flat, batch, jax.random.key(2))
    new_flat = jax.jit(tqc.unflatten)(new_flat)
    assert jax.tree.structure(new_flat) == jax.tree.structure(new)
    for x, y in zip(_leaves(new_flat), _leaves(new), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    for name, value in metrics.items():
        np.testing.assert_allclose(metrics_flat[name], value, rtol=1e-5, atol=1e-7)
