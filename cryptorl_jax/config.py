"""Typed, validated configuration: YAML + dotted overrides -> frozen, hashable dataclasses.

`load_config(path, overrides=())` is the only way configs enter the program. Every section is a
frozen dataclass whose fields are scalars, tuples or nested frozen dataclasses, so a Config is
hashable and can be a static argument of a jitted function. Errors name the key and the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or holds an impossible value."""

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key = key
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: {message}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssetSpec:
    """One input series. `kind` crypto trades 24/7; market (equity, index, FX) has sessions."""

    name: str
    file: str | None = None  # relative to data.data_dir; None when data.combined_file is used
    kind: Literal["crypto", "market"] = "crypto"
    timestamp_label: Literal["open", "close"] = "open"  # what the file's timestamp marks
    bar_hours: float = 1.0  # bar length: a bar labelled by its open is known at open + bar_hours
    invert: bool = False  # use 1/price (e.g. EURUSD as an inverted dollar proxy)
    # whole hours after its close before a bar may be used (a bar closing at C is placed on row
    # C + lag); e.g. 1 for a series whose clock is uncertain by +-1 h. The traded asset needs 0.
    availability_lag_hours: int = 0


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = "data"
    traded_asset: str = "BTC"
    assets: tuple[AssetSpec, ...] = (
        AssetSpec("BTC", "BTC_1h.csv.gz", "crypto"),
        AssetSpec("ETH", "ETH_1h.csv.gz", "crypto"),
        AssetSpec("SPY", "SPY_1h.csv.gz", "market"),
        AssetSpec("DXY", "DXY_1h.csv.gz", "market", availability_lag_hours=1),  # MT5 clock
    )
    combined_file: str | None = None  # one CSV/Parquet with <ASSET>_<field> columns
    start: str | None = None  # ISO date/time (UTC) to cut the aligned frame
    end: str | None = None
    max_fill_hours: int = 6  # traded asset: longest run of missing bars forward-filled
    max_stale_hours: int = 96  # context assets: forward-fill cap; older values become NaN
    cache_dir: str | None = ".cache/market"


@dataclass(frozen=True)
class FeaturesConfig:
    assets: tuple[str, ...] | None = None  # per-asset groups for these; None = all configured
    returns: bool = True
    return_horizons: tuple[int, ...] = (1, 24)
    zscore: bool = True
    zscore_window: int = 168
    ffd: bool = True
    ffd_d: float | Literal["auto"] = 0.4
    ffd_threshold: float = 1e-4
    ffd_d_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ffd_adf_pvalue: float = 0.05
    range_vol: bool = True
    range_vol_window: int = 24
    ta: bool = True
    ta_assets: tuple[str, ...] = ("BTC", "ETH")
    rsi_length: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_length: int = 14
    adx_length: int = 14
    bbands_length: int = 20
    bbands_std: float = 2.0
    cross_asset: bool = True
    corr_window: int = 168
    equity_asset: str | None = "SPY"  # rolling traded-asset/equity return correlation
    dollar_asset: str | None = "DXY"  # rolling traded-asset/dollar return correlation
    ratio_asset: str | None = "ETH"  # return of the <ratio_asset>/<traded_asset> price ratio
    calendar: bool = True
    scaler_clip: float = 5.0


@dataclass(frozen=True)
class RegimesConfig:
    enabled: bool = True
    n_states: int = 4
    columns: tuple[str, ...] | None = None  # None = traded asset's log return and realised vol
    covariance_type: Literal["full", "diag", "spherical", "tied"] = "full"
    n_iter: int = 200
    tol: float = 1e-4
    n_fits: int = 3  # random restarts; the best log-likelihood wins


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


_NO_NEUTRAL = object()


