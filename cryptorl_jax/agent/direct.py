"""The direct learner (agent.kind direct): a deterministic policy trained by gradient ascent on
the after-cost objective, with no critic.

The policy is TQC's actor network (`networks.Actor`: the same observation, encoder adapter and
trunk) read deterministically, a_t = tanh(mean); its log-std head is never used, so it gets no
gradient and Adam leaves it as initialised. One update is one Adam step on -J(theta), where
J is an objective the caller computes from the policy's parameters: `training.direct_step`
rolls the env's ledger forward over sampled episodes with the policy's actions and returns the
episodes' rewards, so the gradient flows through the ledger (exposure, cost, NAV, the drifted
weight and the agent state the policy reads next hour). This module holds the policy, its
optimiser and the objectives over a batch of reward paths (`episode_objective`); it knows no
env (agent, env and encoder are peers).

Objectives (agent.direct.objective), over rewards r [B, H] of B episodes of H hours, each
r_t = reward_scale pnl_t - churn u_t - smooth u_t^2 (the env's reward, `accounting.reward`):
  log_growth  J = mean_{b,t} r_bt: the mean hourly log growth after costs, minus the penalties;
  sharpe      J = mean_b mean_t(r_bt) / sqrt(var_t(r_bt) + eps): a differentiable Sharpe of
              each episode's rewards (per hour, not annualised).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from cryptorl_jax.agent.networks import (
    Actor,
    EncoderFactory,
    Observation,
    deterministic_action,
    feature_dim,
)
from cryptorl_jax.agent.tqc import make_optimizer
from cryptorl_jax.config import DirectConfig

OBJECTIVES = ("log_growth", "sharpe")
# variance floor of the Sharpe objective: (1e-4 reward units)^2, far below an hour's spread
SHARPE_EPS = 1e-8


@struct.dataclass
class DirectState:
    """Learner state: the policy's parameters, its optimiser state, the update count."""

    params: nnx.State
    opt_state: Any
    rest: nnx.State  # non-Param variables of the policy (e.g. an encoder's), carried as-is
    step: jax.Array  # [] int32


@struct.dataclass
class DirectHyper:
    """The direct learner's dynamic hyperparameters (traced float32 leaves)."""

    learning_rate: jax.Array

    @classmethod
    def from_config(cls, cfg: DirectConfig) -> DirectHyper:
        return cls(learning_rate=jnp.asarray(cfg.learning_rate, jnp.float32))


def episode_objective(rewards: jax.Array, objective: str) -> jax.Array:
    """J of rewards [B, H] (module docstring): the mean reward, or the mean per-episode
    Sharpe of the rewards."""
    if objective == "log_growth":
        return jnp.mean(rewards)
    if objective == "sharpe":
        mean = jnp.mean(rewards, axis=1)
        var = jnp.mean(jnp.square(rewards - mean[:, None]), axis=1)
        return jnp.mean(mean * jax.lax.rsqrt(var + SHARPE_EPS))
    raise ValueError(f"agent.direct.objective must be one of {OBJECTIVES}, got {objective!r}")


ObjectiveFn = Callable[[nnx.Module], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True, eq=False)
class Direct:
    """Static container of the direct learner's pure functions (hashable by identity).

    `init(key, hyper)` a fresh state; `act_deterministic(state, obs [B, ...])` the actions
    [B, A]; `policy(state, params)` the policy module; `update(state, objective_fn, hyper)`
    one Adam step on -objective_fn(policy module), returning the new state and the metrics
    (objective, grad_norm and objective_fn's aux)."""

    cfg: DirectConfig
    action_dim: int
    default_hyper: DirectHyper
    graphdef: Any
    init: Callable[..., DirectState]
    act_deterministic: Callable[[DirectState, Observation], jax.Array]
    policy: Callable[..., nnx.Module]
    update: Callable[..., tuple[DirectState, dict]]


def make_direct(cfg: DirectConfig, net_arch: Sequence[int], obs_example: Observation,
                action_dim: int = 1, *, layer_norm: bool = False,
                encoder_factory: EncoderFactory | None = None, encoder_lr: float | None = None,
                axis_name: str | None = None) -> Direct:
    """The direct learner for one unbatched `obs_example`: TQC's actor with `net_arch` hidden
    widths (and its encoder, built by `encoder_factory`, trained at `encoder_lr` as in TQC).
    With `axis_name` the gradients and metrics are `lax.pmean`-ed over that axis (data
    parallelism)."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"agent.direct.objective must be one of {OBJECTIVES}, got "
                         f"{cfg.objective!r}")
    default_hyper = DirectHyper.from_config(cfg)
    clip = float("inf") if cfg.max_grad_norm is None else float(cfg.max_grad_norm)

    def build(key: jax.Array) -> Actor:
        rngs = nnx.Rngs(key)
        encoder = encoder_factory(rngs) if encoder_factory is not None else None
        return Actor(feature_dim(obs_example, encoder), action_dim, tuple(net_arch),
                     layer_norm=layer_norm, encoder=encoder, rngs=rngs)

    graphdef = nnx.split(nnx.eval_shape(lambda: build(jax.random.key(0))), nnx.Param, ...)[0]

    def optimiser(h: DirectHyper) -> optax.GradientTransformation:
        return make_optimizer(h.learning_rate, clip, encoder_lr)

    def pmean(tree):
        return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

    def policy(state: DirectState, params=None) -> nnx.Module:
        return nnx.merge(graphdef, state.params if params is None else params, state.rest)

    def init(key: jax.Array, hyper: DirectHyper | None = None) -> DirectState:
        h = default_hyper if hyper is None else hyper
        _, params, rest = nnx.split(build(key), nnx.Param, ...)
        return DirectState(params=params, opt_state=optimiser(h).init(params), rest=rest,
                           step=jnp.zeros((), jnp.int32))

    def act_deterministic(state: DirectState, obs: Observation) -> jax.Array:
        return deterministic_action(policy(state)(obs)[0])

    def update(state: DirectState, objective_fn: ObjectiveFn,
               hyper: DirectHyper | None = None) -> tuple[DirectState, dict]:
        h = default_hyper if hyper is None else hyper

        def loss(params):
            objective, aux = objective_fn(policy(state, params))
            return -objective, (objective, aux)

        (_, (objective, aux)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        grads = pmean(grads)
        updates, opt_state = optimiser(h).update(grads, state.opt_state, state.params)
        new = state.replace(params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, step=state.step + 1)
        metrics = pmean({"objective": objective, "grad_norm": optax.global_norm(grads), **aux})
        return new, metrics

    return Direct(cfg=cfg, action_dim=action_dim, default_hyper=default_hyper,
                  graphdef=graphdef, init=init, act_deterministic=act_deterministic,
                  policy=policy, update=update)
