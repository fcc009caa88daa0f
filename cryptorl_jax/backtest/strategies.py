"""Baselines that read the market, fitted on a segment's train rows only, traded like the agent.

The naive baselines (`backtest.baselines`: buy & hold, flat, i.i.d. random) read nothing. The
first question a quant asks of an RL trader is whether it beats the simple methods that see the
same information; these are them:

- `momentum`: time-series momentum (Moskowitz, Ooi and Pedersen 2012), a_t = sign(p_t - p_{t-k})
  with p the log close;
- `momentum_scaled`: the same k-hour return divided by its own standard deviation,
  a_t = clip((p_t - p_{t-k}) / (sigma_t sqrt(k)), -1, 1), sigma_t the hourly log-return std
  over the past max(k, 168) hours: a position sized by the strength of the trend (a t-statistic,
  Baltas and Kosowski 2013) instead of its sign;
- `crossover`: a_t = sign(SMA_f(p)_t - SMA_s(p)_t), a moving-average crossover on the log close;
- `ridge`: a ridge regression of the next-h-hour log return in units of its expected size
  (divided by sigma_t sqrt(h), sigma_t the past week's hourly std: `forecast_target`) on the
  agent's own observation features at the decision hour (the segment's scaled feature matrix,
  regime probabilities included: the last row of the agent's window, not the window
  flattened); the forecast is smoothed by a causal EMA (half-life m hours) and
  a_t = clip(f_t / s, -1, 1), s the standard deviation of the smoothed forecast on the fit
  rows (a one-sd forecast takes the full position). Three choices matter on hourly data (on
  the planted trend, issue 24's first version reached -127 % of the oracle): the smoothing is
  the forecaster's turnover control (Carver's forecast smoothing; unsmoothed, the forecast
  flipped with the hourly features' noise, ~1,750x NAV a year, 3.3 Sharpe lost to costs); the
  penalties reach alpha ~ 10 x the fit rows (57 features on ~13k overlapping rows: weak
  penalties fit the slow context features' noise); and the vol-scaled label (a raw return
  weights the high-vol hours' noise most, while a unit of action earns ~E[r / sigma] through
  the vol target);
- `lightgbm` (optional, `baselines.lightgbm: true`): a LightGBM regressor on the same inputs,
  target and mapping.

`ridge_oof` is not a baseline of its own but an agent input (`agent.baseline_inputs`): the
ridge's action with, on the train rows, out-of-fold forecasts (`ridge_oof_folds`: purged
k-fold cross-fitting, each fold forecast by a ridge fitted on the other folds), so the
column the agents learn from on the train rows is about as good as it will be on the test
rows (the in-sample ridge column looks better there than it ever is out of sample, and a
learner trusts it; issue 40). From the train end on it is the ridge's own action.

Each action goes through the same exposure mapping as the agent's (e_t = a_t L_t, the env's
vol target and cap, the no-trade band), the same units-and-cash ledger, costs and financing
(`backtest.replay.simulate`). Through that mapping even the sign rule is vol-scaled in
exposure (Kim, Tse and Wald 2016: much of time-series momentum's edge is its vol scaling).

What each fits, on the segment's train rows only:
- momentum and crossover: k (or the window pair) from a small stated grid, the one whose
  in-sample backtest over the train rows (after costs) has the highest Sharpe;
- ridge and lightgbm: the horizon h, the smoothing m (and ridge's penalty) on an inner split
  of the train rows:
  fit on the first (1 - validation_fraction) of them with the last h rows before the
  validation rows purged (no label reaches into them), score the policy's backtest Sharpe on
  the validation rows, then refit the chosen setting on all train rows (labels end at the last
  train row's close). The inner split reads the features through transforms fitted on its
  inner train rows only (`Market.refit`: the runner refits the scaler, the HMM and the FFD
  order there), so neither the inner fit nor the validation rows' inputs are scaled or
  regime-filtered with statistics of the validation rows; the final refit reads the segment's
  features (transforms fitted on all its train rows), as the agent does.

Every grid point tried counts in the multiple-testing N (`n_tried`). The fitted parameters are
plain numbers (`params`), written to the segment's baselines.json.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryptorl_jax.backtest.metrics import sharpe
from cryptorl_jax.backtest.replay import simulate
from cryptorl_jax.config import BaselinesConfig, EnvConfig
from cryptorl_jax.core.units import HOURS_PER_YEAR

STRATEGIES = ("momentum", "momentum_scaled", "crossover", "ridge", "lightgbm")
MIN_SIGMA_HOURS = 168
OOF_FOLDS = 6
"""`ridge_oof`'s folds on the train rows (three months each on an 18-month window)."""


