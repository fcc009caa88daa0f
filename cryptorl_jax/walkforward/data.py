"""A walk-forward run's data and each segment's fitted transforms (the runner's step 1).

`RunData` builds the causal features once per run and lays out the segments;
`fit_segment_transforms` fits the FFD order, robust scaler and HMM on a segment's train rows
only; `slice_data` cuts the fixed-length arrays the trainer and the backtest read. Shared by the
segment runner (walkforward.runner), tuning trials and `cryptorl evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd

from cryptorl_jax.config import Config
from cryptorl_jax.core.rundir import SegmentDir
from cryptorl_jax.env.trading import MarketData, StartRange
from cryptorl_jax.features import (
    RobustScaler,
    select_ffd_d,
)
from cryptorl_jax.market import load_market
from cryptorl_jax.regimes import RegimeModel, regime_frame
from cryptorl_jax.training.data import TrainData
from cryptorl_jax.walkforward.layout import build_run_features, run_offset, run_segments
from cryptorl_jax.walkforward.segments import Segment

STAGE_MAE, STAGE_TRAIN, STAGE_RANDOM_ENCODER = 1, 2, 3


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def segment_key(cfg: Config, index: int, stage: int) -> jax.Array:
    """Deterministic keys per segment and stage from the one root seed (docs/reference.md,
    principle 5)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), index), stage)


# --------------------------------------------------------------------------------------------
# Data preparation shared by the run and by evaluate
# --------------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The run's market, its causal raw features, and its walk-forward segments."""

    market: pd.DataFrame
    features: pd.DataFrame  # raw (unscaled) causal features on market.index
    offset: int  # first row a segment's lookback may read
    segments: list[Segment]
    traded: str
    close: np.ndarray

    @classmethod
    def build(cls, cfg: Config, market: pd.DataFrame, *,
              with_segments: bool = True) -> RunData:
        """Build the causal features of `market` once; `with_segments`: make the walk-forward
        segments (`segments.make_segments`; ConfigError if the data is too short for one);
        without, no segments (evaluate and a tuning trial choose their own rows)."""
        traded = cfg.data.traded_asset
        features = build_run_features(cfg, market)
        offset = run_offset(cfg, features)
        segments: list[Segment] = []
        if with_segments:
            segments = run_segments(cfg, len(market), offset)
        close = market[f"{traded}_close"].to_numpy(dtype=np.float64)
        return cls(market=market, features=features, offset=offset, segments=segments,
                   traded=traded, close=close)

    @property
    def tradable(self) -> np.ndarray:
        """[T] bool: the traded asset's bar at t really traded (False on bars the loader filled,
        `<ASSET>_fresh` == 0), so a position can be changed at its close."""
        col = f"{self.traded}_fresh"
        if col not in self.market.columns:
            return np.ones(len(self.market), bool)
        return self.market[col].to_numpy(dtype=np.float64) > 0


def prepare_run(cfg: Config, market: pd.DataFrame | None = None) -> RunData:
    """Load the market (unless given), build the causal features once, make the segments."""
    return RunData.build(cfg, load_market(cfg.data) if market is None else market)


@dataclass
class SegmentMatrix:
    """A segment's fitted transforms and its model-ready feature matrix (all rows)."""

    features: pd.DataFrame  # raw features (FFD at this segment's d)
    scaler: RobustScaler
    regime_model: RegimeModel | None
    proba: np.ndarray | None  # [T, K] forward-filtered regime probabilities
    matrix: np.ndarray  # [T, F] float32: scaled features ++ Prob_* (NaN in the warm-up)
    columns: list[str]
    ffd_d: dict[str, float]


def fit_segment_transforms(cfg: Config, run: RunData, seg: Segment) -> SegmentMatrix:
    """FFD order (if auto), scaler and HMM, each fitted on the segment's train rows only."""
    features = run.features
    ffd_d = dict(features.attrs.get("ffd_d", {}))
    if cfg.features.ffd and cfg.features.ffd_d == "auto":
        ffd_d = select_ffd_d(run.market, cfg.features, seg.train_rows)
        features = build_run_features(cfg, run.market, ffd_d)
    train_rows = features.iloc[seg.train_rows]
    scaler = RobustScaler.from_config(cfg.features).fit(train_rows)
    regime_model = None
    if cfg.regimes.enabled:
        regime_model = RegimeModel.from_config(cfg.regimes, seed=cfg.seed * 1000 + seg.index)
        regime_model.fit(train_rows)
    return _assemble(features, scaler, regime_model, ffd_d)


def _assemble(features: pd.DataFrame, scaler: RobustScaler, regime_model: RegimeModel | None,
              ffd_d: dict[str, float]) -> SegmentMatrix:
    scaled = scaler.transform(features)
    proba = None
    if regime_model is not None:
        probs = regime_frame(regime_model, features)
        proba = probs.to_numpy(dtype=np.float64)
        scaled = pd.concat([scaled, probs.astype(np.float32)], axis=1)
    return SegmentMatrix(features=features, scaler=scaler, regime_model=regime_model,
                         proba=proba, matrix=scaled.to_numpy(dtype=np.float32),
                         columns=[str(c) for c in scaled.columns], ffd_d=ffd_d)


