"""The sections the agent learns with: encoder, environment, TQC, training and its curriculum.

Each field's docstring is its description in docs/config.md (scripts/config_reference.py): the
text up to its first blank line, on one line there. Fields declared with `hyper` are dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptorl_jax.config.dynamic import hyper
from cryptorl_jax.core.units import HOURS_PER_YEAR


@dataclass(frozen=True)
class EncoderConfig:
    """The masked-autoencoder transformer that turns an observation window into one vector
    (`encoder.mae`), pre-trained on each segment's train rows (`encoder.pretrain`)."""

    mode: Literal["none", "random", "pretrained-frozen", "pretrained-finetune"] = (
        "pretrained-frozen"
    )
    """none: the agent reads the raw window; random: an untrained encoder's embeddings;
    pretrained-frozen: the pre-trained MAE's embeddings; pretrained-finetune: the pre-trained
    encoder inside the agent, trained further with the actor."""
    patch_size: int = 1
    """Hours per token P (must divide env.window)."""
    d_model: int = 64
    """Token width of the encoder, and the embedding's size."""
    depth: int = 2
    """Transformer blocks of the encoder."""
    n_heads: int = 4
    """Attention heads (must divide encoder.d_model)."""
    mlp_ratio: int = 2
    """Hidden width of each block's MLP, in multiples of its token width."""
    decoder_dim: int = 32
    """Token width of the pre-training decoder."""
    decoder_depth: int = 1
    """Transformer blocks of the pre-training decoder."""
    mask_ratio: float = 0.5
    """Share of a window's tokens masked in pre-training (round(ratio x tokens))."""
    pooling: Literal["mean", "last"] = "mean"
    """How the encoded tokens become one vector: their mean or the last token."""
    epochs: int = 90
    """Maximum pre-training epochs."""
    batch_size: int = 256
    """Windows per pre-training batch."""
    batches_per_epoch: int | None = None
    """Batches per pre-training epoch; null: every train window once per epoch."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate of the pre-training (linear warm-up, then cosine decay)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the pre-training (kernels only)."""
    warmup_epochs: int = 1
    """Epochs of linear learning-rate warm-up."""
    patience: int = 10
    """Early stopping: epochs without a better validation loss before pre-training stops."""
    val_fraction: float = 0.1
    """The last share of the segment's train rows that validates the pre-training."""
    finetune_learning_rate: float = 1e-5
    """Learning rate of the encoder inside the agent (mode pretrained-finetune)."""


@dataclass(frozen=True)
class EnvConfig:
    """The trading environment (`env.trading`, `env.accounting`): costs, the vol-targeted
    exposure, the reward and the episodes.

    Vol targeting (docs/architecture.md, "Vol targeting without mechanical churn"): L_t =
    min(target / max(s_t, floor), cap) with s_t an exponentially weighted std of the last
    vol_window hourly returns (half-life vol_halflife_hours; null: equal weights) scaled by
    sqrt(vol_horizon_hours). The defaults state the target in annual terms (H = 8,760) near
    BTC's typical vol (median EWMA vol 0.52 over 2019-12 .. 2025-07), so action 1 holds about
    one unit of NAV instead of sitting at the cap, and the estimate moves slowly enough not to
    make trades by itself; the original system's settings (0.05 daily over 24 h, no band) are
    in configs/full.yaml.
    """

    fee_bps: float = 5.0
    """Trading fee in basis points per unit of turnover."""
    slippage_bps: float = 2.0
    """Slippage in basis points per unit of turnover (added to the fee)."""
    target_volatility: float = 0.5
    """Volatility target of the exposure, in vol_horizon_hours units: annual by default."""
    vol_window: int = 480
    """Hourly returns in the vol estimate s_t (480: 20 days)."""
    vol_halflife_hours: float | None = 96.0
    """Half-life of the vol estimate's exponential weights (96: 4 days); null: the plain
    rolling std."""
    vol_horizon_hours: int = HOURS_PER_YEAR
    """Horizon H of the vol estimate: s_t is the hourly std times sqrt(H) (8760: a year)."""
    max_leverage: float = 2.0
    """Cap of the leverage L_t."""
    vol_floor: float = 0.1
    """Floor of the vol estimate in vol_horizon_hours units (0.1 a year: far below any BTC
    vol)."""
    no_trade_band: float = 0.1
    """No-trade band on the exposure: trade to the target a_t L_t only when it differs from
    the drifted weight w_t by more than this (units of NAV); 0 trades every change."""
    reward_scale: float = hyper(100.0, neutral=1.0)
    """Multiplier of the step's log NAV return (after costs) in the reward."""
    window: int = 64
    """Observation window W (hours of features the agent sees)."""
    episode_length: int = 2048
    """Steps after which a training episode is truncated."""
    ruin_nav: float = 0.5
    """An episode terminates when NAV falls below this (the NAV starts at 1)."""
    borrow_rate_annual: float = 0.05
    """Financing of leverage and shorts, a year's rate on the borrowed notional (an assumed
    5 %: roughly a USD funding rate; 0 turns it off).

    Charged hourly at rate / 8760 on max(e - 1, 0) of NAV for a long and |e| for a short
    (docs/architecture.md)."""


