"""Validation of values (types are already right here): `validate` raises ConfigError for an
impossible value, naming the key and the file; one validator per section."""

from __future__ import annotations

from cryptorl_jax.config.errors import ConfigError
from cryptorl_jax.config.overrides import check_override_key, parse_override
from cryptorl_jax.config.schema import Config
from cryptorl_jax.config.schema_agent import (
    BASELINE_INPUTS,
    AgentConfig,
    EncoderConfig,
    EnvConfig,
    TQCConfig,
    TrainConfig,
)
from cryptorl_jax.config.schema_inputs import DataConfig, FeaturesConfig, RegimesConfig
from cryptorl_jax.config.schema_runs import (
    BaselinesConfig,
    OutputConfig,
    StudyConfig,
    TuneConfig,
    WFOConfig,
)
from cryptorl_jax.core.extras import missing_text


def _require(cond: bool, key: str, message: str, source: str | None) -> None:
    if not cond:
        raise ConfigError(key, message, source)


def validate(cfg: Config) -> None:
    """Raise ConfigError for impossible values, naming the key and the file (one validator per
    section; the cross-section rules sit with the section they constrain)."""
    s = cfg.source
    _require(bool(cfg.run_name) and "/" not in cfg.run_name and cfg.run_name not in (".", ".."),
             "run_name", "must be a non-empty name without '/'", s)
    _require(cfg.seed >= 0, "seed", "must be >= 0", s)
    names = _validate_data(cfg.data, s)
    _validate_features(cfg.features, names, s)
    _validate_regimes(cfg.regimes, s)
    _validate_env(cfg.env, s)
    _validate_encoder(cfg.encoder, cfg.env, s)
    _validate_agent(cfg.agent, cfg, s)
    _validate_tqc(cfg.tqc, s)
    _validate_train(cfg.train, s)
    _validate_wfo(cfg.wfo, cfg.env, s)
    _validate_output(cfg.output, s)
    _validate_baselines(cfg.baselines, s)
    _validate_tune(cfg.tune, s)
    _validate_study(cfg.study, s)


def _validate_data(d: DataConfig, s: str | None) -> list[str]:
    """The data section; returns the asset names (other sections refer to them)."""
    names = [a.name for a in d.assets]
    _require(len(names) > 0, "data.assets", "at least one asset is required", s)
    _require(len(set(names)) == len(names), "data.assets", f"duplicate asset names {names}", s)
    _require(d.traded_asset in names, "data.traded_asset",
             f"'{d.traded_asset}' is not among data.assets {names}", s)
    for i, a in enumerate(d.assets):
        _require(a.name.isidentifier() and "_" not in a.name, f"data.assets[{i}].name",
                 f"'{a.name}' must be letters/digits without '_'", s)
        _require(a.file is not None or d.combined_file is not None, f"data.assets[{i}].file",
                 "a file is required unless data.combined_file is set", s)
        _require(a.bar_hours > 0, f"data.assets[{i}].bar_hours", "must be > 0", s)
        lag = a.availability_lag_hours
        _require(isinstance(lag, int) and not isinstance(lag, bool),
                 f"data.assets[{i}].availability_lag_hours",
                 f"must be a whole number of hours, got {lag!r}", s)
        _require(lag >= 0, f"data.assets[{i}].availability_lag_hours",
                 f"must be >= 0, got {lag}", s)
        _require(a.name != d.traded_asset or lag == 0, f"data.assets[{i}].availability_lag_hours",
                 f"must be 0 for the traded asset {a.name} (a lag would misalign its prices "
                 f"with the trades), got {lag}", s)
    traded = next(a for a in d.assets if a.name == d.traded_asset)
    _require(not traded.invert, "data.traded_asset", "the traded asset cannot be inverted", s)
    _require(d.max_fill_hours >= 0, "data.max_fill_hours", "must be >= 0", s)
    _require(d.max_stale_hours >= 1, "data.max_stale_hours", "must be >= 1", s)
    for key, val in (("data.start", d.start), ("data.end", d.end)):
        if val is not None:
            try:
                import pandas as pd

                pd.Timestamp(val)
            except (ValueError, TypeError):
                raise ConfigError(key, f"not a date: {val!r}", s) from None
    if d.start is not None and d.end is not None:
        import pandas as pd

        _require(pd.Timestamp(d.start) < pd.Timestamp(d.end), "data.end",
                 "must be after data.start", s)
    return names