@dataclass
class Fitted:
    """One fitted baseline: its chosen parameters and a causal action function."""

    name: str
    params: dict[str, Any]
    n_tried: int
    # actions(rows): the action decided at the close of each row in `rows` (absolute indices)
    act: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    # the ridge's out-of-fold action (`ridge_oof`, same signature); None unless asked for
    oof: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def actions(self, first: int, last: int) -> np.ndarray:
        """Actions decided at the closes of rows first .. last - 1."""
        return self.act(np.arange(first, last))


# --------------------------------------------------------------------------------------------
# Signals (causal: the value at row t reads rows <= t)
# --------------------------------------------------------------------------------------------


def _lagged_diff(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = x[k:] - x[:-k]
    return out


def _rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of x[t - w + 1 .. t] (NaN before w values)."""
    out = np.full(len(x), np.nan)
    if w <= len(x):
        c = np.concatenate([[0.0], np.cumsum(x)])
        out[w - 1:] = (c[w:] - c[:-w]) / w
    return out


def _rolling_std(x: np.ndarray, w: int) -> np.ndarray:
    """Sample std of x[t - w + 1 .. t] (NaN before w values)."""
    m = _rolling_mean(x, w)
    m2 = _rolling_mean(x * x, w)
    var = np.maximum(m2 - m * m, 0.0) * w / max(w - 1, 1)
    return np.sqrt(var)


def _finite_or_zero(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, 0.0)


def momentum_actions(close: np.ndarray, k: int) -> np.ndarray:
    """sign(p_t - p_{t-k}) at every row (0 where undefined)."""
    return _finite_or_zero(np.sign(_lagged_diff(np.log(close), k)))


def momentum_scaled_actions(close: np.ndarray, k: int) -> np.ndarray:
    """clip((p_t - p_{t-k}) / (sigma_t sqrt(k)), -1, 1), sigma_t over max(k, 168) hours."""
    p = np.log(close)
    sigma = hourly_sigma(close, max(k, MIN_SIGMA_HOURS))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = _lagged_diff(p, k) / (sigma * math.sqrt(k))
    return np.clip(_finite_or_zero(z), -1.0, 1.0)


def crossover_actions(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """sign(SMA_fast(log close) - SMA_slow(log close)) (0 before the slow average exists)."""
    p = np.log(close)
    return _finite_or_zero(np.sign(_rolling_mean(p, fast) - _rolling_mean(p, slow)))


def hourly_sigma(close: np.ndarray, w: int = MIN_SIGMA_HOURS) -> np.ndarray:
    """sigma_t: the sample std of the hourly log returns of rows t - w + 1 .. t (NaN before)."""
    p = np.log(close)
    r = np.concatenate([[np.nan], np.diff(p)])
    sigma = _rolling_std(np.nan_to_num(r, nan=0.0), w)
    sigma[:w] = np.nan  # the first return is undefined
    return sigma


def forecast_target(close: np.ndarray, h: int) -> np.ndarray:
    """The forecasters' label at row t: the next h hours' log return in units of its expected
    size, log(close_{t+h} / close_t) / (sigma_t sqrt(h)), sigma_t = `hourly_sigma` (known at
    t). The action scales the vol target's leverage ~1 / sigma, so E[r / sigma] is what a unit
    of action earns: a raw-return label would weight the high-vol hours' noise most."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = forward_log_return(close, h) / (hourly_sigma(close) * math.sqrt(h))
    return np.where(np.isfinite(y), y, np.nan)


def forward_log_return(close: np.ndarray, h: int) -> np.ndarray:
    """y_t = log(close_{t+h} / close_t) (NaN for the last h rows)."""
    p = np.log(close)
    out = np.full(len(p), np.nan)
    out[:-h] = p[h:] - p[:-h]
    return out


# --------------------------------------------------------------------------------------------
# Scoring a policy on a range of rows through the backtest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    """The run's arrays a baseline is fitted and traded on (absolute rows)."""

    close: np.ndarray  # [T]
    tradable: np.ndarray  # [T] bool
    features: np.ndarray  # [T, F] the segment's scaled observation features (NaN in warm-up)
    lookback: int  # rows before a backtest's first row that its vol estimate reads
    # refit(lo, hi): the same feature matrix with its fitted transforms (scaler, regime model,
    # FFD order) fitted on rows [lo, hi) only; None: `features` has no transform fitted on the
    # train rows, and the inner split reads it as it is
    refit: Callable[[int, int], np.ndarray] | None = field(default=None, repr=False,
                                                           compare=False)


def inner_market(market: Market, start: int, end: int) -> Market:
    """The market a forecaster's inner split [start, end) reads: the features through
    transforms fitted on those rows only (`Market.refit`; the market itself without one)."""
    if market.refit is None:
        return market
    return dataclasses.replace(market, features=np.asarray(market.refit(start, end)))


def backtest_sharpe(market: Market, env: EnvConfig, actions_by_row: np.ndarray,
                    start: int, end: int) -> float:
    """Per-period Sharpe (after costs) of trading rows [start, end) with actions decided at the
    closes of rows start - 1 .. end - 2 (`actions_by_row`: one per row of the run)."""
    lo = start - market.lookback
    first = market.lookback - 1
    a = np.zeros(end - lo)
    a[first:first + end - start] = actions_by_row[start - 1:end - 1]
    sim = simulate(market.close[lo:end], a, env, start=first, tradable=market.tradable[lo:end])
    s = sharpe(sim["returns"], 1.0)
    return s if math.isfinite(s) else -math.inf


def _pick(scores: dict[Any, float]) -> Any:
    """The grid point with the highest score (the first on ties; -inf for NaN)."""
    best, best_s = None, -math.inf
    for key, s in scores.items():
        if best is None or s > best_s:
            best, best_s = key, s
    return best


def _rule_fit(name: str, grid: list[Any], signal: Callable[[Any], np.ndarray],
              market: Market, env: EnvConfig, train: tuple[int, int],
              label: Callable[[Any], dict[str, Any]]) -> Fitted:
    start, end = train
    signals = {g: signal(g) for g in grid}
    scores = {g: backtest_sharpe(market, env, signals[g], start, end) for g in grid}
    best = _pick(scores)
    chosen = signals[best]
    params = {**label(best), "train_sharpe": _annual(scores[best]),
              "grid": [{**label(g), "train_sharpe": _annual(scores[g])} for g in grid]}
    return Fitted(name, params, len(grid), lambda rows: chosen[rows])


def _annual(per_period: float) -> float | None:
    v = per_period * math.sqrt(HOURS_PER_YEAR)
    return float(v) if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# Forecasters
# --------------------------------------------------------------------------------------------


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(coef, intercept) of scikit-learn's Ridge (intercept unpenalised) on finite rows."""
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit(x, y)
    return np.asarray(model.coef_, np.float64), float(model.intercept_)


def _fit_rows(market: Market, y: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows in [lo, hi) whose features and label are finite."""
    rows = np.arange(lo, max(lo, hi))
    ok = np.isfinite(market.features[rows]).all(axis=1) & np.isfinite(y[rows])
    return rows[ok]


def ema(x: np.ndarray, halflife: float) -> np.ndarray:
    """Causal exponential moving average, y_t = (1 - w) y_{t-1} + w x_t with w = 1 - 2^(-1/hl),
    started at y_0 = x_0 (halflife 0: x itself)."""
    x = np.asarray(x, np.float64)
    if halflife <= 0 or len(x) == 0:
        return x.copy()
    from scipy.signal import lfilter

    w = 1.0 - 0.5 ** (1.0 / halflife)
    y, _ = lfilter([w], [1.0, -(1.0 - w)], x, zi=[(1.0 - w) * x[0]])
    return y


class _Forecaster:
    """A fitted forecaster's policy over the run's rows: f_t = the model on row t's features
    (0 where they are NaN), smoothed by a causal EMA of half-life `smoothing` hours, and
    a_t = clip(f_t / scale, -1, 1). The EMA runs over the whole run from its first row, so the
    action at row t reads rows <= t only."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], features: np.ndarray,
                 fit_rows: np.ndarray):
        ok = np.isfinite(features).all(axis=1)
        raw = np.zeros(len(features))
        if ok.any():
            raw[ok] = predict(features[ok].astype(np.float64))
        self.raw, self.fit_rows = raw, fit_rows

    def policy(self, smoothing: float) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        """(actions(rows), scale): scale is the sd of the smoothed forecast on the fit rows (a
        one-sd forecast takes the full position)."""
        path = ema(self.raw, smoothing)
        scale = float(np.std(path[self.fit_rows]))
        actions = _scaled(path, scale)
        return (lambda rows: actions[rows]), (scale if scale > 0 else 0.0)

    def actions(self, smoothing: float, scale: float) -> np.ndarray:
        """The action at every row for a given smoothing and scale (a saved fit's)."""
        return _scaled(ema(self.raw, smoothing), scale)


def _scaled(path: np.ndarray, scale: float) -> np.ndarray:
    """clip(path / scale, -1, 1); 0 everywhere when scale is not > 0."""
    if not scale > 0:
        return np.zeros(len(path))
    return np.clip(path / scale, -1.0, 1.0)


def _train_forecaster(kind: str, market: Market, h: int, alpha: float, lo: int, hi: int,
                      seed: int) -> tuple[_Forecaster, dict[str, Any]] | None:
    """Fit on decision rows [lo, hi - h) (labels end at row hi - 1's close)."""
    y = forecast_target(market.close, h)
    rows = _fit_rows(market, y, lo, hi - h)
    if len(rows) < 2 * market.features.shape[1]:  # fewer than 2 rows per feature: no fit
        return None
    x = market.features[rows].astype(np.float64)
    if kind == "ridge":
        coef, intercept = ridge_fit(x, y[rows], alpha)
        predict = lambda z: z @ coef + intercept  # noqa: E731
        info: dict[str, Any] = {"coef": coef.tolist(), "intercept": intercept}
    else:
        import lightgbm as lgb

        model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15,
                                  min_child_samples=200, subsample=0.8, subsample_freq=1,
                                  colsample_bytree=0.8, random_state=seed, n_jobs=1,
                                  deterministic=True, force_row_wise=True, verbose=-1)
        model.fit(x, y[rows])
        predict = model.predict
        info = {"n_trees": int(model.n_estimators)}
    return _Forecaster(predict, market.features, rows), {**info, "fit_rows": int(len(rows))}


