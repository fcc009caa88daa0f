"""What a pre-training returns: the best epoch's MAE and encoder, history and quality report."""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from cryptorl_jax.config import EncoderConfig
from cryptorl_jax.encoder.mae import MAEEncoder
from cryptorl_jax.encoder.windows import WindowRanges


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Validation masked-token MSE of the MAE and of the two baselines, on the same masks."""

    val_mse: float
    window_mean_mse: float
    last_value_mse: float
    n_val_windows: int
    n_masked_tokens: int  # per window

    @property
    def beats_baselines(self) -> bool:
        return self.val_mse < min(self.window_mean_mse, self.last_value_mse)

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**dataclasses.asdict(self), "beats_baselines": self.beats_baselines}


@dataclasses.dataclass
class PretrainResult:
    """Best-validation MAE, its encoder, loss history and quality report."""

    encoder_graphdef: nnx.GraphDef
    encoder_state: nnx.State
    mae_graphdef: nnx.GraphDef
    mae_state: nnx.State
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss, seconds
    report: QualityReport
    ranges: WindowRanges
    best_epoch: int
    n_features: int
    window: int
    enc_cfg: EncoderConfig

    @property
    def encoder(self) -> MAEEncoder:
        """A fresh MAEEncoder module holding the best parameters."""
        return nnx.merge(self.encoder_graphdef, self.encoder_state)

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of the epochs after the first (the first includes compilation)."""
        times = [h["seconds"] for h in self.history]
        return float(np.mean(times[1:] if len(times) > 1 else times))