def _validate_features(f: FeaturesConfig, names: list[str], s: str | None) -> None:
    if f.assets is not None:
        for a in f.assets:
            _require(a in names, "features.assets", f"'{a}' is not among data.assets", s)
    for key in ("equity_asset", "dollar_asset", "ratio_asset"):
        val = getattr(f, key)
        _require(val is None or val in names, f"features.{key}",
                 f"'{val}' is not among data.assets {names} (set it to null to drop it)", s)
    for a in f.ta_assets:
        _require(a in names, "features.ta_assets", f"'{a}' is not among data.assets", s)
    for h in f.return_horizons:
        _require(h >= 1, "features.return_horizons", "horizons must be >= 1", s)
    for key in ("zscore_window", "range_vol_window", "rsi_length", "macd_fast", "macd_slow",
                "macd_signal", "atr_length", "adx_length", "bbands_length", "corr_window"):
        _require(getattr(f, key) >= 2, f"features.{key}", "must be >= 2", s)
    _require(f.macd_fast < f.macd_slow, "features.macd_fast", "must be < macd_slow", s)
    if f.ffd_d != "auto":
        _require(0.0 <= f.ffd_d <= 2.0, "features.ffd_d", "must be in [0, 2] or 'auto'", s)
    _require(0 < f.ffd_threshold < 1, "features.ffd_threshold", "must be in (0, 1)", s)
    _require(len(f.ffd_d_grid) > 0 and all(0 <= x <= 2 for x in f.ffd_d_grid),
             "features.ffd_d_grid", "values must be in [0, 2]", s)
    _require(0 < f.ffd_adf_pvalue < 1, "features.ffd_adf_pvalue", "must be in (0, 1)", s)
    _require(f.bbands_std > 0, "features.bbands_std", "must be > 0", s)
    _require(f.scaler_clip > 0, "features.scaler_clip", "must be > 0", s)


def _validate_regimes(r: RegimesConfig, s: str | None) -> None:
    _require(r.n_states >= 1, "regimes.n_states", "must be >= 1", s)
    _require(r.n_iter >= 1, "regimes.n_iter", "must be >= 1", s)
    _require(r.n_fits >= 1, "regimes.n_fits", "must be >= 1", s)
    _require(r.tol > 0, "regimes.tol", "must be > 0", s)


def _validate_env(v: EnvConfig, s: str | None) -> None:
    _require(v.fee_bps >= 0, "env.fee_bps", "must be >= 0", s)
    _require(v.slippage_bps >= 0, "env.slippage_bps", "must be >= 0", s)
    _require(v.target_volatility > 0, "env.target_volatility", "must be > 0", s)
    _require(v.vol_window >= 2, "env.vol_window", "must be >= 2", s)
    _require(v.vol_horizon_hours >= 1, "env.vol_horizon_hours", "must be >= 1", s)
    _require(v.max_leverage > 0, "env.max_leverage", "must be > 0", s)
    _require(v.vol_floor > 0, "env.vol_floor", "must be > 0", s)
    _require(v.vol_halflife_hours is None or v.vol_halflife_hours > 0, "env.vol_halflife_hours",
             "must be > 0 hours (or null: equal weights)", s)
    _require(v.no_trade_band >= 0, "env.no_trade_band", "must be >= 0 (0: no band)", s)
    _require(v.reward_scale > 0, "env.reward_scale", "must be > 0", s)
    _require(v.window >= 1, "env.window", "must be >= 1", s)
    _require(v.episode_length >= 1, "env.episode_length", "must be >= 1", s)
    _require(0 <= v.ruin_nav < 1, "env.ruin_nav", "must be in [0, 1)", s)
    _require(v.borrow_rate_annual >= 0, "env.borrow_rate_annual",
             f"must be >= 0 (a yearly rate; 0 turns financing off), got {v.borrow_rate_annual}",
             s)