def ridge_oof_folds(market: Market, h: int, alpha: float, smoothing: float, start: int,
                    end: int, folds: int = OOF_FOLDS) -> list[dict[str, Any]]:
    """The cross-fits behind `ridge_oof` on train rows [start, end): the rows cut into `folds`
    contiguous folds, and for each the ridge of the chosen horizon h and penalty alpha fitted
    on the train rows outside it, purged (de Prado 2018, ch. 7): no decision row whose label
    reaches into the fold (the h rows before it) and none whose label reads the fold's prices
    through its vol (the `MIN_SIGMA_HOURS` + h rows after it, the embargo), so a fold's
    coefficients read nothing of the fold's prices. Each with its own scale (the sd of its
    smoothed forecast on its fit rows, as the final fit's). A fold whose complement has too few
    rows (< 2 per feature) has no fit: its rows read 0. The setting (h, alpha, smoothing) and
    the feature transforms are the segment's, chosen on all train rows."""
    y = forecast_target(market.close, h)
    ok = np.isfinite(market.features).all(axis=1)
    edges = np.linspace(start, end, folds + 1).round().astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        rows = np.concatenate([_fit_rows(market, y, start, min(lo - h, end - h)),
                               _fit_rows(market, y, hi + MIN_SIGMA_HOURS + h, end - h)])
        if len(rows) < 2 * market.features.shape[1]:
            continue
        coef, intercept = ridge_fit(market.features[rows].astype(np.float64), y[rows], alpha)
        raw = np.zeros(end - start)
        seen = ok[start:end]
        raw[seen] = market.features[start:end][seen].astype(np.float64) @ coef + intercept
        scale = float(np.std(ema(raw, smoothing)[rows - start]))
        out.append({"start": int(lo), "end": int(hi), "coef": coef.tolist(),
                    "intercept": intercept, "scale": scale if scale > 0 else 0.0})
    return out


