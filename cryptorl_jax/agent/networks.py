"""TQC networks in Flax NNX: tanh-Gaussian actor and an n-critic quantile ensemble.

Both networks read an observation that is either one flat array [B, d] or a tuple (pytree) of
parts, e.g. (embedding [B, D], agent_state [B, 3]) or (window [B, W, F], agent_state [B, 3]).
With an `encoder` (an nnx.Module mapping [B, W, F] -> [B, D]) the encoder is applied to the
FIRST part and its output is concatenated with the flattened remaining parts; without one, all
parts are flattened and concatenated. The critic ensemble runs its encoder once and evaluates
its `n_critics` quantile heads as one stacked computation (one parameter tensor per layer with a
leading critic axis), so `n_critics` is a real parameter, not a hard-coded pair.

The hot path uses these modules functionally (`nnx.split` once, `nnx.merge` inside jitted pure
functions); see agent/tqc.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cryptorl_jax.config import TQCConfig

Observation = Any  # a [B, d] array or a pytree (tuple) of [B, ...] arrays
EncoderFactory = Callable[[nnx.Rngs], nnx.Module]

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# Observation adapter
# --------------------------------------------------------------------------------------------


def observation_parts(obs: Observation) -> list[jax.Array]:
    """The observation's parts in order (a flat array is one part)."""
    parts = jax.tree.leaves(obs)
    if not parts:
        raise ValueError("observation has no array parts")
    return parts


def observation_features(obs: Observation, encoder: nnx.Module | None = None) -> jax.Array:
    """Encoder(first part) ++ flattened other parts (or all parts flattened): [B, features]."""
    parts = observation_parts(obs)
    batch = parts[0].shape[0]
    if encoder is not None:
        first = encoder(parts[0])  # [B, D]
        if first.ndim != 2 or first.shape[0] != batch:
            raise ValueError(f"encoder must map [B, ...] -> [B, D], got output {first.shape}")
        flat = [first] + [p.reshape(batch, -1) for p in parts[1:]]
    else:
        flat = [p.reshape(batch, -1) for p in parts]
    flat = [f.astype(jnp.float32) for f in flat]
    return flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1)


