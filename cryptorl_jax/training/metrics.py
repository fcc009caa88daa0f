"""The training metrics of a member's chunk, declared once (`StepMetrics`).

Every iteration of the chunk's scan makes a `StepRecord` (what the envs' step and the updates
produced); `StepMetrics.of(record)` holds that iteration's value of every metric, one field per
metric, and the scan sums them. A field's `reduce` says how the chunk reports its sum:
  "mean"      the mean over the chunk's steps;
  "sum"       the sum over them;
  "learning"  the mean over the steps that ran updates (the agent's metrics, `AGENT_METRICS`,
              0 before learning starts);
  "internal"  a sum the chunk's report uses but does not report.
`chunk_metrics` is the chunk's report: the reduced sums and what the chunk's end says (the
running NAV, the entropy coefficient, the curriculum's coefficients, the update count).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from cryptorl_jax.agent.tqc import METRIC_NAMES
from cryptorl_jax.env.trading import Coeffs

# the update metrics a chunk reports: the agent's (`tqc.METRIC_NAMES`) but alpha, which the
# chunk reports as the coefficient at its end, and log_prob, which is -entropy
AGENT_METRICS = tuple(name for name in METRIC_NAMES if name not in ("alpha", "log_prob"))


@struct.dataclass
class StepRecord:
    """What one iteration of a member's chunk produced, as its metrics read it."""

    reward: jax.Array  # [n_envs] the rewards the agent learns from
    info: dict[str, jax.Array]  # [n_envs] each: `trading.step`'s info (pnl, cost, nav, ...)
    terminated: jax.Array  # [n_envs] bool: the step ruined the book
    done: jax.Array  # [n_envs] bool: the episode ended (terminated or truncated)
    learning: jax.Array  # bool []: this iteration ran the updates
    updates: dict[str, jax.Array]  # the updates' metrics (`tqc.mean_metrics`; 0 unless learning)


def _metric(reduce: str):
    return struct.field(metadata={"reduce": reduce})


@struct.dataclass
class StepMetrics:
    """One iteration's value of every metric (float32 []), or their sums over a chunk."""

    reward: jax.Array = _metric("mean")
    pnl: jax.Array = _metric("mean")
    cost: jax.Array = _metric("mean")
    financing: jax.Array = _metric("mean")
    churn_penalty: jax.Array = _metric("mean")
    smooth_penalty: jax.Array = _metric("mean")
    turnover: jax.Array = _metric("mean")
    exposure: jax.Array = _metric("mean")  # mean |exposure|
    episodes: jax.Array = _metric("sum")  # episodes that ended
    ruined: jax.Array = _metric("sum")  # of which ruined
    episode_nav_sum: jax.Array = _metric("internal")  # final NAVs of the episodes that ended
    learning: jax.Array = _metric("internal")  # steps that ran updates
    agent: dict[str, jax.Array] = _metric("learning")  # AGENT_METRICS

    @classmethod
    def of(cls, r: StepRecord) -> StepMetrics:
        info = r.info
        return cls(reward=jnp.mean(r.reward), pnl=jnp.mean(info["pnl"]),
                   cost=jnp.mean(info["cost"]), financing=jnp.mean(info["financing"]),
                   churn_penalty=jnp.mean(info["churn"]),
                   smooth_penalty=jnp.mean(info["smooth"]),
                   turnover=jnp.mean(info["turnover"]),
                   exposure=jnp.mean(jnp.abs(info["exposure"])),
                   episodes=jnp.sum(r.done).astype(jnp.float32),
                   ruined=jnp.sum(r.terminated).astype(jnp.float32),
                   episode_nav_sum=jnp.sum(jnp.where(r.done, info["nav"], 0.0)),
                   learning=r.learning.astype(jnp.float32),
                   agent={name: r.updates[name] * r.learning for name in AGENT_METRICS})

    @classmethod
    def zeros(cls) -> StepMetrics:
        """The sums before a chunk's first step."""
        zero = jnp.zeros((), jnp.float32)
        return cls(**{f.name: zero for f in dataclasses.fields(cls) if f.name != "agent"},
                   agent={name: zero for name in AGENT_METRICS})

    def reduce(self, n_steps: int) -> dict[str, jax.Array]:
        """The reported metrics of a chunk of n_steps steps whose sums these are."""
        n_learn = jnp.maximum(self.learning, 1.0)
        out = {}
        for f in dataclasses.fields(self):
            how, value = f.metadata["reduce"], getattr(self, f.name)
            if how == "mean":
                out[f.name] = value / float(n_steps)
            elif how == "sum":
                out[f.name] = value
            elif how == "learning":
                out.update({name: v / n_learn for name, v in value.items()})
        return out


def chunk_metrics(sums: StepMetrics, n_steps: int, nav: jax.Array, log_alpha: jax.Array,
                  coeffs: Coeffs, updates_per_step: int) -> dict[str, jax.Array]:
    """A member's report of a chunk of n_steps steps: the reduced sums, the mean final NAV of
    the episodes that ended in it (the running NAV if none did), the running NAV (the mean of
    the envs' `nav`), alpha = exp(log_alpha), the curriculum's coefficients at its end and its
    update count."""
    metrics = sums.reduce(n_steps)
    running_nav = jnp.mean(nav)
    metrics["episode_nav"] = jnp.where(sums.episodes > 0,
                                       sums.episode_nav_sum / jnp.maximum(sums.episodes, 1.0),
                                       running_nav)
    metrics["nav"] = running_nav
    metrics["alpha"] = jnp.exp(log_alpha)
    metrics["churn_coef"] = coeffs.churn
    metrics["smooth_coef"] = coeffs.smooth
    metrics["updates"] = sums.learning * updates_per_step
    return metrics