def ridge_oof_actions(market: Market, final: dict[str, Any], oof: dict[str, Any]) -> np.ndarray:
    """`ridge_oof`'s action at every row: clip(EMA(g)_t, -1, 1) with g_t the forecast in units
    of its fit's scale: on a train row from the fit that left its fold out
    (`ridge_oof_folds`), from the train end on from the final fit (`final`: the ridge's coef,
    intercept, scale), 0 before the train rows. From the train end on it reads rows <= t
    only (causal, as every input the agents trade on); on the train rows it is a cross-fit,
    like every transform fitted on the train rows."""
    feats = market.features
    ok = np.isfinite(feats).all(axis=1)
    g = np.zeros(len(feats))
    end = int(oof["train"][1])
    parts = [(int(f["start"]), int(f["end"]), f) for f in oof["folds"]]
    for lo, hi, fit in [*parts, (end, len(feats), final)]:
        scale = float(fit["scale"])
        rows = np.arange(lo, hi)[ok[lo:hi]]
        if scale > 0 and len(rows):
            coef = np.asarray(fit["coef"], np.float64)
            if coef.shape != (feats.shape[1],):
                raise ValueError(f"ridge_oof: {coef.shape[0]} coefficients for "
                                 f"{feats.shape[1]} feature columns")
            g[rows] = (feats[rows].astype(np.float64) @ coef + float(fit["intercept"])) / scale
    return np.clip(ema(g, float(oof["smoothing_hours"])), -1.0, 1.0)