def load_segment_transforms(cfg: Config, run: RunData, seg_dir: SegmentDir) -> SegmentMatrix:
    """The saved scaler / HMM / d of a finished segment applied to `run`'s rows."""
    meta = json.loads(seg_dir.transforms.read_text())
    ffd_d = {k: float(v) for k, v in meta["ffd_d"].items()}
    features = build_run_features(cfg, run.market, ffd_d or None)
    scaler = RobustScaler.load(seg_dir.scaler)
    regime_model = (RegimeModel.load(seg_dir.regime_model)
                    if seg_dir.regime_model.exists() else None)
    out = _assemble(features, scaler, regime_model, ffd_d)
    if out.columns != meta["columns"]:
        raise ValueError(f"{seg_dir.path}: the saved segment expects columns {meta['columns']}, "
                         f"the features now give {out.columns}")
    return out


def signals_only(cfg: Config) -> bool:
    """Whether the agent's market part is its baseline inputs alone (agent.observation)."""
    return cfg.agent.observation == "baselines"


def observation_arrays(matrix: np.ndarray, embeddings: np.ndarray | None,
                       signals: np.ndarray | None, *, only_signals: bool = False
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """(feature matrix, embeddings) as the agent reads them: the baseline signals
    (`agent.baseline_inputs`, [T, S]) appended to the embeddings when there are embeddings,
    else to the feature matrix (the window then covers them). `only_signals`
    (agent.observation baselines): the signals replace the embeddings, or the matrix."""
    if signals is None or signals.shape[1] == 0:
        if only_signals:
            raise ValueError("agent.observation baselines needs the baseline inputs' signals")
        return matrix, embeddings
    signals = np.asarray(signals, np.float32)
    if only_signals:
        return (matrix, signals) if embeddings is not None else (signals, None)
    if embeddings is not None:
        return matrix, np.concatenate([np.asarray(embeddings, np.float32), signals], axis=1)
    return np.concatenate([np.asarray(matrix, np.float32), signals], axis=1), None


def observation_dims(matrix: np.ndarray, embeddings: np.ndarray | None,
                     signals: np.ndarray | None, *, only_signals: bool = False
                     ) -> tuple[int, int | None]:
    """(n_features, embedding_dim) of the agent's observation: the widths of
    `observation_arrays` (built on no rows), what `stages.get_trainer` compiles for."""
    m, e = observation_arrays(np.asarray(matrix[:0]),
                              None if embeddings is None else np.asarray(embeddings[:0]),
                              None if signals is None else np.asarray(signals[:0]),
                              only_signals=only_signals)
    return int(m.shape[1]), None if e is None else int(e.shape[1])


def slice_data(cfg: Config, matrix: np.ndarray, close: np.ndarray, lo: int, hi: int,
               first_start: int, embeddings: np.ndarray | None,
               tradable: np.ndarray | None = None,
               signals: np.ndarray | None = None) -> TrainData:
    """TrainData over rows [lo, hi); episodes start at row first_start (absolute). `signals`
    [T, S]: the agent's baseline inputs, appended as `observation_arrays` says."""
    if lo < 0:
        raise ValueError(f"slice starts at row {lo} < 0")
    feats, emb = observation_arrays(matrix[lo:hi],
                                    None if embeddings is None else embeddings[lo:hi],
                                    None if signals is None else signals[lo:hi],
                                    only_signals=signals_only(cfg))
    market = MarketData.from_arrays(feats, close[lo:hi], cfg.env,
                                    tradable=None if tradable is None else tradable[lo:hi])
    start_range = StartRange.create(first_start - lo, hi - lo - 2, hi - lo - 1)
    emb = None if emb is None else jax.numpy.asarray(emb)
    return TrainData(market=market, start_range=start_range, embeddings=emb)


def demean_train_returns(data: TrainData) -> TrainData:
    """`data` with the traded asset's log returns minus their mean over the returns training
    realises (rows first_start + 1 .. last_row, tradable ones only; `train.demean_returns`).
    Other rows, the realised vol, the features and the closes are unchanged. The mean reads
    only train rows, so nothing after the train end reaches it."""
    market, sr = data.market, data.start_range
    if np.ndim(sr.first_start) != 0:
        raise ValueError("demean_train_returns takes one segment's TrainData, not a batch")
    r = np.asarray(market.log_returns, np.float64)
    rows = np.zeros(r.shape, bool)
    rows[int(sr.first_start) + 1:int(sr.last_row) + 1] = True
    rows &= np.asarray(market.tradable, bool)
    if not rows.any():
        raise ValueError("demean_train_returns: no tradable train row realises a return")
    shifted = np.where(rows, r - r[rows].mean(), r)
    market = market.replace(log_returns=jax.numpy.asarray(shifted, market.log_returns.dtype))
    return data.replace(market=market)
