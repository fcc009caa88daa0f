"""The sections the agent learns with: encoder, environment, TQC, training and its curriculum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptorl_jax.config.dynamic import hyper


@dataclass(frozen=True)
class EncoderConfig:
    mode: Literal["none", "random", "pretrained-frozen", "pretrained-finetune"] = (
        "pretrained-frozen"
    )
    patch_size: int = 1
    d_model: int = 64
    depth: int = 2
    n_heads: int = 4
    mlp_ratio: int = 2
    decoder_dim: int = 32
    decoder_depth: int = 1
    mask_ratio: float = 0.5
    pooling: Literal["mean", "last"] = "mean"
    epochs: int = 90
    batch_size: int = 256
    batches_per_epoch: int | None = None  # None = every train window once per epoch
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    patience: int = 10
    val_fraction: float = 0.1
    finetune_learning_rate: float = 1e-5



@dataclass(frozen=True)
class EnvConfig:
    fee_bps: float = 5.0
    slippage_bps: float = 2.0
    # Vol targeting (docs/architecture.md, "Vol targeting without mechanical churn"): L_t =
    # min(target / max(s_t, floor), cap) with s_t an exponentially weighted std of the last
    # vol_window hourly returns (half-life vol_halflife_hours; null: equal weights) scaled by
    # sqrt(vol_horizon_hours). The defaults state the target in annual terms (H = 8,760) near
    # BTC's typical vol (median EWMA vol 0.52 over 2019-12 .. 2025-07), so action 1 holds about
    # one unit of NAV instead of sitting at the cap, and the estimate moves slowly enough not to
    # make trades by itself; the original system's settings (0.05 daily over 24 h, no band) are
    # in configs/full.yaml.
    target_volatility: float = 0.5  # in vol_horizon_hours units: annual by default
    vol_window: int = 480  # 20 days
    vol_halflife_hours: float | None = 96.0  # 4 days; null: the plain rolling std
    vol_horizon_hours: int = 8760
    max_leverage: float = 2.0
    vol_floor: float = 0.1  # in vol_horizon_hours units (0.1 a year: far below any BTC vol)
    # No-trade band on the exposure: trade to the target a_t L_t only when it differs from the
    # drifted weight w_t by more than this (units of NAV); 0 trades every change.
    no_trade_band: float = 0.1
    reward_scale: float = hyper(100.0, neutral=1.0)
    window: int = 64  # observation window W (hours)
    episode_length: int = 2048
    ruin_nav: float = 0.5
    # Financing of leverage and shorts, a year's rate on the borrowed notional (an assumed
    # 5 %: roughly a USD funding rate; 0 turns it off). Charged hourly at rate / 8760 on
    # max(e - 1, 0) of NAV for a long and |e| for a short (docs/architecture.md).
    borrow_rate_annual: float = 0.05


@dataclass(frozen=True)
class TQCConfig:
    learning_rate: float = hyper(3e-4, neutral=0.0)
    critic_learning_rate: float | None = hyper(None, neutral=None)  # None = learning_rate
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    gamma: float = hyper(0.99, neutral=0.0)
    tau: float = hyper(0.005, neutral=0.0)
    n_quantiles: int = 25
    n_critics: int = 2
    top_quantiles_to_drop_per_net: int = 2
    net_arch: tuple[int, ...] = (256, 256)
    layer_norm: bool = False  # LayerNorm after every hidden layer of actor and critics
    policy_delay: int = 1
    gradient_steps: int = 1  # G: gradient updates per vectorised env step
    ent_coef_init: float = hyper(1.0, neutral=1.0)
    # Adam step size of log(alpha), the entropy coefficient; None = learning_rate (sb3's
    # behaviour). Adam moves log(alpha) by about this much per update at most.
    ent_coef_learning_rate: float | None = hyper(None, neutral=None)
    target_entropy: float | Literal["auto"] = hyper("auto", neutral="auto")
    max_grad_norm: float | None = hyper(10.0, neutral=None)  # global-norm clipping; None = off
    # decoupled weight decay (AdamW: params -= lr * weight_decay * params each step) on the
    # actor and critics (not on a fine-tuned encoder, nor on log alpha); 0 = plain Adam
    weight_decay: float = hyper(0.0, neutral=0.0)
    log_std_min: float = -20.0
    log_std_max: float = 2.0


@dataclass(frozen=True)
class CurriculumConfig:
    """Piecewise-linear penalty schedule over training progress (docs/reference.md's three
    phases)."""

    phase_ends: tuple[float, ...] = (0.2, 0.6, 1.0)
    churn: tuple[tuple[float, float], ...] = hyper(((0.0, 0.10), (0.10, 0.50), (0.50, 0.50)))
    smooth: tuple[tuple[float, float], ...] = hyper(((0.0, 0.0), (0.0, 0.02), (0.02, 0.02)))


@dataclass(frozen=True)
class TrainConfig:
    total_env_steps: int = 30_000_000  # per agent, summed over envs
    n_envs: int = 512
    steps_per_chunk: int = 500  # vectorised env steps per compiled chunk
    devices: int | Literal["all"] = "all"
    n_seeds: int = 1
    # data: one population split data-parallel over the devices (envs, batch and buffer per
    # device, gradients averaged); population: the members sharded over the devices, each
    # device training its own members whole, with no collective in the step
    parallel: Literal["data", "population"] = "data"
    checkpoint_every_chunks: int = 10
    keep_checkpoints: int = 1
    # Gaussian noise added to the observation's market part (the embedding, or the feature
    # window) wherever the learner reads it in training (acting and every replayed batch),
    # with sd obs_noise x each column's sd over the segment's train rows; 0 = none. The
    # backtest always reads the clean observation.
    obs_noise: float = hyper(0.0)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