def hyper(default: Any, neutral: Any = _NO_NEUTRAL) -> Any:
    """Declare a dynamic hyperparameter: a traced leaf of `training.spec.Hyper`, not part of
    the compiled training step, so configs that differ only in such keys share one compilation
    and a population's members may differ in them. This declaration is the only list:
    `hyper_keys()` (`training.spec.HYPER_KEYS`, the keys population tuning may search) and
    `neutralised` (the TrainerSpec's copy of a section, each key at its `neutral` value) are
    derived from it; `Hyper.from_config` reads them (tests/training/test_population.py checks
    that every declared key moves the Hyper and that every other step key moves the spec).
    `neutral` is needed in the sections the spec copies whole (env, tqc)."""
    metadata: dict[str, Any] = {"hyper": True}
    if neutral is not _NO_NEUTRAL:
        metadata["neutral"] = neutral
    return field(default=default, metadata=metadata)


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


@dataclass(frozen=True)
class WFOConfig:
    train_months: int = 18
    test_months: int = 3
    step_months: int = 3
    hours_per_month: int = 720
    embargo_hours: int = 0
    max_segments: int | None = None
    segments: tuple[int, ...] | None = None  # explicit subset (the CLI's --segments)
    trial_log: str | None = None  # cryptorl tune's trial log: N trials for the Deflated SR
    # K segments whose agents train as the members of one compiled step (K x train.n_seeds
    # members, each on its own segment's rows); 1: one segment after another; "all": every
    # segment of the run in one batch (a GPU). Ray runs each batch as one task.
    segments_per_batch: int | Literal["all"] = 1


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "results"
    tensorboard: bool = True
    plots: bool = True
    tearsheet: bool = True
    progress: bool = True


@dataclass(frozen=True)
class BaselinesConfig:
    """The baselines that read the market (`backtest.strategies`), fitted on each segment's
    train rows only and traded through the agent's exposure mapping, band, ledger and costs.
    Every grid point counts in the multiple-testing N."""

    enabled: bool = True
    momentum_lookbacks: tuple[int, ...] = (24, 72, 168, 336, 720)  # k, hours
    crossover_windows: tuple[tuple[int, int], ...] = ((24, 168), (72, 336), (168, 720))
    forecast_horizons: tuple[int, ...] = (1, 24, 72)  # h of the ridge / LightGBM target
    # sklearn's alpha on the scaled features (~13k fit rows at 18 months)
    ridge_alphas: tuple[float, ...] = (1.0e3, 1.0e4, 1.0e5)
    # causal EMA half-lives (hours) of the forecast before the mapping; 0 = unsmoothed
    forecast_smoothing_hours: tuple[float, ...] = (24.0,)
    validation_fraction: float = 0.25  # the inner split of the train rows (forecasters)
    lightgbm: bool = False  # needs the `lightgbm` package (pip install -e ".[baselines]")
    bootstrap_reps: int = 1000  # SPA / StepM stationary-bootstrap replications


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the tuning space: `key` is a dotted config key."""

    key: str
    type: Literal["float", "loguniform", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    choices: tuple[str | float | int | bool, ...] | None = None


@dataclass(frozen=True)
class TuneConfig:
    val_fraction: float = 0.2  # tail of each segment's train rows used to score a trial
    segments: tuple[int, ...] = (0,)
    metric: Literal["sharpe", "sortino", "total_return", "calmar"] = "sharpe"
    space: tuple[SearchParam, ...] = ()
    pbo_blocks: int = 16  # S of the CSCV Probability of Backtest Overfitting (even, 2..24)


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: a name and the dotted overrides it applies to the study's config."""

    name: str
    set: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    """`cryptorl study`: several walk-forward runs of one config that differ by `runs[i].set`,
    compared over the same OOS window; the comparison and its reading go to `doc`."""

    runs: tuple[StudyRun, ...] = ()
    doc: str | None = None  # e.g. docs/study.md (relative to the working directory)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    run_name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    regimes: RegimesConfig = field(default_factory=RegimesConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    tqc: TQCConfig = field(default_factory=TQCConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wfo: WFOConfig = field(default_factory=WFOConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    source: str | None = field(default=None, compare=False)  # the YAML file it came from

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists); `source` is left out."""
        return _to_plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                          if f.name != "source"})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """Stable short hash of the resolved values (not of the source path)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Keys that say how or where THIS process runs, not what an experiment computes: which segments