def add_batch_axis(obs_example: Observation) -> Any:
    """ShapeDtypeStructs of a single (unbatched) observation with a leading batch axis of 1."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((1, *jnp.shape(x)), jnp.result_type(x)), obs_example
    )


def feature_dim(obs_example: Observation, encoder: nnx.Module | None = None) -> int:
    """Width of `observation_features` for one unbatched observation (shape-only evaluation)."""
    batched = add_batch_axis(obs_example)
    if encoder is None:
        out = jax.eval_shape(observation_features, batched)
    else:
        graphdef, enc_state = nnx.split(encoder)
        out = jax.eval_shape(
            lambda s, o: observation_features(o, nnx.merge(graphdef, s)), enc_state, batched
        )
    return int(out.shape[-1])


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


class MLP(nnx.Module):
    """Linear layers with ReLU between hidden layers (no activation after the last); with
    `layer_norm`, a LayerNorm after every Linear (before its ReLU)."""

    def __init__(self, in_features: int, sizes: Sequence[int], *, layer_norm: bool = False,
                 rngs: nnx.Rngs):
        dims = [in_features, *sizes]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])]
        )
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in sizes] if layer_norm
                              else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if len(self.norms):
                x = self.norms[i](x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


class StackedLayerNorm(nnx.Module):
    """`n` independent LayerNorms (each member its own scale and bias), applied member-wise to
    per-member inputs [B, width], as nnx.LayerNorm (epsilon 1e-6, biased variance)."""

    def __init__(self, n: int, width: int, *, epsilon: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((n, width), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((n, width), jnp.float32))
        self.epsilon = epsilon

    def members(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
        scale, bias = self.scale[...], self.bias[...]
        out = []
        for n, x in enumerate(xs):
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            out.append((x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale[n] + bias[n])
        return out

    def batched(self, x: jax.Array) -> jax.Array:
        """The same on the members' inputs stacked [n, B, width]."""
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return ((x - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale[...][:, None]
                + self.bias[...][:, None])


def _member_kernels(rngs: nnx.Rngs, n: int, in_features: int, out_features: int) -> jax.Array:
    """[n, i, o]: nnx.Linear's default init (lecun_normal), drawn independently per member."""
    init = nnx.initializers.lecun_normal()
    keys = jax.random.split(rngs.params(), n)
    return jax.vmap(lambda k: init(k, (in_features, out_features)))(keys)


class StackedLinear(nnx.Module):
    """`n` independent Linear layers, each on its own member's input: [n, B, i] -> [n, B, o].

    The parameters are stacked ([n, i, o] kernel, [n, o] bias), but the products are `n` plain
    [B, i] @ [i, o] matmuls (`members`), not one batched dot: XLA's CPU runtime runs most
    dots of this size on one thread, so the members' independent dots (and their gradients)
    run side by side on the cores, where a batched dot would run them one after another. Their
    gradient is the hand-written rule of `_member_matmuls` (the textbook one): autodiff would
    accumulate each member's weight gradient into a zero-padded [n, i, o] tensor (a pad and an
    add per member), which ties the members' backward dots together; stacking the n weight
    gradients directly lets them overlap. (A layer whose input all members share is
    `SharedInputStackedLinear`; the measured effect of both choices is in docs/benchmarks.md.)
    """

    def __init__(self, n: int, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_member_kernels(rngs, n, in_features, out_features))
        self.bias = nnx.Param(jnp.zeros((n, out_features), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"StackedLinear takes per-member input [n, B, i], got {x.shape}")
        return jnp.stack(self.members(list(x)))

    def members(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
        """Per-member outputs [B, o] from per-member inputs [B, i]: one plain matmul each."""
        kernel, bias = self.kernel[...], self.bias[...]
        if len(xs) != kernel.shape[0]:
            raise ValueError(f"expected {kernel.shape[0]} member inputs, got {len(xs)}")
        return list(_member_matmuls(tuple(xs), kernel, bias))

    def batched(self, x: jax.Array) -> jax.Array:
        """[n, B, i] -> [n, B, o] as ONE batched matmul (the form for GPUs: one kernel for
        all members, and autodiff's batched gradients; `CriticEnsemble(batched=True)`)."""
        kernel = self.kernel[...]
        y = jnp.einsum("nbi,nio->nbo", x.astype(kernel.dtype), kernel)
        return y + self.bias[...][:, None]


@jax.custom_vjp
def _member_matmuls(xs: tuple[jax.Array, ...], kernel: jax.Array,
                    bias: jax.Array) -> tuple[jax.Array, ...]:
    """(x_n @ kernel[n] + bias[n] for each member n); x_n [..., i], kernel [n, i, o]."""
    return tuple(x @ kernel[n] + bias[n] for n, x in enumerate(xs))


def _member_matmuls_fwd(xs, kernel, bias):
    return _member_matmuls(xs, kernel, bias), (xs, kernel, bias)


def _member_matmuls_bwd(residuals, grads):
    """d x_n = g_n K_n^T, d K_n = x_n^T g_n, d b_n = sum of g_n over the leading axes."""
    xs, kernel, bias = residuals
    d_xs, d_kernel, d_bias = [], [], []
    for n, (x, g) in enumerate(zip(xs, grads)):
        d_xs.append((g @ kernel[n].T).astype(x.dtype))
        x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
        d_kernel.append(x2.T @ g2)
        d_bias.append(jnp.sum(g2, axis=0))
    return (tuple(d_xs), jnp.stack(d_kernel).astype(kernel.dtype),
            jnp.stack(d_bias).astype(bias.dtype))


_member_matmuls.defvjp(_member_matmuls_fwd, _member_matmuls_bwd)


class SharedInputStackedLinear(nnx.Module):
    """`n` independent Linear layers on ONE shared input: parts [B, i_k] -> [n, B, o].

    The input arrives in parts (e.g. features and action) whose concatenation is the layer's
    input; each part has its own kernel rows, stored as one parameter [i_k, n * o] per part,
    member-major along the columns (columns n*o:(n+1)*o belong to member n). So the ensemble's
    layer is one plain matmul per part: no batched dot, no kernel transpose or slice copy per
    call, one weight-gradient matmul X^T dY per part, and a part that is not differentiated
    (the features, in the actor loss) costs no input gradient. `member_kernel(n)` returns
    member n's full [sum i_k, o]. Initialised exactly like `StackedLinear` on the concatenated
    input (lecun_normal per member over sum i_k fan-in, zero bias).
    """

    def __init__(self, n: int, in_parts: Sequence[int], out_features: int, *,
                 rngs: nnx.Rngs):
        total = int(sum(in_parts))
        per_member = _member_kernels(rngs, n, total, out_features)  # [n, i, o]
        flat = jnp.transpose(per_member, (1, 0, 2)).reshape(total, n * out_features)
        bounds = [0, *itertools.accumulate(in_parts)]
        self.kernels = nnx.List(
            [nnx.Param(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
        self.bias = nnx.Param(jnp.zeros((n, out_features), jnp.float32))
        self.n = n
        self.out_features = out_features

    def member_kernel(self, n: int) -> jax.Array:
        o = self.out_features
        return jnp.concatenate([k[...][:, n * o:(n + 1) * o] for k in self.kernels], axis=0)

    def members(self, *parts: jax.Array) -> list[jax.Array]:
        """Per-member outputs [B, o]: the column blocks of the one matmul."""
        y = self._matmul(*parts)
        o = self.out_features
        return [y[..., n * o:(n + 1) * o] for n in range(self.n)]

    def __call__(self, *parts: jax.Array) -> jax.Array:
        """The members' outputs stacked [n, B, o] (one matmul, then one transpose)."""
        y = self._matmul(*parts)
        return jnp.transpose(y.reshape(y.shape[0], self.n, self.out_features), (1, 0, 2))

    def _matmul(self, *parts: jax.Array) -> jax.Array:
        if len(parts) != len(self.kernels):
            raise ValueError(f"expected {len(self.kernels)} input parts, got {len(parts)}")
        y = None
        for x, kernel in zip(parts, self.kernels):
            kernel = kernel[...]
            if x.shape[-1] != kernel.shape[0]:
                raise ValueError(f"input part has {x.shape[-1]} features, the layer expects "
                                 f"{kernel.shape[0]}")
            part = x.astype(kernel.dtype) @ kernel  # [B, n * o]
            y = part if y is None else y + part
        return y + self.bias[...].reshape(-1)


# --------------------------------------------------------------------------------------------
# Actor
# --------------------------------------------------------------------------------------------


class Actor(nnx.Module):
    """MLP -> (mean, log_std) of a tanh-squashed diagonal Gaussian; log_std clipped."""

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        net_arch: Sequence[int],
        *,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        layer_norm: bool = False,
        encoder: nnx.Module | None = None,
        rngs: nnx.Rngs,
    ):
        self.encoder = encoder
        self.trunk = MLP(in_features, net_arch, layer_norm=layer_norm, rngs=rngs)
        last = net_arch[-1] if net_arch else in_features
        self.mean = nnx.Linear(last, action_dim, rngs=rngs)
        self.log_std = nnx.Linear(last, action_dim, rngs=rngs)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def __call__(self, obs: Observation) -> tuple[jax.Array, jax.Array]:
        """Mean and clipped log-std of the pre-tanh Gaussian, each [B, A]."""
        h = observation_features(obs, self.encoder)
        if len(self.trunk.layers):
            h = jax.nn.relu(self.trunk(h))
        log_std = jnp.clip(self.log_std(h), self.log_std_min, self.log_std_max)
        return self.mean(h), log_std


def tanh_log_det_jacobian(pre_tanh: jax.Array) -> jax.Array:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u| (as TFP/sbx)."""
    return 2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def squashed_gaussian_log_prob(
    pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array
) -> jax.Array:
    """log pi(tanh(u)) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2)]: [B].

    SAC (Haarnoja et al. 2018, appendix C, eq. 21).
    """
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * z**2 - log_std - _HALF_LOG_2PI
    return jnp.sum(gaussian - tanh_log_det_jacobian(pre_tanh), axis=-1)


def sample_action(
    mean: jax.Array, log_std: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample a = tanh(mean + std * eps) in [-1, 1]^A and its log-prob [B]."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + jnp.exp(log_std) * eps
    return jnp.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)


def deterministic_action(mean: jax.Array) -> jax.Array:
    """The deterministic policy action tanh(mean) in [-1, 1]^A."""
    return jnp.tanh(mean)


# --------------------------------------------------------------------------------------------
# Critic ensemble
# --------------------------------------------------------------------------------------------


class CriticEnsemble(nnx.Module):
    """`n_critics` quantile critics Z_n(s, a) with `n_quantiles` atoms each: [B, N, M]."""

    def __init__(
        self,
        in_features: int,
        action_dim: int,
        net_arch: Sequence[int],
        *,
        n_quantiles: int = 25,
        n_critics: int = 2,
        layer_norm: bool = False,
        encoder: nnx.Module | None = None,
        batched: bool = False,
        rngs: nnx.Rngs,
    ):
        if n_critics < 1 or n_quantiles < 1:
            raise ValueError(f"n_critics={n_critics} and n_quantiles={n_quantiles} must be >= 1")
        self.encoder = encoder
        dims = [in_features + action_dim, *net_arch, n_quantiles]
        self.layers = nnx.List(
            [SharedInputStackedLinear(n_critics, (in_features, action_dim), dims[1], rngs=rngs)]
            + [StackedLinear(n_critics, a, b, rngs=rngs) for a, b in zip(dims[1:-1], dims[2:])]
        )
        # with layer_norm: one LayerNorm per critic after every hidden layer, before its ReLU
        # (BRO / SimbaV2-style critic normalisation)
        self.norms = nnx.List([StackedLayerNorm(n_critics, w) for w in net_arch]
                              if layer_norm else [])
        self.n_critics = n_critics
        self.n_quantiles = n_quantiles
        self.batched = batched

    def _batched_before_output(self, obs: Observation, action: jax.Array) -> jax.Array:
        """`_layers_before_output` stacked [n, B, width]: each layer one batched matmul over
        the critics (the GPU form, `critic_form`); the same parameters and values."""
        features = observation_features(obs, self.encoder)
        x = self.layers[0](features, action)  # [n, B, width]: one matmul, one transpose
        if len(self.norms):
            x = self.norms[0].batched(x)
        for k, layer in enumerate(self.layers[1:-1], start=1):
            x = layer.batched(jax.nn.relu(x))
            if k < len(self.norms):
                x = self.norms[k].batched(x)
        return x

    def _normed(self, k: int, xs: list[jax.Array]) -> list[jax.Array]:
        return self.norms[k].members(xs) if k < len(self.norms) else xs

    def _layers_before_output(self, obs: Observation, action: jax.Array) -> list[jax.Array]:
        """Pre-activation outputs of the layer before the output layer, one [B, width] per
        critic (kept apart so each critic's matmuls are independent ops; see StackedLinear).

        With no hidden layer (a single layer) these are the output layer's own outputs.
        """
        features = observation_features(obs, self.encoder)  # encoder applied once
        # The first layer on concat([features, action]) is split into features @ W[:d] +
        # action @ W[d:] (the same parameters and values): the actor loss differentiates the
        # critics w.r.t. the action only, and this keeps the d-wide input gradient out of it.
        # All critics share that input, so it is one [B, d] @ [d, N * width] matmul.
        xs = self._normed(0, self.layers[0].members(features, action))  # N x [B, width]
        for k, layer in enumerate(self.layers[1:-1], start=1):
            xs = self._normed(k, layer.members([jax.nn.relu(x) for x in xs]))
        return xs

    def __call__(self, obs: Observation, action: jax.Array) -> jax.Array:
        """Quantiles of every critic, [B, n_critics, n_quantiles]."""
        if self.batched:
            x = self._batched_before_output(obs, action)
            if len(self.layers) > 1:
                x = self.layers[-1].batched(jax.nn.relu(x))
            return jnp.transpose(x, (1, 0, 2))  # [B, N, M]
        xs = self._layers_before_output(obs, action)
        if len(self.layers) > 1:
            xs = self.layers[-1].members([jax.nn.relu(x) for x in xs])
        return jnp.stack(xs, axis=1)  # [B, N, M]

    def mean_value(self, obs: Observation, action: jax.Array) -> jax.Array:
        """mean over critics and quantiles of Z_n,m(s, a), [B]: the actor loss's Q.

        Equal to `self(obs, action).mean((1, 2))`, but the output layer is linear, so the mean
        over its M columns is taken on its kernel and bias first: one [H] column per critic
        instead of the [H, M] matmul and the [B, N, M] reduction (and their gradients).
        """
        if len(self.layers) == 1:  # no hidden layer: the output layer is the first one
            return jnp.mean(self(obs, action), axis=(1, 2))
        last = self.layers[-1]
        kernel = jnp.mean(last.kernel[...], axis=-1)  # [N, H]
        bias = jnp.mean(last.bias[...], axis=-1)  # [N]
        if self.batched:
            h = jax.nn.relu(self._batched_before_output(obs, action))  # [N, B, H]
            q = jnp.einsum("nbh,nh->nb", h, kernel) + bias[:, None]  # [N, B]
            return jnp.sum(q, axis=0) / q.shape[0]
        hs = self._layers_before_output(obs, action)  # N x [B, H]
        q = [jax.nn.relu(h) @ kernel[n] + bias[n] for n, h in enumerate(hs)]  # N x [B]
        return sum(q) / len(q)


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def make_networks(
    tqc_cfg: TQCConfig,
    obs_example: Observation,
    action_dim: int,
    rngs: nnx.Rngs,
    encoder_factory: EncoderFactory | None = None,
    batched_critics: bool = False,
) -> tuple[Actor, CriticEnsemble]:
    """Build (actor, critic ensemble); `obs_example` is ONE observation without batch axis.

    `batched_critics`: the critics' layers as batched matmuls (`critic_form`); the parameters
    are the same either way.

    `encoder_factory(rngs)` builds a fresh encoder: one for the actor, one shared by the critics
    (sb3's default share_features_extractor=False for SAC/TQC).
    """
    if action_dim < 1:
        raise ValueError(f"action_dim must be >= 1, got {action_dim}")
    actor_encoder = encoder_factory(rngs) if encoder_factory is not None else None
    critic_encoder = encoder_factory(rngs) if encoder_factory is not None else None
    in_features = feature_dim(obs_example, actor_encoder)
    actor = Actor(
        in_features,
        action_dim,
        tqc_cfg.net_arch,
        log_std_min=tqc_cfg.log_std_min,
        log_std_max=tqc_cfg.log_std_max,
        layer_norm=tqc_cfg.layer_norm,
        encoder=actor_encoder,
        rngs=rngs,
    )
    critic = CriticEnsemble(
        in_features,
        action_dim,
        tqc_cfg.net_arch,
        n_quantiles=tqc_cfg.n_quantiles,
        n_critics=tqc_cfg.n_critics,
        layer_norm=tqc_cfg.layer_norm,
        encoder=critic_encoder,
        batched=batched_critics,
        rngs=rngs,
    )
    return actor, critic


CRITIC_FORMS = ("per-critic", "batched")


def critic_form(platform: str) -> str:
    """How the critic ensemble's layers multiply on a backend: "per-critic" on the CPU (one
    plain matmul per critic, `StackedLinear.members`, so XLA:CPU can run the critics'
    independent dots side by side on the cores: the form every CPU figure of the project was
    made with, kept so they reproduce bit for bit; the batched form measured equal within
    noise on 2 cores with jax 0.10.2, docs/benchmarks.md), "batched" elsewhere (one batched
    matmul per layer for all critics: 45 fewer kernels per iteration of full.yaml's step, and a
    dot of this size fills a fraction of a GPU, so one launch beats two). The GPU's choice is
    not yet measured on a GPU (scripts/gpu_check.sh, stage `critics`)."""
    return "per-critic" if platform == "cpu" else "batched"