def _validate_encoder(e: EncoderConfig, v: EnvConfig, s: str | None) -> None:
    _require(e.patch_size >= 1, "encoder.patch_size", "must be >= 1", s)
    _require(v.window % e.patch_size == 0, "encoder.patch_size",
             f"must divide env.window ({v.window})", s)
    for key in ("d_model", "depth", "n_heads", "mlp_ratio", "decoder_dim", "epochs",
                "batch_size"):
        _require(getattr(e, key) >= 1, f"encoder.{key}", "must be >= 1", s)
    _require(e.decoder_depth >= 0, "encoder.decoder_depth", "must be >= 0", s)
    _require(e.d_model % e.n_heads == 0, "encoder.n_heads", "must divide encoder.d_model", s)
    _require(0 < e.mask_ratio < 1, "encoder.mask_ratio", "must be in (0, 1)", s)
    n_tokens = v.window // e.patch_size
    # the masking rule binds only where the MAE is pretrained (mode none: raw windows, any W)
    _require(e.mode in ("none", "random")
             or (round(e.mask_ratio * n_tokens) >= 1 and round(e.mask_ratio * n_tokens)
                 < n_tokens),
             "encoder.mask_ratio", f"must mask at least one and not all of {n_tokens} tokens", s)
    _require(e.batches_per_epoch is None or e.batches_per_epoch >= 1,
             "encoder.batches_per_epoch", "must be >= 1", s)
    _require(e.learning_rate > 0, "encoder.learning_rate", "must be > 0", s)
    _require(e.finetune_learning_rate >= 0, "encoder.finetune_learning_rate", "must be >= 0", s)
    _require(e.weight_decay >= 0, "encoder.weight_decay", "must be >= 0", s)
    _require(e.warmup_epochs >= 0, "encoder.warmup_epochs", "must be >= 0", s)
    _require(e.patience >= 1, "encoder.patience", "must be >= 1", s)
    _require(0 < e.val_fraction < 0.5, "encoder.val_fraction", "must be in (0, 0.5)", s)


def _validate_tqc(q: TQCConfig, s: str | None) -> None:
    _require(q.learning_rate > 0, "tqc.learning_rate", "must be > 0", s)
    _require(q.critic_learning_rate is None or q.critic_learning_rate > 0,
             "tqc.critic_learning_rate", "must be > 0", s)
    _require(q.batch_size >= 1, "tqc.batch_size", "must be >= 1", s)
    _require(q.buffer_size >= q.batch_size, "tqc.buffer_size", "must be >= tqc.batch_size", s)
    _require(q.learning_starts >= 0, "tqc.learning_starts", "must be >= 0", s)
    _require(0 <= q.gamma < 1, "tqc.gamma", "must be in [0, 1)", s)
    _require(0 < q.tau <= 1, "tqc.tau", "must be in (0, 1]", s)
    _require(q.n_quantiles >= 1, "tqc.n_quantiles", "must be >= 1", s)
    _require(q.n_critics >= 1, "tqc.n_critics", "must be >= 1", s)
    _require(0 <= q.top_quantiles_to_drop_per_net < q.n_quantiles,
             "tqc.top_quantiles_to_drop_per_net", "must be in [0, n_quantiles)", s)
    _require(len(q.net_arch) >= 1 and all(h >= 1 for h in q.net_arch), "tqc.net_arch",
             "must be a non-empty list of positive widths", s)
    _require(q.policy_delay >= 1, "tqc.policy_delay", "must be >= 1", s)
    _require(q.gradient_steps >= 1, "tqc.gradient_steps", "must be >= 1", s)
    _require(q.ent_coef_init > 0, "tqc.ent_coef_init", "must be > 0", s)
    _require(q.ent_coef_learning_rate is None or q.ent_coef_learning_rate > 0,
             "tqc.ent_coef_learning_rate", "must be > 0 or null", s)
    _require(q.weight_decay >= 0, "tqc.weight_decay", f"must be >= 0, got {q.weight_decay}", s)
    _require(q.max_grad_norm is None or q.max_grad_norm > 0, "tqc.max_grad_norm",
             "must be > 0 or null", s)
    _require(q.log_std_min < q.log_std_max, "tqc.log_std_min", "must be < log_std_max", s)