# it runs (processes given disjoint --segments share a run), whether it shows progress bars, and
# the `study` section (adding a run to a study does not change the runs it already holds).
LOCAL_KEYS = ("wfo.segments", "output.progress", "study")
# A tuning study also ignores where and how its base config's runs would report (its trials
# write no report) and the trial log (best.yaml points its runs at the study's own log).
STUDY_LOCAL_KEYS = ("output", "wfo.trial_log")


def _reset(obj: Any, key: str) -> Any:
    head, _, rest = key.partition(".")
    default = type(obj)()
    if not rest:
        return dataclasses.replace(obj, **{head: getattr(default, head)})
    return dataclasses.replace(obj, **{head: _reset(getattr(obj, head), rest)})


def identity(cfg: Config, *, study: bool = False) -> Config:
    """The config that identifies an experiment, the one definition behind the run directory's
    config.yaml / config.digest (which the run registry and the OOS deflation key on) and a
    tuning study's base-config digest: the LOCAL_KEYS (and for a study STUDY_LOCAL_KEYS) at
    their defaults. Two configs with the same identity compute the same numbers."""
    out = cfg
    for key in (*LOCAL_KEYS, *(STUDY_LOCAL_KEYS if study else ())):
        out = _reset(out, key)
    return out


def hyper_keys(cls: type | None = None, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys declared with `hyper` (the dynamic hyperparameters), in field order."""
    cls = Config if cls is None else cls
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("hyper"):
            out.append(prefix + f.name)
        elif f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
                f.default_factory):
            out.extend(hyper_keys(f.default_factory, f"{prefix}{f.name}."))
    return tuple(out)


def neutralised(section: Any) -> Any:
    """A config section with every dynamic hyperparameter at its declared neutral value."""
    return dataclasses.replace(section, **{f.name: f.metadata["neutral"]
                                           for f in dataclasses.fields(section)
                                           if "neutral" in f.metadata})


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "source"}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} values"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    try:
        return _coerce_inner(value, tp, key, source)
    except _Mismatch:
        raise ConfigError(
            key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", source
        ) from None


def _coerce_inner(value: Any, tp: Any, key: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # Literal members first (so "auto" is not taken for a float), then the rest in order.
        ordered = sorted(args, key=lambda a: 0 if get_origin(a) is Literal else 1)
        for arg in ordered:
            if arg is type(None):
                continue
            try:
                return _coerce_inner(value, arg, key, source)
            except (_Mismatch, ConfigError):
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in
                     enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(tp, value, key, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _Mismatch from None
                if f.is_integer():
                    return int(f)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML reads an unquoted 2024-01-01 (in a file or a --set) as a date: the ISO text
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        raise _Mismatch
    raise _Mismatch


def _build(cls: type, raw: dict, prefix: str, source: str | None) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = sorted(names, key=lambda n: _distance(str(k), n))[:1]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(key, f"unknown key{hint}", source)
        kwargs[k] = _coerce(v, hints[k], key, source)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(prefix or "<root>", str(exc), source) from None


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _set_dotted(raw: dict, dotted: str, value: Any, source: str | None) -> None:
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"'{p}' is not a section", source)
        node = child
    node[parts[-1]] = value


def _parse_override(item: str, source: str | None) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(item, "override must look like section.key=value", source)
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(item, "override has an empty key", source)
    try:
        value = yaml.safe_load(text) if text.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse override value {text!r}: {exc}", source) from None
    return key, value


BASE_KEY = "base"


def _read_yaml(p: Path, source: str) -> dict:
    if not p.is_file():
        raise ConfigError("<file>", f"config file not found: {p}", source)
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"invalid YAML: {exc}", source) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError("<root>", "the top level must be a mapping of sections", source)
    return loaded


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: sections merge key by key, any other value (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_with_bases(p: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The YAML at `p` merged over its `base:` file (relative to p's folder), recursively."""
    source = str(p)
    resolved = p.resolve()
    if resolved in chain:
        loop = " -> ".join(str(c) for c in (*chain, resolved))
        raise ConfigError(BASE_KEY, f"the base chain loops back: {loop}", source)
    raw = _read_yaml(p, source)
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(BASE_KEY, f"must name a YAML file, got {base!r}", source)
    base_path = Path(base) if Path(base).is_absolute() else p.parent / base
    if not base_path.is_file():
        raise ConfigError(BASE_KEY, f"the base file {base_path} (named by {p}) does not exist",
                          source)
    return _merge(_read_with_bases(base_path, (*chain, resolved)), raw)


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (None = all defaults), apply dotted overrides, validate, freeze.

    A config may start with `base: other.yaml` (a path relative to its own folder): the base is
    read first (it may have a base of its own) and this file's keys are merged over it, section
    by section; a list replaces the base's list.
    """
    overrides = list(overrides)
    source = str(path) if path is not None else None
    raw: dict = {}
    if path is not None:
        raw = _read_with_bases(Path(path))
    override_source = f"{source} (--set)" if source else "--set"
    for item in overrides:
        key, value = _parse_override(item, override_source)
        _check_override_key(key, override_source)
        _set_dotted(raw, key, value, override_source)
    override_keys = {_parse_override(item, override_source)[0] for item in overrides}
    try:
        cfg = _build(Config, raw, "", source)
    except ConfigError as exc:
        if exc.key.split("[")[0] in override_keys:  # the bad value came from --set
            raise ConfigError(exc.key, str(exc).split(": ", 1)[1], override_source) from None
        raise
    cfg = dataclasses.replace(cfg, source=source)
    validate(cfg)
    return cfg


def _check_override_key(dotted: str, source: str) -> None:
    cls: Any = Config
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        hints = get_type_hints(cls)
        if p not in hints or p == "source":
            raise ConfigError(".".join(parts[: i + 1]), "unknown key", source)
        tp = hints[p]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
        cls = inner[0]
        if i < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            raise ConfigError(".".join(parts[: i + 2]), f"'{p}' is not a section", source)


# --------------------------------------------------------------------------------------------
# Validation of values (types are already right here)
# --------------------------------------------------------------------------------------------


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
            raise ConfigError("baselines.lightgbm", "needs the lightgbm package: pip install "
                              "-e '.[baselines]' (or set it to false)", s) from None


def _validate_tune(tu: TuneConfig, s: str | None) -> None:
    _require(0 < tu.val_fraction < 0.5, "tune.val_fraction", "must be in (0, 0.5)", s)
    _require(2 <= tu.pbo_blocks <= 24 and tu.pbo_blocks % 2 == 0, "tune.pbo_blocks",
             f"must be an even number in [2, 24], got {tu.pbo_blocks}", s)
    for i, p in enumerate(tu.space):
        k = f"tune.space[{i}]"
        try:
            _check_override_key(p.key, s or "")
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
            key, _ = _parse_override(item, s)
            try:
                _check_override_key(key, s or "")
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


def with_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    """A new Config with dotted overrides applied to an existing one (validated)."""
    raw = cfg.to_dict()
    src = f"{cfg.source} (--set)" if cfg.source else "--set"
    for item in overrides:
        key, value = _parse_override(item, src)
        _check_override_key(key, src)
        _set_dotted(raw, key, value, src)
    out = _build(Config, raw, "", cfg.source)
    out = dataclasses.replace(out, source=cfg.source)
    validate(out)
    return out


def from_dict(raw: dict, source: str | None = None) -> Config:
    """Build and validate a Config from a plain dict (as written by Config.to_dict)."""
    cfg = dataclasses.replace(_build(Config, raw, "", source), source=source)
    validate(cfg)
    return cfg