@dataclass(frozen=True)
class TQCConfig:
    """The TQC agent (`agent.tqc`, numerically sb3-contrib's TQC): networks, replay, updates."""

    learning_rate: float = hyper(3e-4, neutral=0.0)
    """Adam learning rate of the actor (and of the critics and alpha unless set below)."""
    critic_learning_rate: float | None = hyper(None, neutral=None)
    """Adam learning rate of the critics; null: tqc.learning_rate."""
    batch_size: int = 256
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions (split over the devices in data parallelism)."""
    learning_starts: int = 100
    """Env steps (summed over the envs) of uniform random actions before updates begin."""
    gamma: float = hyper(0.99, neutral=0.0)
    """Discount factor."""
    tau: float = hyper(0.005, neutral=0.0)
    """Polyak coefficient of the target critics: target <- tau critic + (1 - tau) target."""
    n_quantiles: int = 25
    """Quantiles M of each critic."""
    n_critics: int = 2
    """Critics N."""
    top_quantiles_to_drop_per_net: int = 2
    """Top target quantiles dropped per critic (the pooled N x M atoms lose N x this)."""
    net_arch: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    layer_norm: bool = False
    """LayerNorm after every hidden layer of actor and critics."""
    policy_delay: int = 1
    """The actor and alpha update on every policy_delay-th critic update."""
    gradient_steps: int = 1
    """G: gradient updates per vectorised env step."""
    ent_coef_init: float = hyper(1.0, neutral=1.0)
    """Initial entropy coefficient alpha."""
    ent_coef_learning_rate: float | None = hyper(None, neutral=None)
    """Adam step size of log(alpha), the entropy coefficient; null: tqc.learning_rate (sb3's
    behaviour).

    Adam moves log(alpha) by about this much per update at most."""
    target_entropy: float | Literal["auto"] = hyper("auto", neutral="auto")
    """Entropy target of the alpha update; 'auto': -(action dimensions), i.e. -1."""
    max_grad_norm: float | None = hyper(10.0, neutral=None)
    """Global-norm gradient clipping; null: off."""
    weight_decay: float = hyper(0.0, neutral=0.0)
    """Decoupled weight decay (AdamW: params -= lr * weight_decay * params each step) on the
    actor and critics (not on a fine-tuned encoder, nor on log alpha); 0 = plain Adam."""
    log_std_min: float = -20.0
    """Lower clip of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clip of the actor's log standard deviation."""


@dataclass(frozen=True)
class DirectConfig:
    """The direct learner (`agent.direct`, agent.kind direct): a deterministic policy trained by
    gradient ascent on the after-cost objective, backpropagated through the env's ledger over
    sampled episodes (no critic).

    Each update rolls train.n_envs episodes of `horizon` hours from random start rows of the
    train window, with the no-trade band relaxed (a sigmoid gate of width
    `band_temperature`); the backtest acts with the exact band. An update counts n_envs x
    horizon env steps against train.total_env_steps (docs/architecture.md, "The direct
    learner")."""

    horizon: int = 168
    """Hours of each training episode the gradient flows through (168: a week)."""
    objective: Literal["log_growth", "sharpe"] = "log_growth"
    """log_growth: the mean reward (reward_scale x log NAV growth minus the curriculum's churn
    and smoothness penalties), i.e. the env's reward; sharpe: each episode's mean reward over
    its sd, averaged over the episodes."""
    learning_rate: float = hyper(1e-3, neutral=0.0)
    """Adam learning rate of the policy."""
    max_grad_norm: float | None = 1.0
    """Global-norm gradient clipping; null: off."""
    band_temperature: float = 0.02
    """Width (units of NAV) of the sigmoid that replaces the no-trade band's step in training:
    the traded share of a target move d is sigmoid((|d| - band) / band_temperature)."""
    net_arch: tuple[int, ...] | None = None
    """Hidden layer widths of the policy (TQC's actor network, with tqc.layer_norm); null:
    tqc.net_arch; []: no hidden layer, a linear policy a_t = tanh(w . o_t + b) (with
    agent.observation baselines, a learnt blend of the baselines and the book's state)."""
    action_penalty: float = 0.0
    """Penalty on the policy's pre-tanh output m (a_t = tanh(m_t)): J minus action_penalty x
    the mean of m_t^2 over the episodes' hours, in reward units. It keeps the deterministic
    policy off tanh's flat tails, where its gradient vanishes and no update can make it follow
    its inputs again (issue 40, docs/methods.md); 0 = none (the step is then unchanged)."""


