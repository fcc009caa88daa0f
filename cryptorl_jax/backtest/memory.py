"""A policy's declared memory M: how many hours of past returns its action at t can read.

The timing null (`backtest.nulls`) rotates the action path by lags k > M so that the rotated
action a_{t+k} does not read r_{t+1}, the return it is scored on (docs/methods.md, "The
statistics of the report"). M is declared from the config, not measured from the actions:

    M = max(W - 1 + F, V + 1)

- W = env.window, the observation window the agent (and the encoder) reads: features of rows
  t - W + 1 .. t;
- F = the longest lookback of any input column (`feature_memory`): a rolling window of w rows
  counts w; the FFD its weights' width at features.ffd_d and features.ffd_threshold (the widest
  over features.ffd_d_grid when 'auto'); an exponential filter with weight (1 - alpha)^j on the
  j-th past value counts the lag at which that weight falls below features.ffd_threshold (the
  one truncation tolerance the config states), cascaded filters the sum of theirs; the regime
  probabilities their inputs' lookback plus `HMM_FILTER_HOURS`;
- V = env.vol_window: the agent's state holds the drifted weight w_t, traded at L_{t-1} from the
  realised vol of r_{t-V} .. r_{t-1}, and drifted by r_t.

What M does not bound (docs/methods.md): the FFD's weights sum to 0.07 at d = 0.4, so it carries
a small loading on the price level (all past returns); the agent's drawdown and previous action
reach back to its segment's first hour; and each segment's agent learnt from its train rows.
"""

from __future__ import annotations

import math

from cryptorl_jax.config import BaselinesConfig, Config, FeaturesConfig, RegimesConfig
from cryptorl_jax.features.engineering import ffd_weights

# The forward filter's memory. Measured (tolerance 1e-4 in total variation between filters
# started from every pair of states; 300 start hours each): the default 4-state HMM fitted on
# 18 months of BTC (three windows, 2019-12 .. 2023-05) and on the planted `regime` and `none`
# markets forgets its state within at most 30 h (median 5-7 h): the realised-vol input pins the
# state. 72 h declares ~2.4x the longest measured.
HMM_FILTER_HOURS = 72


def geometric_hours(alpha: float, tolerance: float) -> int:
    """The lag j at which an exponential filter's weight (1 - alpha)^j falls below tolerance
    (relative to the newest value's): ceil(ln tolerance / ln(1 - alpha))."""
    if not 0 < alpha <= 1 or not 0 < tolerance < 1:
        raise ValueError(f"alpha must be in (0, 1] and tolerance in (0, 1), got {alpha}, "
                         f"{tolerance}")
    return 1 if alpha == 1 else int(math.ceil(math.log(tolerance) / math.log(1.0 - alpha)))


def _ffd_width(f: FeaturesConfig) -> int:
    grid = f.ffd_d_grid if f.ffd_d == "auto" else (f.ffd_d,)
    return max(len(ffd_weights(float(d), f.ffd_threshold)) for d in grid)


def feature_memory(f: FeaturesConfig) -> dict[str, int]:
    """Hours of past returns each enabled group of `features.build_features` reads at row t
    (the traded asset's 1 h return and its realised vol over features.range_vol_window always
    exist); pandas-ta-classic's smoothers: RSI, ATR and ADX Wilder's (alpha = 1 / n), MACD
    EMAs (alpha = 2 / (n + 1))."""
    tol = f.ffd_threshold
    wilder = lambda n: geometric_hours(1.0 / n, tol)  # noqa: E731
    ema = lambda n: geometric_hours(2.0 / (n + 1.0), tol)  # noqa: E731
    out = {"returns": max(f.return_horizons) if f.returns and f.return_horizons else 1,
           "realised_vol": f.range_vol_window}
    if f.zscore:
        out["zscore"] = f.zscore_window
    if f.ffd:
        out["ffd"] = _ffd_width(f)
    if f.range_vol:
        out["range_vol"] = f.range_vol_window
    if f.ta and f.ta_assets:
        out["rsi"] = 1 + wilder(f.rsi_length)
        out["macd"] = ema(f.macd_slow) + ema(f.macd_signal)
        out["atr"] = 1 + wilder(f.atr_length)
        out["adx"] = 1 + 2 * wilder(f.adx_length)
        out["bbands"] = f.bbands_length
    if f.cross_asset:
        if f.equity_asset is not None or f.dollar_asset is not None:
            out["correlation"] = f.corr_window
        if f.ratio_asset is not None:
            out["ratio"] = 1
    return out


def regime_memory(r: RegimesConfig, f: FeaturesConfig) -> int:
    """The regime probabilities' lookback: their inputs' (the 1 h return and the realised vol
    by default; any feature columns otherwise) plus the filter's `HMM_FILTER_HOURS`; 0 when
    the regimes are off."""
    if not r.enabled:
        return 0
    inputs = f.range_vol_window if r.columns is None else max(feature_memory(f).values())
    return inputs + HMM_FILTER_HOURS


def feature_row_memory(cfg: Config) -> int:
    """The longest lookback of one row of the feature matrix (features and regimes)."""
    return max(max(feature_memory(cfg.features).values()),
               regime_memory(cfg.regimes, cfg.features))


def observation_memory(cfg: Config) -> int:
    """F: the longest lookback of one row of the observation (`feature_row_memory`, and the
    baselines the agent reads, `agent.baseline_inputs`, at `baseline_memory_hours`)."""
    return max([feature_row_memory(cfg),
                *(baseline_memory_hours(cfg, n) for n in cfg.agent.baseline_inputs)])


def memory_parts(cfg: Config) -> dict[str, int]:
    """The inputs of M by name (hours): the observation's F, its window and the book state."""
    return {"observation_row": observation_memory(cfg), "window": cfg.env.window - 1,
            "book_state": cfg.env.vol_window + 1}


def policy_memory_hours(cfg: Config) -> int:
    """M of the agent (module docstring): max(W - 1 + F, V + 1)."""
    p = memory_parts(cfg)
    return max(p["window"] + p["observation_row"], p["book_state"])


def baseline_memory_hours(cfg: Config, name: str) -> int:
    """M of a fitted baseline (`backtest.strategies`): the rules their longest lookback on the
    grid (momentum_scaled's sigma reads at least 168 h); the forecasters one observation row
    (no window) plus their EMA smoothing at features.ffd_threshold; otherwise the agent's."""
    from cryptorl_jax.backtest.strategies import MIN_SIGMA_HOURS

    b: BaselinesConfig = cfg.baselines
    if name == "momentum":
        return max(b.momentum_lookbacks)
    if name == "momentum_scaled":
        return max(max(b.momentum_lookbacks), MIN_SIGMA_HOURS)
    if name == "crossover":
        return max(max(w) for w in b.crossover_windows)
    if name in ("ridge", "ridge_oof", "lightgbm"):
        smooth = max((geometric_hours(1.0 - 0.5 ** (1.0 / m), cfg.features.ffd_threshold)
                      for m in b.forecast_smoothing_hours if m > 0), default=0)
        return feature_row_memory(cfg) + smooth
    return policy_memory_hours(cfg)
