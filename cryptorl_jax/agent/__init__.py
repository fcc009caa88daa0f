"""agent: TQC networks (Flax NNX), pure TQC losses/update, device replay buffer; the direct
learner (`agent.direct`, imported from its module)."""

from cryptorl_jax.agent import replay
from cryptorl_jax.agent.networks import (
    Actor,
    CriticEnsemble,
    deterministic_action,
    make_networks,
    observation_features,
    sample_action,
)
from cryptorl_jax.agent.replay import ReplayState
from cryptorl_jax.agent.tqc import (
    TQC,
    Batch,
    TQCState,
    actor_loss,
    entropy_coef_loss,
    make_tqc,
    quantile_huber_loss,
    truncated_quantile_target,
)

__all__ = [
    "TQC", "Actor", "Batch", "CriticEnsemble", "ReplayState", "TQCState", "actor_loss",
    "deterministic_action", "entropy_coef_loss", "make_networks", "make_tqc",
    "observation_features", "quantile_huber_loss", "replay", "sample_action",
    "truncated_quantile_target",
]