def _validate_agent(a: AgentConfig, cfg: Config, s: str | None) -> None:
    """agent.direct (checked whatever agent.kind is: a config switched to direct later must
    not meet an impossible value only then)."""
    d = a.direct
    _require(d.horizon >= 1, "agent.direct.horizon", f"must be >= 1, got {d.horizon}", s)
    train_rows = cfg.wfo.train_months * cfg.wfo.hours_per_month
    _require(a.kind != "direct" or d.horizon < train_rows, "agent.direct.horizon",
             f"{d.horizon} hours do not fit in the {train_rows} train rows "
             "(wfo.train_months x wfo.hours_per_month)", s)
    _require(d.learning_rate > 0, "agent.direct.learning_rate", "must be > 0", s)
    _require(d.max_grad_norm is None or d.max_grad_norm > 0, "agent.direct.max_grad_norm",
             "must be > 0 or null", s)
    _require(d.band_temperature > 0, "agent.direct.band_temperature",
             f"must be > 0, got {d.band_temperature}", s)
    _require(d.action_penalty >= 0, "agent.direct.action_penalty",
             f"must be >= 0, got {d.action_penalty}", s)
    _require(d.net_arch is None or all(h >= 1 for h in d.net_arch),
             "agent.direct.net_arch", "must be null or a list of positive widths ([]: linear)",
             s)
    names = list(a.baseline_inputs)
    bad = [n for n in names if n not in BASELINE_INPUTS]
    _require(not bad, "agent.baseline_inputs",
             f"{bad} are not baselines the agent can read; choose from {list(BASELINE_INPUTS)}",
             s)
    _require(len(set(names)) == len(names), "agent.baseline_inputs",
             f"duplicate names in {names}", s)
    _require(not names or cfg.encoder.mode != "pretrained-finetune", "agent.baseline_inputs",
             "needs encoder.mode none, random or pretrained-frozen (a fine-tuned encoder reads "
             "the feature window only)", s)
    _require(a.observation != "baselines" or names, "agent.observation",
             "baselines needs agent.baseline_inputs (the baselines the agent reads)", s)


