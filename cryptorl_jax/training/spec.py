"""What the compiled training step is built from (`TrainerSpec`) and what it takes per member
(`Hyper`).

`TrainerSpec` is frozen and hashable: every setting that fixes a shape or a code path (network
sizes, quantiles, critics, batch, envs, buffer, window, episode length, the encoder's mode and
sizes, the devices, the population size, the curriculum's phase ends, the learner and the
direct learner's settings). It is the only input of
`training.trainer.make_train` and the key of the trainer cache, so a setting read inside the step
cannot be missing from the key: the step only sees the spec.

`Hyper` holds the dynamic hyperparameters as traced float32 leaves: the actor's, the critics'
and the entropy coefficient's learning rates, gamma, tau, target entropy, initial entropy
coefficient, max grad norm, weight decay, reward scale, observation noise, the curriculum's
churn and smoothness schedules, and the direct learner's learning rate (agent.kind direct).
A population stacks one `Hyper` per member ([P] leaves); two runs that differ only in these
values share one compilation. The config keys behind them are `HYPER_KEYS`, declared once on
the config's fields (`config.hyper`); the spec's copy of the config has them neutralised
(`config.neutralised`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from cryptorl_jax.agent.direct import DirectHyper
from cryptorl_jax.agent.tqc import TQCHyper
from cryptorl_jax.config import (
    AgentConfig,
    Config,
    EncoderConfig,
    EnvConfig,
    TQCConfig,
    hyper_keys,
    neutralised,
)

# config keys whose values are dynamic (Hyper leaves), not part of the compiled step: declared
# once, on the config's fields (`config.hyper`)
HYPER_KEYS = hyper_keys()
# keys that do not enter the training step at all (data, seeds, outputs, bookkeeping;
# train.demean_returns changes the training slice's returns, not the program)
_OUTSIDE_STEP = ("seed", "run_name", "data.", "features.", "regimes.", "wfo.", "output.",
                 "tune.", "train.checkpoint_every_chunks", "train.keep_checkpoints",
                 "train.n_seeds", "train.demean_returns")


def is_hyper_key(key: str) -> bool:
    return key in HYPER_KEYS


def enters_the_step(key: str) -> bool:
    """Whether a config key is read by the compiled training step (as spec or as Hyper)."""
    return not any(key == p or (p.endswith(".") and key.startswith(p)) for p in _OUTSIDE_STEP)


@struct.dataclass
class Hyper:
    """One member's dynamic hyperparameters (or a population's, with [P] leading axes)."""

    tqc: TQCHyper
    reward_scale: jax.Array
    obs_noise: jax.Array  # sd of the training observations' noise, in column sds
    churn: jax.Array  # [n_phases, 2] curriculum churn schedule (start, end per phase)
    smooth: jax.Array  # [n_phases, 2]
    direct: DirectHyper  # the direct learner's (agent.kind direct; unused by TQC)

    @classmethod
    def from_config(cls, cfg: Config, action_dim: int = 1) -> Hyper:
        c = cfg.train.curriculum
        return cls(tqc=TQCHyper.from_config(cfg.tqc, action_dim),
                   reward_scale=jnp.asarray(cfg.env.reward_scale, jnp.float32),
                   obs_noise=jnp.asarray(cfg.train.obs_noise, jnp.float32),
                   churn=jnp.asarray(c.churn, jnp.float32),
                   smooth=jnp.asarray(c.smooth, jnp.float32),
                   direct=DirectHyper.from_config(cfg.agent.direct))


def stack(trees: Sequence[Any]) -> Any:
    """The trees' leaves stacked on a leading axis: a population's Hyper from its members',
    a batch of segments' data, keys or encoder parameters from theirs."""
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


@dataclass(frozen=True)
class Member:
    """One member of a population: its seed (its PRNG stream) and its hyperparameters."""

    seed: int
    hyper: Hyper


def members_from_config(cfg: Config, n: int | None = None) -> list[Member]:
    """n (default `train.n_seeds`) members with seeds 0..n-1 and the config's hyperparameters."""
    hyper = Hyper.from_config(cfg)
    return [Member(seed=i, hyper=hyper) for i in range(cfg.train.n_seeds if n is None else n)]


def _spec_agent(agent: AgentConfig) -> AgentConfig:
    """The spec's copy of the agent section: the default one for TQC, the direct settings with
    their dynamic keys neutralised for direct."""
    if agent.kind == "tqc":
        return AgentConfig()
    return dataclasses.replace(agent, direct=neutralised(agent.direct))


@dataclass(frozen=True)
class TrainerSpec:
    """Everything the compiled step's shapes and code paths depend on (hashable)."""

    env: EnvConfig  # reward_scale neutralised (a Hyper leaf)
    tqc: TQCConfig  # learning rates, gamma, tau, entropy, grad norm neutralised (Hyper)
    encoder: EncoderConfig | str  # the mode alone unless the encoder runs inside the step
    n_features: int
    embedding_dim: int | None
    total_env_steps: int
    n_envs: int
    steps_per_chunk: int
    devices: int | str
    population: int  # members in all: segments x seeds per segment
    parallel: str  # "data" | "population"
    phase_ends: tuple[float, ...]
    n_phases: int
    source: str | None = field(default=None, compare=False, hash=False)
    segments: int = 1  # K: walk-forward segments trained as members, each with its own data
    # the learner (agent.kind) and, for direct, its settings (learning rate neutralised); a
    # TQC spec holds the default section, so direct settings never recompile TQC
    agent: AgentConfig = AgentConfig()

    @classmethod
    def from_config(cls, cfg: Config, n_features: int, embedding_dim: int | None = None,
                    population: int | None = None, segments: int = 1) -> TrainerSpec:
        """`population` members per segment (default train.n_seeds) times `segments`."""
        t = cfg.train
        encoder: Any = cfg.encoder if cfg.encoder.mode == "pretrained-finetune" \
            else cfg.encoder.mode
        return cls(env=neutralised(cfg.env), tqc=neutralised(cfg.tqc),
                   encoder=encoder, n_features=int(n_features),
                   embedding_dim=None if embedding_dim is None else int(embedding_dim),
                   total_env_steps=t.total_env_steps, n_envs=t.n_envs,
                   steps_per_chunk=t.steps_per_chunk, devices=t.devices,
                   population=(t.n_seeds if population is None else int(population))
                   * int(segments),
                   parallel=t.parallel,
                   phase_ends=tuple(t.curriculum.phase_ends),
                   n_phases=len(t.curriculum.phase_ends), source=cfg.source,
                   segments=int(segments), agent=_spec_agent(cfg.agent))

    @property
    def encoder_mode(self) -> str:
        return self.encoder if isinstance(self.encoder, str) else self.encoder.mode