def _forecaster_fit(kind: str, market: Market, env: EnvConfig, train: tuple[int, int],
                    cfg: BaselinesConfig, seed: int, oof: bool = False) -> Fitted | None:
    start, end = train
    n_val = int(round((end - start) * cfg.validation_fraction))
    v0 = end - n_val
    alphas = list(cfg.ridge_alphas) if kind == "ridge" else [0.0]
    smoothings = list(cfg.forecast_smoothing_hours)
    grid = [(h, a, m) for h in cfg.forecast_horizons for a in alphas for m in smoothings]
    inner = inner_market(market, start, v0)  # transforms fitted on the inner train rows only
    scores: dict[Any, float] = {}
    for h in cfg.forecast_horizons:
        for a in alphas:
            fit = _train_forecaster(kind, inner, h, a, start, v0, seed)
            for m in smoothings:
                if fit is None:
                    scores[(h, a, m)] = -math.inf
                    continue
                act, _ = fit[0].policy(m)
                by_row = np.zeros(len(market.close))
                rows = np.arange(v0 - 1, end - 1)
                by_row[rows] = act(rows)
                scores[(h, a, m)] = backtest_sharpe(inner, env, by_row, v0, end)
    h, a, m = _pick({g: scores[g] for g in grid})
    final = _train_forecaster(kind, market, h, a, start, end, seed)
    if final is None:
        return None
    forecaster, info = final
    policy, scale = forecaster.policy(m)

    def label(g: tuple[int, float, float]) -> dict[str, Any]:
        out: dict[str, Any] = {"horizon": g[0]}
        if kind == "ridge":
            out["alpha"] = g[1]
        out["smoothing_hours"] = g[2]
        return out

    params = {**label((h, a, m)), **info, "scale": scale,
              "validation_sharpe": _annual(scores[(h, a, m)]),
              "validation_rows": [int(v0), int(end)],
              "grid": [{**label(g), "validation_sharpe": _annual(scores[g])} for g in grid]}
    oof_act = None
    if oof and kind == "ridge":
        params["oof"] = {"train": [int(start), int(end)], "smoothing_hours": m,
                         "folds": ridge_oof_folds(market, h, a, m, start, end)}
        oof_path = ridge_oof_actions(market, params, params["oof"])
        oof_act = lambda rows: oof_path[rows]  # noqa: E731
    return Fitted(kind, params, len(grid), policy, oof=oof_act)


