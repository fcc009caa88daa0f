"""TQC (Kuznetsov et al. 2020, arXiv:2005.04269) as pure functions over a TQCState pytree.

Numerically sb3-contrib's TQC (sb3_contrib/tqc/tqc.py, `TQC.train`), with sbx's policy_delay:
one gradient update is
  1. target: a' ~ pi(.|s'), pool the target critics' quantiles Z(s', a') [B, N*M], sort, drop
     the top `top_quantiles_to_drop_per_net * n_critics`, y = r + (1 - terminated) gamma
     (z - alpha log pi(a'|s')); only `terminated` stops the bootstrap (truncation bootstraps).
     The update keeps every pooled atom and masks the dropped ones (`truncation_mask`, by
     argmax rounds over the few dropped atoms): the same multiset as sorting, without a full sort;
  2. critic: quantile Huber loss (kappa = 1, tau_i = (i + 0.5)/M), mean over every
     (batch, critic, quantile, target) element, one optimiser step;
  3. every `policy_delay`-th update (1-based count, as sbx): actor loss
     mean(alpha log pi(a|s) - mean_{n,m} Z_n,m(s, a)) with the just-updated critics, and the
     entropy-coefficient loss -mean(log_alpha (log pi + target_entropy)) on log_alpha;
     alpha in the target, the actor loss and the metrics is the value before this update's
     step (sb3 detaches it first);
  4. Polyak: target <- tau * critic + (1 - tau) * target.

NNX is used functionally: the module graphdefs live in the static `TQC` container, the
parameters (nnx.State) in `TQCState`, and `nnx.merge` runs inside the pure functions.
Non-Param variables of the networks (e.g. an encoder's BatchNorm statistics or RNG counters)
are carried in `actor_rest` / `critic_rest` and never updated: encoders used inside the agent
should be deterministic (no dropout) in this mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from cryptorl_jax.agent.networks import (
    EncoderFactory,
    Observation,
    deterministic_action,
    make_networks,
    sample_action,
)
from cryptorl_jax.config import TQCConfig


class Batch(NamedTuple):
    """One minibatch of transitions (obs and next_obs may be pytrees of [B, ...] parts)."""

    obs: Observation
    action: jax.Array  # [B, A] in [-1, 1]
    reward: jax.Array  # [B]
    next_obs: Observation
    terminated: jax.Array  # [B] bool or float; truncation is NOT termination


@struct.dataclass
class TQCState:
    """Learner state: parameters, optimiser states, log entropy coefficient, update count."""

    actor_params: nnx.State
    critic_params: nnx.State
    target_critic_params: nnx.State
    log_alpha: jax.Array  # [] float32
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    actor_rest: nnx.State  # non-Param variables of the actor (e.g. an encoder's), carried as-is
    critic_rest: nnx.State
    step: jax.Array  # [] int32, gradient updates done so far


@struct.dataclass
class TQCHyper:
    """TQC's dynamic hyperparameters: traced scalars, so members of a population may differ and
    two runs that differ only here share one compilation (float32 leaves)."""

    actor_lr: jax.Array
    critic_lr: jax.Array
    alpha_lr: jax.Array
    gamma: jax.Array
    tau: jax.Array
    target_entropy: jax.Array
    ent_coef_init: jax.Array
    max_grad_norm: jax.Array  # inf: no clipping (tqc.max_grad_norm null)
    weight_decay: jax.Array  # decoupled (AdamW) on actor and critics; 0: plain Adam

    @classmethod
    def from_config(cls, cfg: TQCConfig, action_dim: int = 1) -> TQCHyper:
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        critic_lr = cfg.learning_rate if cfg.critic_learning_rate is None \
            else cfg.critic_learning_rate
        alpha_lr = cfg.learning_rate if cfg.ent_coef_learning_rate is None \
            else cfg.ent_coef_learning_rate
        target = -float(action_dim) if cfg.target_entropy == "auto" else float(cfg.target_entropy)
        clip = float("inf") if cfg.max_grad_norm is None else float(cfg.max_grad_norm)
        return cls(actor_lr=f32(cfg.learning_rate), critic_lr=f32(critic_lr),
                   alpha_lr=f32(alpha_lr), gamma=f32(cfg.gamma), tau=f32(cfg.tau),
                   target_entropy=f32(target), ent_coef_init=f32(cfg.ent_coef_init),
                   max_grad_norm=f32(clip), weight_decay=f32(cfg.weight_decay))


# the metrics of one update (`update`): those every update has, and the actor side's, which
# only the updates that ran the actor have (policy_delay; `mean_metrics` averages them over
# those updates alone)
EVERY_UPDATE_METRICS = ("critic_loss", "alpha", "q_mean")
ACTOR_METRICS = ("actor_loss", "alpha_loss", "log_prob", "entropy")
METRIC_NAMES = EVERY_UPDATE_METRICS + ACTOR_METRICS


# --------------------------------------------------------------------------------------------
# Losses (pure, on fixed tensors)
# --------------------------------------------------------------------------------------------


def n_target_quantiles(tqc_cfg: TQCConfig) -> int:
    """Quantiles kept after truncation: N*M - top_quantiles_to_drop_per_net * N."""
    kept = (tqc_cfg.n_quantiles - tqc_cfg.top_quantiles_to_drop_per_net) * tqc_cfg.n_critics
    if kept < 1:
        raise ValueError(
            f"tqc.top_quantiles_to_drop_per_net={tqc_cfg.top_quantiles_to_drop_per_net} drops "
            f"all of tqc.n_quantiles={tqc_cfg.n_quantiles}")
    return kept


def soft_td_target(
    next_quantiles: jax.Array,
    next_log_prob: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    alpha: jax.Array | float,
    gamma: float,
) -> jax.Array:
    """r + (1 - terminated) gamma (z - alpha log pi(a'|s')) for every atom z of [B, T]."""
    batch = next_quantiles.shape[0]
    soft = next_quantiles - alpha * next_log_prob.reshape(batch, 1)  # [B, T]
    not_done = 1.0 - terminated.astype(soft.dtype).reshape(batch, 1)
    return reward.astype(soft.dtype).reshape(batch, 1) + not_done * gamma * soft


def truncated_quantile_target(
    next_quantiles: jax.Array,
    next_log_prob: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    alpha: jax.Array | float,
    gamma: float,
    n_keep: int,
) -> jax.Array:
    """y = r + (1 - terminated) gamma (sort(pool Z(s', a'))[:n_keep] - alpha log pi(a'|s')).

    TQC paper eq. (10)-(11); sb3-contrib TQC.train. next_quantiles [B, N, M] -> [B, n_keep].
    The update uses the equivalent `soft_td_target` + `truncation_mask` (no full sort).
    """
    batch = next_quantiles.shape[0]
    pooled = jnp.sort(next_quantiles.reshape(batch, -1), axis=-1)[:, :n_keep]  # [B, K]
    return soft_td_target(pooled, next_log_prob, reward, terminated, alpha, gamma)


_ARGMAX_DROP_LIMIT = 8  # truncation_mask: argmax rounds up to this many dropped atoms


def truncation_mask(pooled_quantiles: jax.Array, n_drop: int) -> jax.Array:
    """1.0 for the kept atoms of pooled [B, T] quantiles, 0.0 for the `n_drop` largest per row.

    Keeps the same multiset as sort-then-slice (ties are equal values) without a full sort:
    for the usual few dropped atoms, `n_drop` rounds of "mask the first argmax" (a handful of
    cheap [B, T] passes; XLA's CPU TopK custom call costs more than all of them); top_k for
    larger counts.
    """
    batch, n_atoms = pooled_quantiles.shape
    if n_drop == 0:
        return jnp.ones((batch, n_atoms), jnp.float32)
    if n_drop > _ARGMAX_DROP_LIMIT:
        _, top_index = jax.lax.top_k(pooled_quantiles, n_drop)  # [B, n_drop]
        dropped = jax.nn.one_hot(top_index, n_atoms, dtype=jnp.float32)
        return 1.0 - jnp.sum(dropped, axis=1)  # [B, T]
    index = jnp.arange(n_atoms)
    values = pooled_quantiles
    keep = jnp.ones((batch, n_atoms), bool)
    for _ in range(n_drop):
        hit = index == jnp.argmax(values, axis=-1)[:, None]  # one atom per row
        keep = keep & ~hit
        values = jnp.where(hit, -jnp.inf, values)
    return keep.astype(jnp.float32)


def _huber_parts(current, target, target_mask):
    """The loss and its gradient w.r.t. current ([B, N, M]), from ONE variadic reduction over
    the target axis: both sums read the same elementwise terms, and as one reduce XLA fuses
    them into it, so no [B, N*M, T] tensor is written to memory (two separate sums made XLA
    materialise the shared terms: three [B, N*M, T] buffers per update)."""
    batch, n_critics, n_quantiles = current.shape
    tau = (jnp.arange(n_quantiles, dtype=jnp.float32) + 0.5) / n_quantiles  # [M]
    tau = jnp.tile(tau, n_critics)[:, None]  # [N*M, 1], critic-major as current.reshape
    # [B, NM, T]: the target axis is the contiguous one, so both sums are row reductions
    delta = target[:, None, :] - current.reshape(batch, n_critics * n_quantiles, 1)
    weight = jnp.where(delta < 0, 1.0 - tau, tau) * target_mask[:, None, :]  # [B, NM, T]
    abs_delta = jnp.abs(delta)
    huber = jnp.where(abs_delta > 1.0, abs_delta - 0.5, 0.5 * delta * delta)
    # d loss / d current = -|tau - 1{delta < 0}| * clip(delta, -1, 1)   (Huber_1' = clip)
    zero = jnp.zeros((), jnp.float32)
    loss_rows, clip_sum = jax.lax.reduce(  # [B, NM] each
        (weight * huber, weight * jnp.clip(delta, -1.0, 1.0)), (zero, zero),
        lambda a, b: (a[0] + b[0], a[1] + b[1]), (2,))
    count = jnp.sum(target_mask) * (n_critics * n_quantiles)
    return jnp.sum(loss_rows) / count, -clip_sum.reshape(current.shape) / count


@jax.custom_vjp
def _fused_quantile_huber(current, target, target_mask):
    return _huber_parts(current, target, target_mask)[0]


def _fused_fwd(current, target, target_mask):
    loss, grad = _huber_parts(current, target, target_mask)
    return loss, (grad, target, target_mask)


def _fused_bwd(residuals, cotangent):
    grad, target, target_mask = residuals
    # targets are constants of the critic loss (computed under no_grad in sb3-contrib)
    return cotangent * grad, jnp.zeros_like(target), jnp.zeros_like(target_mask)


_fused_quantile_huber.defvjp(_fused_fwd, _fused_bwd)


def quantile_huber_loss(
    current_quantiles: jax.Array,
    target_quantiles: jax.Array,
    target_mask: jax.Array | None = None,
) -> jax.Array:
    """Mean of |tau_i - 1{delta < 0}| * Huber_1(delta), delta = y_j - Z_n,i (sb3-contrib).

    current [B, N, M], target [B, T] (constants: no gradient flows into them); tau_i =
    (i + 0.5) / M; kappa = 1; the mean runs over every (batch, critic, quantile, target)
    element, i.e. sb3_contrib.common.utils.quantile_huber_loss(sum_over_quantiles=False).
    `target_mask` [B, T] (1 keep, 0 drop) restricts the targets, e.g. to the truncated set;
    the mean is then over the kept targets only. Loss and gradient come from one fused pass.
    """
    target = jax.lax.stop_gradient(target_quantiles.astype(jnp.float32))
    if target_mask is None:
        target_mask = jnp.ones(target.shape, jnp.float32)
    return _fused_quantile_huber(current_quantiles, target,
                                 jax.lax.stop_gradient(target_mask.astype(jnp.float32)))


def actor_loss(alpha: jax.Array | float, log_prob: jax.Array, quantiles: jax.Array) -> jax.Array:
    """mean_b(alpha log pi(a_b|s_b) - mean_{n,m} Z_n,m(s_b, a_b)); quantiles [B, N, M]."""
    return actor_loss_from_q(alpha, log_prob, jnp.mean(quantiles, axis=(1, 2)))


def actor_loss_from_q(alpha: jax.Array | float, log_prob: jax.Array, q: jax.Array) -> jax.Array:
    """`actor_loss` given q_b = mean_{n,m} Z_n,m(s_b, a_b) [B] (CriticEnsemble.mean_value)."""
    return jnp.mean(alpha * log_prob.reshape(-1) - q.reshape(-1))


def entropy_coef_loss(
    log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float
) -> jax.Array:
    """-mean(log_alpha (log pi + target_entropy)), log pi held constant (SAC v2, sb3)."""
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))


# --------------------------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------------------------


def _is_encoder_path(path: tuple) -> bool:
    first = path[0] if path else None
    return getattr(first, "key", getattr(first, "name", None)) == "encoder"


def make_optimizer(
    learning_rate, max_grad_norm, encoder_lr: float | None = None, weight_decay=0.0
) -> optax.GradientTransformation:
    """Adam (AdamW with `weight_decay`) after global-norm clipping; encoder params at
    `encoder_lr` if given (never decayed).

    learning_rate, max_grad_norm and weight_decay may be traced values (the population's
    dynamic hyperparameters): Adam is `scale_by_adam` then a scale by -learning_rate (what
    optax.adam is; AdamW adds weight_decay * params between the two, as optax.adamw), and
    clipping at max_grad_norm = inf leaves the gradients exactly as they are. The optimiser
    state's structure does not depend on the values, so the transformation is rebuilt from the
    current values inside each update. encoder_lr (static) None: the encoder (if any) trains at
    `learning_rate`; 0.0: it is frozen.
    """
    main = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay),
                       optax.scale(-learning_rate))
    if encoder_lr is None:
        inner = main
    else:
        encoder_tx = optax.set_to_zero() if encoder_lr == 0.0 else optax.adam(encoder_lr)

        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "encoder" if _is_encoder_path(path) else "main", params)

        inner = optax.multi_transform({"main": main, "encoder": encoder_tx}, labels)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), inner)


# --------------------------------------------------------------------------------------------
# The learner
# --------------------------------------------------------------------------------------------


class FlatParams:
    """One parameter tree as one flat float vector and back (leaves in tree order)."""

    def __init__(self, abstract: Any):
        leaves, self.treedef = jax.tree.flatten(abstract)
        self.shapes = [tuple(x.shape) for x in leaves]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = sum(self.sizes)

    def ravel(self, tree: Any) -> jax.Array:
        return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(tree)])

    def unravel(self, flat: jax.Array) -> Any:
        leaves, start = [], 0
        for shape, n in zip(self.shapes, self.sizes):
            leaves.append(flat[start:start + n].reshape(shape))
            start += n
        return jax.tree.unflatten(self.treedef, leaves)

    def _is_tree(self, x: Any) -> bool:
        return jax.tree.structure(x) == self.treedef

    def ravel_like(self, tree: Any) -> Any:
        """`tree` with every subtree shaped like the parameters (Adam's moments) raveled."""
        return jax.tree.map(lambda sub: self.ravel(sub) if self._is_tree(sub) else sub, tree,
                            is_leaf=self._is_tree)

    def unravel_like(self, tree: Any) -> Any:
        """`ravel_like`'s inverse: every [size] vector of `tree` unraveled."""
        return jax.tree.map(lambda x: self.unravel(x) if getattr(x, "shape", None)
                            == (self.size,) else x, tree)


@dataclasses.dataclass(frozen=True, eq=False)
class TQC:
    """Static container of TQC's pure functions (hashable by identity; safe as a jit static)."""

    cfg: TQCConfig
    action_dim: int
    target_entropy: float
    default_hyper: TQCHyper  # the config's values, used when a call passes no hyper
    actor_graphdef: Any
    critic_graphdef: Any
    init: Callable[[jax.Array], TQCState]
    act: Callable[[TQCState, Observation, jax.Array], jax.Array]
    act_deterministic: Callable[[TQCState, Observation], jax.Array]
    update: Callable[[TQCState, Batch, jax.Array], tuple[TQCState, dict]]
    update_many: Callable[..., tuple[TQCState, dict]]
    actor: Callable[[TQCState], nnx.Module]
    critic: Callable[[TQCState], nnx.Module]
    flatten: Callable[[TQCState], TQCState]
    unflatten: Callable[[TQCState], TQCState]


def make_tqc(
    tqc_cfg: TQCConfig,
    obs_example: Observation,
    action_dim: int,
    encoder_factory: EncoderFactory | None = None,
    encoder_lr: float | None = None,
    axis_name: str | None = None,
    batched_critics: bool = False,
) -> TQC:
    """Build the TQC learner for one unbatched `obs_example` and `action_dim` actions in [-1, 1].

    `batched_critics`: the critic ensemble's layers as one batched matmul each (the GPU form,
    `networks.critic_form`); the same parameters and, to float rounding, the same numbers.

    With `axis_name`, gradients and metrics are `lax.pmean`-ed over that named axis before the
    optimiser steps (data-parallel training); without it nothing is averaged.
    """
    cfg = tqc_cfg
    n_drop = cfg.top_quantiles_to_drop_per_net * cfg.n_critics
    n_target_quantiles(cfg)  # validates the drop count
    if cfg.policy_delay < 1:
        raise ValueError(f"tqc.policy_delay must be >= 1, got {cfg.policy_delay}")
    if cfg.ent_coef_init <= 0:
        raise ValueError(f"tqc.ent_coef_init must be > 0, got {cfg.ent_coef_init}")
    default_hyper = TQCHyper.from_config(cfg, action_dim)
    target_entropy = float(default_hyper.target_entropy)

    def optimisers(h: TQCHyper):
        """(actor, critic, alpha) transformations at the hyperparameters h (may be traced)."""
        return (make_optimizer(h.actor_lr, h.max_grad_norm, encoder_lr, h.weight_decay),
                make_optimizer(h.critic_lr, h.max_grad_norm, encoder_lr, h.weight_decay),
                optax.chain(optax.scale_by_adam(), optax.scale(-h.alpha_lr)))

    def build(key: jax.Array):
        return make_networks(cfg, obs_example, action_dim, nnx.Rngs(key), encoder_factory,
                             batched_critics=batched_critics)

    abstract_actor, abstract_critic = nnx.eval_shape(lambda: build(jax.random.key(0)))
    actor_graphdef = nnx.split(abstract_actor, nnx.Param, ...)[0]
    critic_graphdef = nnx.split(abstract_critic, nnx.Param, ...)[0]

    def pmean(tree):
        return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

    abstract_actor_params = nnx.split(abstract_actor, nnx.Param, ...)[1]
    abstract_critic_params = nnx.split(abstract_critic, nnx.Param, ...)[1]
    actor_flat = FlatParams(abstract_actor_params)
    critic_flat = FlatParams(abstract_critic_params)

    def actor_module(state: TQCState, params=None) -> nnx.Module:
        params = state.actor_params if params is None else params
        if isinstance(params, jax.Array):  # the flat form (`flatten`)
            params = actor_flat.unravel(params)
        return nnx.merge(actor_graphdef, params, state.actor_rest)

    def critic_module(state: TQCState, params=None) -> nnx.Module:
        params = state.critic_params if params is None else params
        if isinstance(params, jax.Array):
            params = critic_flat.unravel(params)
        return nnx.merge(critic_graphdef, params, state.critic_rest)

    # the state's fields that hold a network's parameters or their Adam moments
    flat_fields = {"actor_params": (actor_flat, False), "critic_params": (critic_flat, False),
                   "target_critic_params": (critic_flat, False),
                   "actor_opt_state": (actor_flat, True), "critic_opt_state": (critic_flat, True)}

    def flatten(state: TQCState) -> TQCState:
        """The state with every parameter tree (and its Adam moments) as one flat vector."""
        return state.replace(**{
            name: flat.ravel_like(getattr(state, name)) if moments
            else flat.ravel(getattr(state, name))
            for name, (flat, moments) in flat_fields.items()})

    def unflatten(state: TQCState) -> TQCState:
        """`flatten`'s inverse."""
        return state.replace(**{
            name: flat.unravel_like(getattr(state, name)) if moments
            else flat.unravel(getattr(state, name))
            for name, (flat, moments) in flat_fields.items()})

    def init(key: jax.Array, hyper: TQCHyper | None = None) -> TQCState:
        h = default_hyper if hyper is None else hyper
        actor_tx, critic_tx, alpha_tx = optimisers(h)
        actor, critic = build(key)
        _, actor_params, actor_rest = nnx.split(actor, nnx.Param, ...)
        _, critic_params, critic_rest = nnx.split(critic, nnx.Param, ...)
        log_alpha = jnp.log(jnp.asarray(h.ent_coef_init, jnp.float32))
        return TQCState(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=jax.tree.map(jnp.array, critic_params),  # a copy
            log_alpha=log_alpha,
            actor_opt_state=actor_tx.init(actor_params),
            critic_opt_state=critic_tx.init(critic_params),
            alpha_opt_state=alpha_tx.init(log_alpha),
            actor_rest=actor_rest,
            critic_rest=critic_rest,
            step=jnp.zeros((), jnp.int32),
        )

    def act(state: TQCState, obs: Observation, key: jax.Array) -> jax.Array:
        mean, log_std = actor_module(state)(obs)
        return sample_action(mean, log_std, key)[0]

    def act_deterministic(state: TQCState, obs: Observation) -> jax.Array:
        return deterministic_action(actor_module(state)(obs)[0])

    def update(state: TQCState, batch: Batch, key: jax.Array, hyper: TQCHyper | None = None,
               run_actor: bool | None = None) -> tuple[TQCState, dict]:
        """One update; `run_actor` (static) True / False says whether this is a
        policy_delay-th update when the caller knows it (no conditional), None decides from
        state.step (a `lax.cond` when policy_delay > 1)."""
        h = default_hyper if hyper is None else hyper
        actor_tx, critic_tx, alpha_tx = optimisers(h)
        key_next, key_pi = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)  # the value before this update's alpha step

        # 1. truncated target from the target critics (no gradient)
        next_mean, next_log_std = actor_module(state)(batch.next_obs)
        next_action, next_log_prob = sample_action(next_mean, next_log_std, key_next)
        next_quantiles = critic_module(state, state.target_critic_params)(
            batch.next_obs, next_action)  # [B, N, M]
        pooled = next_quantiles.reshape(next_quantiles.shape[0], -1)  # [B, N*M]
        # the truncated target as a mask over all pooled atoms (same multiset as sorting)
        target = jax.lax.stop_gradient(soft_td_target(
            pooled, next_log_prob, batch.reward, batch.terminated, alpha, h.gamma))  # [B, NM]
        target_mask = truncation_mask(jax.lax.stop_gradient(pooled), n_drop)  # [B, NM]

        # 2. critic step
        def critic_loss_fn(critic_params):
            current = critic_module(state, critic_params)(batch.obs, batch.action)  # [B, N, M]
            return quantile_huber_loss(current, target, target_mask), current

        (critic_loss, current), critic_grads = jax.value_and_grad(
            critic_loss_fn, has_aux=True)(state.critic_params)
        critic_updates, critic_opt_state = critic_tx.update(
            pmean(critic_grads), state.critic_opt_state, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, critic_updates)
        new_critic = critic_module(state, critic_params)

        # 3. actor and entropy coefficient (every policy_delay-th update)
        def actor_step(operand):
            actor_params, actor_opt_state, log_alpha, alpha_opt_state = operand

            def actor_loss_fn(params):
                mean, log_std = actor_module(state, params)(batch.obs)
                action, log_prob = sample_action(mean, log_std, key_pi)
                q = new_critic.mean_value(batch.obs, action)  # [B]
                return actor_loss_from_q(alpha, log_prob, q), log_prob

            (a_loss, log_prob), actor_grads = jax.value_and_grad(
                actor_loss_fn, has_aux=True)(actor_params)
            alpha_loss, alpha_grad = jax.value_and_grad(entropy_coef_loss)(
                log_alpha, log_prob, h.target_entropy)
            actor_updates, actor_opt_state = actor_tx.update(
                pmean(actor_grads), actor_opt_state, actor_params)
            alpha_update, alpha_opt_state = alpha_tx.update(
                pmean(alpha_grad), alpha_opt_state, log_alpha)
            new = (optax.apply_updates(actor_params, actor_updates), actor_opt_state,
                   log_alpha + alpha_update, alpha_opt_state)
            return new, (a_loss, alpha_loss, jnp.mean(log_prob), jnp.ones((), jnp.float32))

        def skip_actor(operand):
            zero = jnp.zeros((), jnp.float32)
            return operand, (zero, zero, zero, zero)

        operand = (state.actor_params, state.actor_opt_state, state.log_alpha,
                   state.alpha_opt_state)
        if cfg.policy_delay == 1 or run_actor is True:
            new_actor, actor_metrics = actor_step(operand)
        elif run_actor is False:
            new_actor, actor_metrics = skip_actor(operand)
        else:
            do_actor = (state.step + 1) % cfg.policy_delay == 0
            new_actor, actor_metrics = jax.lax.cond(do_actor, actor_step, skip_actor, operand)
        actor_params, actor_opt_state, log_alpha, alpha_opt_state = new_actor
        a_loss, alpha_loss, log_prob_mean, actor_updated = actor_metrics

        # 4. Polyak averaging of the target critics
        target_critic_params = optax.incremental_update(
            critic_params, state.target_critic_params, h.tau)

        new_state = state.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            log_alpha=log_alpha,
            actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state,
            alpha_opt_state=alpha_opt_state,
            step=state.step + 1,
        )
        metrics = pmean({
            "critic_loss": critic_loss,
            "actor_loss": a_loss,
            "alpha_loss": alpha_loss,
            "alpha": alpha,
            "q_mean": jnp.mean(current),
            "log_prob": log_prob_mean,
            "entropy": -log_prob_mean,
            "actor_updated": actor_updated,
        })
        return new_state, metrics

    def update_many(
        state: TQCState,
        sample_fn: Callable[[jax.Array], Batch],
        key: jax.Array,
        n: int,
        hyper: TQCHyper | None = None,
        aligned: bool = False,
    ) -> tuple[TQCState, dict]:
        """n updates as one lax.scan; sample_fn(key) -> Batch is called inside the scan body.

        `aligned`: the caller guarantees state.step % policy_delay == 0 (e.g. every call makes
        the same n updates, a multiple of policy_delay). With n a multiple of policy_delay the
        scan then runs groups of policy_delay updates whose last one runs the actor, with no
        conditional: the same updates as the per-update decision.
        """
        k = cfg.policy_delay

        def one(carry: TQCState, step_key: jax.Array, run_actor: bool | None):
            sample_key, update_key = jax.random.split(step_key)
            return update(carry, sample_fn(sample_key), update_key, hyper, run_actor)

        keys = jax.random.split(key, n)
        if k == 1 or not aligned or n % k:
            state, per_update = jax.lax.scan(lambda c, sk: one(c, sk, None), state, keys)
            return state, mean_metrics(per_update)

        def group(carry: TQCState, group_keys: jax.Array):
            metrics = []
            for j in range(k):
                carry, m = one(carry, group_keys[j], j == k - 1)
                metrics.append(m)
            return carry, jax.tree.map(lambda *x: jnp.stack(x), *metrics)

        state, per_group = jax.lax.scan(group, state, keys.reshape(n // k, k))
        return state, mean_metrics(jax.tree.map(lambda x: x.reshape(n, *x.shape[2:]),
                                                per_group))

    return TQC(
        cfg=cfg,
        action_dim=action_dim,
        target_entropy=target_entropy,
        default_hyper=default_hyper,
        actor_graphdef=actor_graphdef,
        critic_graphdef=critic_graphdef,
        init=init,
        act=act,
        act_deterministic=act_deterministic,
        update=update,
        update_many=update_many,
        actor=actor_module,
        critic=critic_module,
        flatten=flatten,
        unflatten=unflatten,
    )


def mean_metrics(per_update: dict) -> dict:
    """Means over the leading (update) axis; actor-side metrics over updates that ran the actor."""
    n_actor = jnp.sum(per_update["actor_updated"], axis=0)
    out = {}
    for name, values in per_update.items():
        if name in ACTOR_METRICS:
            out[name] = jnp.sum(values, axis=0) / jnp.maximum(n_actor, 1.0)
        elif name == "actor_updated":
            out["actor_updates"] = n_actor
        else:
            out[name] = jnp.mean(values, axis=0)
    return out
