"""Actor, critic ensemble and observation adapter against plain numpy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cryptorl_jax.agent import networks
from cryptorl_jax.config import TQCConfig
from tests.reference import numpy_tqc as ref

CFG = dataclasses.replace(TQCConfig(), net_arch=(16, 8), n_quantiles=5, n_critics=3)


class WindowEncoder(nnx.Module):
    """A small stand-in for the MAE encoder: [B, W, F] -> [B, D] (counts its calls)."""

    calls = 0

    def __init__(self, window: int, n_features: int, dim: int, rngs: nnx.Rngs):
        self.proj = nnx.Linear(window * n_features, dim, rngs=rngs)

    def __call__(self, x):
        WindowEncoder.calls += 1
        return jnp.tanh(self.proj(x.reshape(x.shape[0], -1)))


def _np(x):
    return np.asarray(x, np.float64)


def test_observation_features_flat_and_parts():
    flat = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(networks.observation_features(flat), flat)
    window = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    agent = jnp.ones((2, 3))
    out = networks.observation_features((window, agent))
    np.testing.assert_array_equal(out, np.concatenate([np.reshape(window, (2, 12)), agent], 1))
    enc = WindowEncoder(4, 3, 5, nnx.Rngs(0))
    out = networks.observation_features((window, agent), enc)
    np.testing.assert_allclose(out, np.concatenate([enc(window), agent], 1), rtol=1e-6)
    assert networks.feature_dim((window[0], agent[0]), enc) == 8
    assert networks.feature_dim((window[0], agent[0])) == 15


def test_actor_outputs_clipped_log_std_and_matches_numpy_mlp():
    cfg = dataclasses.replace(CFG, log_std_min=-0.125, log_std_max=0.125)
    actor, _ = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(1))
    obs = jax.random.normal(jax.random.key(0), (7, 4)) * 3
    mean, log_std = actor(obs)
    assert mean.shape == (7, 2) and log_std.shape == (7, 2)
    assert float(log_std.min()) >= -0.125 and float(log_std.max()) <= 0.125
    layers = [(_np(layer.kernel[...]), _np(layer.bias[...])) for layer in actor.trunk.layers]
    hidden = np.maximum(ref.mlp(_np(obs), layers), 0.0)
    np.testing.assert_allclose(mean, hidden @ _np(actor.mean.kernel[...])
                               + _np(actor.mean.bias[...]), rtol=1e-5, atol=1e-5)
    raw = hidden @ _np(actor.log_std.kernel[...]) + _np(actor.log_std.bias[...])
    np.testing.assert_allclose(log_std, np.clip(raw, -0.125, 0.125), rtol=1e-5, atol=1e-6)


def test_sample_and_log_prob_match_numpy():
    key = jax.random.key(3)
    mean = jax.random.normal(jax.random.key(1), (64, 2)) * 2
    log_std = jax.random.uniform(jax.random.key(2), (64, 2), minval=-2.0, maxval=1.0)
    action, log_prob = networks.sample_action(mean, log_std, key)
    eps = jax.random.normal(key, mean.shape)  # the same noise sample_action draws
    pre_tanh = _np(mean) + np.exp(_np(log_std)) * _np(eps)
    np.testing.assert_allclose(action, np.tanh(pre_tanh), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_prob, ref.squashed_gaussian_log_prob(pre_tanh, mean, log_std),
                               rtol=1e-5, atol=1e-4)
    assert float(jnp.max(jnp.abs(action))) <= 1.0
    np.testing.assert_allclose(networks.deterministic_action(mean), np.tanh(_np(mean)),
                               rtol=1e-6, atol=1e-6)


def test_tanh_correction_is_stable_for_saturated_actions():
    pre_tanh = jnp.array([[-30.0], [0.0], [30.0]])
    out = networks.tanh_log_det_jacobian(pre_tanh)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[1, 0], 0.0, atol=1e-6)  # log(1 - tanh(0)^2) = 0
    np.testing.assert_allclose(out[0, 0], 2 * (np.log(2) - 30.0), rtol=1e-5)


@pytest.mark.parametrize("n_critics", [1, 3])
def test_critic_ensemble_is_independent_mlps(n_critics):
    cfg = dataclasses.replace(CFG, n_critics=n_critics)
    _, critic = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(2))
    obs = jax.random.normal(jax.random.key(0), (6, 4))
    action = jax.random.uniform(jax.random.key(1), (6, 2), minval=-1, maxval=1)
    out = critic(obs, action)
    assert out.shape == (6, n_critics, cfg.n_quantiles)
    x = np.concatenate([_np(obs), _np(action)], 1)
    for n in range(n_critics):
        first = critic.layers[0]
        layers = [(_np(first.member_kernel(n)), _np(first.bias[...][n]))]
        layers += [(_np(layer.kernel[...][n]), _np(layer.bias[...][n]))
                   for layer in critic.layers[1:]]
        np.testing.assert_allclose(out[:, n], ref.mlp(x, layers), rtol=1e-5, atol=1e-5)
    if n_critics > 1:  # members are initialised independently
        first = critic.layers[0]
        assert not np.allclose(first.member_kernel(0), first.member_kernel(1))


def test_stacked_linears_are_per_member_matmuls():
    """Both ensemble layers compute member n's x_n @ K_n + b_n, stacked or as a list."""
    layer = networks.StackedLinear(3, 4, 5, rngs=nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.key(1), (3, 5))
    x = jax.random.normal(jax.random.key(2), (3, 6, 4))
    want = [_np(x[n]) @ _np(layer.kernel[...][n]) + _np(layer.bias[...][n]) for n in range(3)]
    np.testing.assert_allclose(layer(x), np.stack(want), rtol=1e-5, atol=1e-6)
    for got, w in zip(layer.members(list(x)), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="member inputs"):
        layer.members(list(x[:2]))
    with pytest.raises(ValueError, match="per-member input"):
        layer(x[0])

    shared = networks.SharedInputStackedLinear(3, (4, 2), 5, rngs=nnx.Rngs(3))
    shared.bias[...] = jax.random.normal(jax.random.key(4), (3, 5))
    a, b = jax.random.normal(jax.random.key(5), (6, 4)), jax.random.normal(jax.random.key(6),
                                                                          (6, 2))
    xab = np.concatenate([_np(a), _np(b)], axis=1)
    want = [xab @ _np(shared.member_kernel(n)) + _np(shared.bias[...][n]) for n in range(3)]
    np.testing.assert_allclose(shared(a, b), np.stack(want), rtol=1e-5, atol=1e-6)
    for got, w in zip(shared.members(a, b), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_stacked_linear_hand_written_gradient_matches_autodiff(lead):
    """StackedLinear.members' custom VJP gives autodiff's gradients of x_n @ K_n + b_n (for
    the inputs, kernel and bias, with one or more leading axes, jitted and under vmap)."""
    graphdef, state = nnx.split(networks.StackedLinear(3, 4, 5, rngs=nnx.Rngs(0)))
    kernel = nnx.merge(graphdef, state).kernel[...]
    bias = jax.random.normal(jax.random.key(1), (3, 5))
    xs = tuple(jax.random.normal(jax.random.key(2 + n), (*lead, 4)) for n in range(3))
    weights = jax.random.normal(jax.random.key(9), (3, *lead, 5))

    def loss(layer_fn, xs, kernel, bias):  # a nonlinear function of every output
        return sum(jnp.sum(w * jnp.sin(y)) for w, y in zip(weights, layer_fn(xs, kernel, bias)))

    def plain(xs, kernel, bias):
        return [x @ kernel[n] + bias[n] for n, x in enumerate(xs)]

    def members(xs, kernel, bias):
        params = jax.tree.map(lambda x: x, state)
        params.replace_by_pure_dict({"kernel": kernel, "bias": bias})
        return nnx.merge(graphdef, params).members(list(xs))

    want = jax.grad(lambda *a: loss(plain, *a), argnums=(0, 1, 2))(xs, kernel, bias)
    got = jax.jit(jax.grad(lambda *a: loss(members, *a), argnums=(0, 1, 2)))(xs, kernel, bias)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # vmapped over the parameters (as the Pendulum bench's vmapped seeds)
    kernels = jnp.stack([kernel, 2.0 * kernel])
    vgot = jax.vmap(jax.grad(lambda k: loss(members, xs, k, bias)))(kernels)
    vwant = jax.vmap(jax.grad(lambda k: loss(plain, xs, k, bias)))(kernels)
    np.testing.assert_allclose(vgot, vwant, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("net_arch", [(16, 8), ()])
def test_critic_mean_value_equals_the_mean_quantile_and_its_gradients(net_arch):
    cfg = dataclasses.replace(CFG, net_arch=net_arch)
    _, critic = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(4))
    graphdef, params, rest = nnx.split(critic, nnx.Param, ...)
    obs = jax.random.normal(jax.random.key(0), (6, 4))
    action = jax.random.uniform(jax.random.key(1), (6, 2), minval=-1, maxval=1)

    def full(p, a):
        return jnp.mean(nnx.merge(graphdef, p, rest)(obs, a), axis=(1, 2))

    def short(p, a):
        return nnx.merge(graphdef, p, rest).mean_value(obs, a)

    np.testing.assert_allclose(short(params, action), full(params, action), rtol=1e-5,
                               atol=1e-6)
    weights = jax.random.normal(jax.random.key(2), (6,))  # a non-uniform cotangent
    g_full = jax.grad(lambda p, a: jnp.sum(weights * full(p, a)), argnums=(0, 1))(params, action)
    g_short = jax.grad(lambda p, a: jnp.sum(weights * short(p, a)), argnums=(0, 1))(params,
                                                                                    action)
    for x, y in zip(jax.tree.leaves(g_short), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_encoder_applied_once_in_critic_and_separate_encoders_per_network():
    window, n_features = 4, 3
    obs_example = (jnp.zeros((window, n_features)), jnp.zeros(3))
    actor, critic = networks.make_networks(
        CFG, obs_example, 1, nnx.Rngs(0),
        encoder_factory=lambda rngs: WindowEncoder(window, n_features, 6, rngs))
    assert actor.encoder is not critic.encoder
    assert not np.allclose(actor.encoder.proj.kernel[...], critic.encoder.proj.kernel[...])
    obs = (jax.random.normal(jax.random.key(0), (5, window, n_features)), jnp.ones((5, 3)))
    WindowEncoder.calls = 0
    q = critic(obs, jnp.zeros((5, 1)))
    assert WindowEncoder.calls == 1 and q.shape == (5, CFG.n_critics, CFG.n_quantiles)
    mean, _ = actor(obs)
    assert mean.shape == (5, 1)
    # the critic's first layer sees [encoder(window) (6), agent (3), action (1)]
    assert [k[...].shape for k in critic.layers[0].kernels] == [
        (9, CFG.n_critics * CFG.net_arch[0]), (1, CFG.n_critics * CFG.net_arch[0])]


def test_make_networks_is_deterministic_in_the_key():
    a1, c1 = networks.make_networks(CFG, jnp.zeros(3), 1, nnx.Rngs(5))
    a2, c2 = networks.make_networks(CFG, jnp.zeros(3), 1, nnx.Rngs(5))
    for x, y in zip(jax.tree.leaves(nnx.state(a1)), jax.tree.leaves(nnx.state(a2))):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(nnx.state(c1)), jax.tree.leaves(nnx.state(c2))):
        np.testing.assert_array_equal(x, y)


def test_layer_norm_networks_match_numpy():
    """tqc.layer_norm: a LayerNorm after every hidden layer (before its ReLU), in the actor's
    trunk and in each critic (its own scale and bias), as the numpy reference computes it."""
    cfg = dataclasses.replace(CFG, layer_norm=True)
    actor, critic = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(5))
    # non-trivial scales and biases, different per critic
    for i, norm in enumerate(critic.norms):
        norm.scale[...] = 1.0 + 0.1 * jax.random.normal(jax.random.key(10 + i), norm.scale.shape)
        norm.bias[...] = 0.1 * jax.random.normal(jax.random.key(20 + i), norm.bias.shape)
    obs = jax.random.normal(jax.random.key(0), (6, 4)) * 3
    action = jax.random.uniform(jax.random.key(1), (6, 2), minval=-1, maxval=1)
    out = critic(obs, action)
    x = np.concatenate([_np(obs), _np(action)], 1)
    for n in range(cfg.n_critics):
        first = critic.layers[0]
        layers = [(_np(first.member_kernel(n)), _np(first.bias[...][n]))]
        layers += [(_np(layer.kernel[...][n]), _np(layer.bias[...][n]))
                   for layer in critic.layers[1:]]
        norms = [(_np(nm.scale[...][n]), _np(nm.bias[...][n])) for nm in critic.norms] + [None]
        np.testing.assert_allclose(out[:, n], ref.mlp(x, layers, norms), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(critic.mean_value(obs, action), jnp.mean(out, axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)
    layers = [(_np(layer.kernel[...]), _np(layer.bias[...])) for layer in actor.trunk.layers]
    norms = [(_np(nm.scale[...]), _np(nm.bias[...])) for nm in actor.trunk.norms]
    hidden = np.maximum(ref.mlp(_np(obs), layers, norms), 0.0)
    mean, _ = actor(obs)
    np.testing.assert_allclose(mean, hidden @ _np(actor.mean.kernel[...])
                               + _np(actor.mean.bias[...]), rtol=1e-4, atol=1e-4)
    plain_actor, plain_critic = networks.make_networks(CFG, jnp.zeros(4), 2, nnx.Rngs(5))
    assert not len(plain_critic.norms) and not len(plain_actor.trunk.norms)


@pytest.mark.parametrize("net_arch,layer_norm", [((16, 8), False), ((16, 8), True), ((16,), False),
                                                 ((), False)])
def test_batched_critics_equal_the_per_critic_form(net_arch, layer_norm):
    """`CriticEnsemble(batched=True)` (the GPU form: one batched matmul per layer) has the
    per-critic form's parameters and, to float rounding, its quantiles, mean value and every
    gradient (parameters and action)."""
    cfg = dataclasses.replace(CFG, net_arch=net_arch, layer_norm=layer_norm)
    _, per = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(4))
    _, bat = networks.make_networks(cfg, jnp.zeros(4), 2, nnx.Rngs(4), batched_critics=True)
    g_per, params, rest = nnx.split(per, nnx.Param, ...)
    g_bat, params_b, _ = nnx.split(bat, nnx.Param, ...)
    assert jax.tree.structure(params) == jax.tree.structure(params_b)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(x, y)
    obs = jax.random.normal(jax.random.key(0), (6, 4))
    action = jax.random.uniform(jax.random.key(1), (6, 2), minval=-1, maxval=1)
    weights = jax.random.normal(jax.random.key(2), (6, cfg.n_critics, cfg.n_quantiles))

    def outputs(graphdef, p, a):
        critic = nnx.merge(graphdef, p, rest)
        return critic(obs, a), critic.mean_value(obs, a)

    def loss(graphdef, p, a, which):
        q, v = outputs(graphdef, p, a)
        return jnp.sum(weights * q) if which == "quantiles" else jnp.sum(weights[:, 0, 0] * v)

    for which in ("quantiles", "mean value"):
        got = jax.value_and_grad(loss, argnums=(1, 2))(g_bat, params, action, which)
        want = jax.value_and_grad(loss, argnums=(1, 2))(g_per, params, action, which)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
    q_b, v_b = outputs(g_bat, params, action)
    q_p, v_p = outputs(g_per, params, action)
    assert q_b.shape == q_p.shape == (6, cfg.n_critics, cfg.n_quantiles)
    np.testing.assert_allclose(q_b, q_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v_b, v_p, rtol=1e-5, atol=1e-6)


def test_the_critic_form_by_backend():
    assert networks.critic_form("cpu") == "per-critic"
    assert networks.critic_form("gpu") == networks.critic_form("cuda") == "batched"