# --------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------


def fit_all(cfg: BaselinesConfig, env: EnvConfig, market: Market, train: tuple[int, int],
            seed: int = 0, only: tuple[str, ...] | None = None,
            oof: bool = False) -> list[Fitted]:
    """Every enabled baseline fitted on train rows [train[0], train[1]) only; `only`: just
    these names (whether or not baselines.enabled: the agent's inputs,
    `agent.baseline_inputs`), in STRATEGIES' order. `oof`: the ridge also carries its
    out-of-fold action (`Fitted.oof`: the agent input `ridge_oof`)."""
    if only is None and not cfg.enabled:
        return []
    wanted = [n for n in STRATEGIES if (n != "lightgbm" or cfg.lightgbm)] if only is None \
        else [n for n in STRATEGIES if n in only]
    close = market.close
    rules: dict[str, Callable[[], Fitted]] = {
        "momentum": lambda: _rule_fit(
            "momentum", list(cfg.momentum_lookbacks), lambda k: momentum_actions(close, k),
            market, env, train, lambda k: {"lookback": k}),
        "momentum_scaled": lambda: _rule_fit(
            "momentum_scaled", list(cfg.momentum_lookbacks),
            lambda k: momentum_scaled_actions(close, k), market, env, train,
            lambda k: {"lookback": k}),
        "crossover": lambda: _rule_fit(
            "crossover", [tuple(w) for w in cfg.crossover_windows],
            lambda w: crossover_actions(close, *w), market, env, train,
            lambda w: {"fast": w[0], "slow": w[1]}),
    }
    out = []
    for name in wanted:
        f = rules[name]() if name in rules else _forecaster_fit(name, market, env, train, cfg,
                                                                 seed, oof=oof)
        if f is not None:
            out.append(f)
    return out


def from_params(name: str, params: dict[str, Any], market: Market) -> Fitted:
    """A fitted baseline rebuilt from its baselines.json record (`params_record`) on `market`:
    the same actions as the fit's on every row, without refitting (evaluate and paper trading
    rebuild the agent's `agent.baseline_inputs` this way). Not for lightgbm (its trees are not
    saved)."""
    close = market.close
    try:
        if name == "momentum":
            path = momentum_actions(close, int(params["lookback"]))
        elif name == "momentum_scaled":
            path = momentum_scaled_actions(close, int(params["lookback"]))
        elif name == "crossover":
            path = crossover_actions(close, int(params["fast"]), int(params["slow"]))
        elif name == "ridge":
            coef = np.asarray(params["coef"], np.float64)
            intercept = float(params["intercept"])
            if coef.shape != (market.features.shape[1],):
                raise ValueError(f"ridge: {coef.shape[0]} coefficients for "
                                 f"{market.features.shape[1]} feature columns")
            forecaster = _Forecaster(lambda z: z @ coef + intercept, market.features,
                                     np.zeros(0, np.int64))
            path = forecaster.actions(float(params["smoothing_hours"]), float(params["scale"]))
        else:
            raise ValueError(f"{name}: not rebuildable from its parameters")
        oof_path = (ridge_oof_actions(market, params, params["oof"])
                    if name == "ridge" and "oof" in params else None)
    except KeyError as e:
        raise ValueError(f"{name}: baselines.json lacks {e.args[0]!r}") from None
    return Fitted(name, dict(params), int(params.get("n_tried", 1)),
                  lambda rows: path[rows],
                  oof=None if oof_path is None else (lambda rows: oof_path[rows]))


def params_record(fitted: list[Fitted]) -> dict[str, Any]:
    """baselines.json: each baseline's chosen parameters and grid size."""
    return {f.name: {"n_tried": f.n_tried, **f.params} for f in fitted}