def _validate_train(t: TrainConfig, s: str | None) -> None:
    _require(t.total_env_steps >= 1, "train.total_env_steps", "must be >= 1", s)
    _require(t.n_envs >= 1, "train.n_envs", "must be >= 1", s)
    _require(t.steps_per_chunk >= 1, "train.steps_per_chunk", "must be >= 1", s)
    _require(t.devices == "all" or t.devices >= 1, "train.devices", "must be 'all' or >= 1", s)
    _require(t.n_seeds >= 1, "train.n_seeds", "must be >= 1", s)
    _require(t.checkpoint_every_chunks >= 1, "train.checkpoint_every_chunks", "must be >= 1", s)
    _require(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1", s)
    _require(t.obs_noise >= 0, "train.obs_noise", f"must be >= 0, got {t.obs_noise}", s)
    c = t.curriculum
    n = len(c.phase_ends)
    _require(n >= 1, "train.curriculum.phase_ends", "at least one phase", s)
    _require(all(0 < x <= 1 for x in c.phase_ends) and list(c.phase_ends) == sorted(c.phase_ends)
             and len(set(c.phase_ends)) == n and c.phase_ends[-1] == 1.0,
             "train.curriculum.phase_ends", "must increase strictly within (0, 1] and end at 1.0",
             s)
    _require(len(c.churn) == n, "train.curriculum.churn", f"needs {n} [start, end] pairs", s)
    _require(len(c.smooth) == n, "train.curriculum.smooth", f"needs {n} [start, end] pairs", s)
    _require(all(x >= 0 for p in c.churn + c.smooth for x in p), "train.curriculum",
             "penalty coefficients must be >= 0", s)


def _validate_wfo(w: WFOConfig, v: EnvConfig, s: str | None) -> None:
    for key in ("train_months", "test_months", "step_months", "hours_per_month"):
        _require(getattr(w, key) >= 1, f"wfo.{key}", "must be >= 1", s)
    _require(w.embargo_hours >= 0, "wfo.embargo_hours", "must be >= 0", s)
    _require(w.max_segments is None or w.max_segments >= 1, "wfo.max_segments", "must be >= 1",
             s)
    _require(w.segments is None or (len(w.segments) > 0 and all(k >= 0 for k in w.segments)),
             "wfo.segments", "must be a non-empty list of segment numbers >= 0", s)
    _require(w.segments_per_batch == "all" or w.segments_per_batch >= 1,
             "wfo.segments_per_batch", "must be a whole number >= 1 or 'all'", s)
    train_rows = w.train_months * w.hours_per_month
    _require(train_rows > v.window + v.vol_window + 2, "wfo.train_months",
             f"the train window ({train_rows} rows) must exceed env.window + env.vol_window", s)


def _validate_output(o: OutputConfig, s: str | None) -> None:
    _require(bool(str(o.dir).strip()), "output.dir", "must name a directory", s)


def _validate_baselines(b: BaselinesConfig, s: str | None) -> None:
    _require(len(b.momentum_lookbacks) > 0 and all(k >= 1 for k in b.momentum_lookbacks),
             "baselines.momentum_lookbacks", "must be a non-empty list of hours >= 1", s)
    _require(len(b.crossover_windows) > 0
             and all(len(w) == 2 and 1 <= w[0] < w[1] for w in b.crossover_windows),
             "baselines.crossover_windows", "must be a non-empty list of [fast, slow] with "
             "1 <= fast < slow", s)
    _require(len(b.forecast_horizons) > 0 and all(h >= 1 for h in b.forecast_horizons),
             "baselines.forecast_horizons", "must be a non-empty list of hours >= 1", s)
    _require(len(b.ridge_alphas) > 0 and all(a > 0 for a in b.ridge_alphas),
             "baselines.ridge_alphas", "must be a non-empty list of penalties > 0", s)
    _require(len(b.forecast_smoothing_hours) > 0
             and all(m >= 0 for m in b.forecast_smoothing_hours),
             "baselines.forecast_smoothing_hours", "must be a non-empty list of hours >= 0", s)
    _require(0 < b.validation_fraction < 0.5, "baselines.validation_fraction",
             "must be in (0, 0.5)", s)
    _require(b.bootstrap_reps >= 100, "baselines.bootstrap_reps", "must be >= 100", s)
    if b.lightgbm:
        try:
            import lightgbm  # noqa: F401
        except ImportError:
            raise ConfigError("baselines.lightgbm",
                              missing_text("lightgbm", "baselines.lightgbm=true"), s) from None


def _validate_tune(tu: TuneConfig, s: str | None) -> None:
    _require(0 < tu.val_fraction < 0.5, "tune.val_fraction", "must be in (0, 0.5)", s)
    _require(2 <= tu.pbo_blocks <= 24 and tu.pbo_blocks % 2 == 0, "tune.pbo_blocks",
             f"must be an even number in [2, 24], got {tu.pbo_blocks}", s)
    for i, p in enumerate(tu.space):
        k = f"tune.space[{i}]"
        try:
            check_override_key(p.key, s or "")
        except ConfigError:
            raise ConfigError(f"{k}.key", f"'{p.key}' is not a config key", s) from None
        if p.type == "categorical":
            _require(bool(p.choices), f"{k}.choices", "categorical needs choices", s)
        else:
            _require(p.low is not None and p.high is not None and p.low < p.high, f"{k}.low",
                     "needs low < high", s)
            _require(p.type != "loguniform" or (p.low or 0) > 0, f"{k}.low",
                     "loguniform needs low > 0", s)


def _validate_study(st: StudyConfig, s: str | None) -> None:
    seen: set[str] = set()
    for i, r in enumerate(st.runs):
        k = f"study.runs[{i}]"
        _require(bool(r.name) and r.name.replace("-", "").replace("_", "").isalnum(),
                 f"{k}.name", f"must be letters, digits, '-' or '_', got {r.name!r}", s)
        _require(r.name not in seen, f"{k}.name", f"duplicate run name {r.name!r}", s)
        seen.add(r.name)
        for item in r.set:
            key, _ = parse_override(item, s)
            try:
                check_override_key(key, s or "")
            except ConfigError:
                raise ConfigError(f"{k}.set", f"'{key}' is not a config key", s) from None
            _require(not key.startswith("study"), f"{k}.set", "a run cannot change the study",
                     s)


def check_rows(cfg: Config, n_rows: int, what: str = "the data") -> None:
    """Raise ConfigError if the walk-forward windows cannot fit into n_rows rows."""
    w = cfg.wfo
    need = (w.train_months * w.hours_per_month + w.embargo_hours
            + w.test_months * w.hours_per_month)
    if need > n_rows:
        raise ConfigError(
            "wfo.test_months",
            f"train ({w.train_months} months) + embargo ({w.embargo_hours} h) + test "
            f"({w.test_months} months) = {need} rows, longer than {what} ({n_rows} rows)",
            cfg.source,
        )