BASELINE_INPUTS = ("momentum", "momentum_scaled", "crossover", "ridge", "ridge_oof")
"""The fitted baselines an agent can read (`agent.baseline_inputs`): those whose action a run
rebuilds exactly from baselines.json (`backtest.strategies.from_params`); `ridge_oof` is the
ridge with out-of-fold coefficients on the train rows (`strategies.ridge_oof_actions`)."""


@dataclass(frozen=True)
class AgentConfig:
    """Which learner trains the agents, and the direct learner's settings (TQC's are in the
    `tqc` section)."""

    kind: Literal["tqc", "direct"] = "tqc"
    """tqc: the TQC actor-critic (`tqc` section); direct: the policy trained through the
    differentiable ledger (`agent.direct`), a control without a critic."""
    direct: DirectConfig = field(default_factory=DirectConfig)
    baseline_inputs: tuple[str, ...] = ()
    """Fitted baselines whose action at each hour the agents also read (the agent as a
    correction to the simple methods that see the same information): any of momentum,
    momentum_scaled, crossover, ridge, ridge_oof (`backtest.strategies`), fitted on the
    segment's train rows only, as the report's baselines are; () = none. ridge reads its
    in-sample forecast on the train rows; ridge_oof the same ridge cross-fitted there (purged
    6-fold: each fold forecast by a fit on the others), about as good there as out of sample.

    Each is one more column of the observation's market part (appended to the embedding, or
    to the feature window with encoder.mode none), so observation noise reaches it too; not
    with encoder.mode pretrained-finetune (docs/architecture.md, "Baselines as inputs")."""
    observation: Literal["full", "baselines"] = "full"
    """What the observation's market part holds. full: the embedding or the feature window,
    with the baseline inputs appended; baselines: the baseline inputs alone (each row's
    actions of `agent.baseline_inputs`, in place of the embedding, or as the window with
    encoder.mode none), so the agent can only rescale, combine or gate the fitted baselines
    (a low-capacity policy, issue 40). The book's state is read either way."""


@dataclass(frozen=True)
class CurriculumConfig:
    """Piecewise-linear penalty schedule over training progress (docs/reference.md's three
    phases)."""

    phase_ends: tuple[float, ...] = (0.2, 0.6, 1.0)
    """Training progress at which each phase ends: increasing in (0, 1], the last 1.0."""
    churn: tuple[tuple[float, float], ...] = hyper(((0.0, 0.10), (0.10, 0.50), (0.50, 0.50)))
    """Per phase, [start, end] of the churn penalty coefficient on the turnover |e_t - w_t|."""
    smooth: tuple[tuple[float, float], ...] = hyper(((0.0, 0.0), (0.0, 0.02), (0.02, 0.02)))
    """Per phase, [start, end] of the smoothness penalty coefficient on the squared turnover."""


@dataclass(frozen=True)
class TrainConfig:
    """The TQC training run (`training.loop`): budget, parallelism, checkpoints, noise."""

    total_env_steps: int = 30_000_000
    """Env steps per agent, summed over its envs."""
    n_envs: int = 512
    """Parallel envs per agent."""
    steps_per_chunk: int = 500
    """Vectorised env steps per compiled chunk (checkpoints and logs fall between chunks)."""
    devices: int | Literal["all"] = "all"
    """Accelerators to train on: 'all' local devices or the first N."""
    n_seeds: int = 1
    """Agents per segment, trained as one population; the backtest trades their equal-weight
    ensemble."""
    parallel: Literal["data", "population"] = "data"
    """data: one population split data-parallel over the devices (envs, batch and buffer per
    device, gradients averaged); population: the members sharded over the devices, each
    device training its own members whole, with no collective in the step."""
    checkpoint_every_chunks: int = 10
    """Checkpoint the training state every this many chunks (and after the last)."""
    keep_checkpoints: int = 1
    """Checkpoints kept on disk."""
    obs_noise: float = hyper(0.0)
    """Gaussian noise added to the observation's market part in training, with sd obs_noise x
    each column's sd over the segment's train rows; 0 = none.

    The market part is the embedding, or the feature window; the learner reads the noisy one
    wherever it reads it in training (acting and every replayed batch). The backtest always
    reads the clean observation."""
    demean_returns: bool = False
    """Train on the traded asset's hourly log returns minus their mean over the segment's
    train rows (the rows whose returns training realises): a book held at one sign all window
    then earns nothing before costs, so the learner is paid for timing, not for the train
    window's drift. Only the training ledger's returns change: the observation, the realised
    vol behind the leverage and every backtest (in-sample included) read the market as it is
    (docs/architecture.md, "Drift-neutral training")."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
