"""Gaussian HMM market regimes: fitted on train rows, causally forward-filtered, ordered by vol.

hmmlearn fits the model (EM, `n_fits` random restarts, the best log-likelihood wins); after
that the model is plain arrays. `filter_proba` is our own forward filter in log space, so the
probability at t is P(state_t | x_0..x_t): hmmlearn's `predict_proba` is forward-backward
smoothed and `predict` is Viterbi, and both use the future (docs/reference.md, principle 4).
States are relabelled by increasing volatility, so `Prob_0` is the calmest regime in every
segment.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.features.stationarity import blas_single_thread

log = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
_FORMAT = "cryptorl_jax.RegimeModel/1"


def default_columns(frame: pd.DataFrame) -> list[str]:
    """The traded asset's `<A>_logret_1h` and realised vol `<A>_rvol_<V>` (build_features)."""
    traded = frame.attrs.get("traded_asset")
    rvol = frame.attrs.get("realised_vol_column")
    if not traded:
        candidates = [c for c in frame.columns if "_rvol_" in str(c)]
        if len(candidates) != 1:
            raise ValueError("RegimeModel: cannot tell the traded asset (the feature frame has "
                             "no attrs['traded_asset'] and not exactly one '<A>_rvol_<V>' "
                             f"column: {candidates}); pass columns=[...]")
        rvol = str(candidates[0])
        traded = rvol.split("_rvol_")[0]
    if not rvol:
        candidates = [c for c in frame.columns if str(c).startswith(f"{traded}_rvol_")]
        rvol = str(candidates[0]) if candidates else f"{traded}_rvol_24"
    return [f"{traded}_logret_1h", str(rvol)]


def log_gaussian(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t; mu_k, Sigma_k) for every row and state: [T, D] -> [T, K]; NaN rows stay NaN.

    Row-wise elementwise arithmetic (a Cholesky forward substitution per state), so each row's
    value does not depend on how many rows are passed (bit-identical on prefixes).
    """
    n_rows, dim = x.shape
    out = np.empty((n_rows, len(means)))
    for k, (mu, cov) in enumerate(zip(means, covars)):
        chol = np.linalg.cholesky(cov)  # [D, D] lower
        diff = x - mu  # [T, D]
        solved = np.empty_like(diff)
        for j in range(dim):
            acc = diff[:, j].copy()
            for i in range(j):
                acc -= chol[j, i] * solved[:, i]
            solved[:, j] = acc / chol[j, j]
        maha = np.zeros(n_rows)
        for j in range(dim):
            maha += solved[:, j] * solved[:, j]
        log_det = 2.0 * float(np.log(np.diag(chol)).sum())
        out[:, k] = -0.5 * (maha + dim * math.log(2.0 * math.pi) + log_det)
    return out


def forward_filter(log_emission: np.ndarray, startprob: np.ndarray,
                   transmat: np.ndarray) -> np.ndarray:
    """Normalised forward variables P(s_t | x_0..x_t) in log space (Rabiner 1989, eq. 19-20).

    log_emission: [T, K]; rows with NaN are unobserved: leading ones give NaN output (the
    filter starts at the first observed row, from `startprob`), later ones only propagate
    through the transition matrix. Returns [T, K] probabilities.
    """
    n_rows, n_states = log_emission.shape
    out = np.full((n_rows, n_states), np.nan)
    observed = np.isfinite(log_emission).all(axis=1)
    if not observed.any():
        return out
    first = int(np.argmax(observed))
    with np.errstate(divide="ignore"):
        log_alpha = np.log(startprob) + log_emission[first]
        log_alpha = log_alpha - _logsumexp(log_alpha)
        out[first] = np.exp(log_alpha)
        for t in range(first + 1, n_rows):
            # log sum_i exp(la_i) A_ij, shifted by max_i la_i for stability
            shift = log_alpha.max()
            log_alpha = np.log(np.exp(log_alpha - shift) @ transmat) + shift
            if observed[t]:
                log_alpha = log_alpha + log_emission[t]
            log_alpha = log_alpha - _logsumexp(log_alpha)
            out[t] = np.exp(log_alpha)
    return out


def _logsumexp(values: np.ndarray) -> float:
    shift = values.max()
    return float(shift + np.log(np.exp(values - shift).sum()))


def stationary_distribution(transmat: np.ndarray) -> np.ndarray:
    """pi with pi A = pi, sum(pi) = 1 (least squares, for reducible chains too)."""
    n = len(transmat)
    system = np.vstack([transmat.T - np.eye(n), np.ones((1, n))])
    rhs = np.zeros(n + 1)
    rhs[-1] = 1.0
    pi = np.linalg.lstsq(system, rhs, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


class RegimeModel:
    """K-state Gaussian HMM on standardised feature columns; states ordered calm -> turbulent."""

    def __init__(self, n_states: int = 4, columns: Sequence[str] | None = None,
                 covariance_type: str = "full", n_iter: int = 200, tol: float = 1e-4,
                 n_fits: int = 3, seed: int = 0):
        if n_states < 1:
            raise ValueError(f"RegimeModel: n_states must be >= 1, got {n_states}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"RegimeModel: covariance_type must be one of {COVARIANCE_TYPES}, "
                             f"got {covariance_type!r}")
        if n_iter < 1 or n_fits < 1 or not tol > 0:
            raise ValueError("RegimeModel: n_iter and n_fits must be >= 1 and tol > 0")
        self.n_states = int(n_states)
        self.columns = None if columns is None else [str(c) for c in columns]
        self.covariance_type = covariance_type
        self.n_iter = int(n_iter)
        self.tol = float(tol)
        self.n_fits = int(n_fits)
        self.seed = int(seed)
        # fitted state (None until fit/load)
        self.input_mean: np.ndarray | None = None  # [D]
        self.input_std: np.ndarray | None = None  # [D]
        self.startprob: np.ndarray | None = None  # [K]
        self.transmat: np.ndarray | None = None  # [K, K]
        self.means: np.ndarray | None = None  # [K, D], standardised units
        self.covars: np.ndarray | None = None  # [K, D, D], standardised units
        self.log_likelihood: float | None = None
        self.n_train: int | None = None
        self.fit_scores: list[float] = []
        self.converged: bool | None = None
        self.relabel_order: list[int] | None = None  # fitted state index of each new label

    @classmethod
    def from_config(cls, regimes_config: Any, seed: int = 0) -> RegimeModel:
        """A model with cfg.regimes' settings."""
        r = regimes_config
        return cls(n_states=r.n_states, columns=r.columns, covariance_type=r.covariance_type,
                   n_iter=r.n_iter, tol=r.tol, n_fits=r.n_fits, seed=seed)

    @property
    def is_fitted(self) -> bool:
        return self.transmat is not None

    # ----------------------------------------------------------------------------------------
    def _raw_inputs(self, frame: pd.DataFrame) -> np.ndarray:
        if self.columns is None:
            self.columns = default_columns(frame)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"RegimeModel: input column(s) {missing} not in the frame "
                             f"(columns: {list(frame.columns)[:12]}...)")
        return frame[self.columns].to_numpy(dtype=np.float64)  # [T, D]

    def inputs(self, frame: pd.DataFrame) -> np.ndarray:
        """The standardised inputs [T, D] the HMM sees (NaN rows where an input is missing)."""
        self._require_fitted()
        raw = self._raw_inputs(frame)
        raw = np.where(np.isfinite(raw).all(axis=1, keepdims=True), raw, np.nan)
        return (raw - self.input_mean) / self.input_std

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("RegimeModel: call fit() (or RegimeModel.load) first")

    # ----------------------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> RegimeModel:
        """Fit on `frame`, which must be the segment's train rows only (NaN rows dropped)."""
        from hmmlearn.hmm import GaussianHMM

        raw = self._raw_inputs(frame)
        ok = np.isfinite(raw).all(axis=1)
        n_ok = int(ok.sum())
        need = max(10 * self.n_states, self.n_states + 2)
        if n_ok < need:
            raise ValueError(f"RegimeModel.fit: {n_ok} rows with finite {self.columns} out of "
                             f"{len(frame)}; need at least {need}")
        train = raw[ok]
        self.input_mean = train.mean(axis=0)
        std = train.std(axis=0)
        self.input_std = np.where(std > 0, std, 1.0)
        z = (train - self.input_mean) / self.input_std
        lengths = _run_lengths(ok)  # contiguous finite runs: the chain is not glued over gaps

        seeds = np.random.SeedSequence(self.seed).generate_state(self.n_fits)
        best, best_score, scores = None, -np.inf, []
        for i, s in enumerate(seeds):
            model = GaussianHMM(n_components=self.n_states, covariance_type=self.covariance_type,
                                n_iter=self.n_iter, tol=self.tol, random_state=int(s))
            try:
                # one BLAS/OpenMP thread: the problem is tiny, and k-means' threads spin for
                # seconds on a loaded 2-core machine (measured: 6.2 s vs 0.5 s for 20 iterations)
                with warnings.catch_warnings(), blas_single_thread():
                    warnings.simplefilter("ignore")
                    model.fit(z, lengths)
                    score = float(model.score(z, lengths))
            except (ValueError, np.linalg.LinAlgError) as exc:
                log.warning("RegimeModel.fit: restart %d/%d failed (%s)", i + 1, self.n_fits, exc)
                continue
            if not np.isfinite(score):
                log.warning("RegimeModel.fit: restart %d/%d has log-likelihood %s", i + 1,
                            self.n_fits, score)
                continue
            scores.append(score)
            if score > best_score:
                best, best_score = model, score
        if best is None:
            raise RuntimeError(f"RegimeModel.fit: all {self.n_fits} restarts failed")

        self.startprob = np.asarray(best.startprob_, dtype=np.float64)
        self.transmat = np.asarray(best.transmat_, dtype=np.float64)
        self.means = np.asarray(best.means_, dtype=np.float64)
        self.covars = np.asarray(best.covars_, dtype=np.float64)  # full [K, D, D] for every type
        self.log_likelihood = best_score
        self.n_train = n_ok
        self.fit_scores = scores
        self.converged = bool(best.monitor_.converged)
        self._order_by_volatility()
        log.info("RegimeModel fitted on %d rows of %s (log-likelihood %.2f, restarts %s)\n%s",
                 n_ok, self.columns, best_score, [round(v, 2) for v in scores],
                 self.summary_frame().to_string(float_format=lambda v: f"{v:.4g}"))
        return self

    def state_volatility(self) -> np.ndarray:
        """Per-state volatility used for the ordering: the std of the first `_logret_` input in
        that state (original units); without one, the state mean of the first vol input
        (`_rvol_`, `_parkinson_`, `_gk_`, `_atrpct_`); otherwise the root of the covariance
        trace."""
        self._require_fitted()
        ret = [i for i, c in enumerate(self.columns) if "_logret_" in c]
        vol = [i for i, c in enumerate(self.columns)
               if any(tag in c for tag in ("_rvol_", "_parkinson_", "_gk_", "_atrpct_"))]
        if ret:
            i = ret[0]
            return np.sqrt(self.covars[:, i, i]) * self.input_std[i]
        if vol:
            i = vol[0]
            return self.means[:, i] * self.input_std[i] + self.input_mean[i]
        return np.sqrt(np.trace(self.covars, axis1=1, axis2=2))

    def _order_by_volatility(self) -> None:
        order = np.argsort(self.state_volatility(), kind="stable")
        self.relabel_order = [int(k) for k in order]
        self.startprob = self.startprob[order]
        self.transmat = self.transmat[np.ix_(order, order)]
        self.means = self.means[order]
        self.covars = self.covars[order]

    # ----------------------------------------------------------------------------------------
    def filter_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Forward-filtered P(state_t | inputs up to t), [T, K]; NaN rows for the warm-up."""
        z = self.inputs(frame)
        log_emission = log_gaussian(z, self.means, self.covars)
        return forward_filter(log_emission, self.startprob, self.transmat)

    def summary(self) -> dict[str, Any]:
        """Fitted state statistics (original units) and the log-likelihood."""
        self._require_fitted()
        stay = np.diag(self.transmat)
        with np.errstate(divide="ignore"):
            duration = np.where(stay < 1.0, 1.0 / (1.0 - stay), np.inf)
        pi = stationary_distribution(self.transmat)
        means = self.means * self.input_std + self.input_mean
        stds = np.sqrt(np.diagonal(self.covars, axis1=1, axis2=2)) * self.input_std
        vol = self.state_volatility()
        states = []
        for k in range(self.n_states):
            states.append({
                "state": k,
                "volatility": float(vol[k]),
                "mean": {c: float(means[k, i]) for i, c in enumerate(self.columns)},
                "std": {c: float(stds[k, i]) for i, c in enumerate(self.columns)},
                "expected_duration_h": float(duration[k]),
                "stationary_prob": float(pi[k]),
                "start_prob": float(self.startprob[k]),
            })
        return {"n_states": self.n_states, "columns": list(self.columns),
                "covariance_type": self.covariance_type, "log_likelihood": self.log_likelihood,
                "log_likelihood_per_row": self.log_likelihood / self.n_train,
                "n_train": self.n_train, "fit_scores": list(self.fit_scores),
                "converged": self.converged, "states": states}

    def summary_frame(self) -> pd.DataFrame:
        """summary()['states'] as one row per state."""
        rows = []
        for s in self.summary()["states"]:
            row = {"volatility": s["volatility"]}
            row.update({f"mean[{c}]": v for c, v in s["mean"].items()})
            row.update({f"std[{c}]": v for c, v in s["std"].items()})
            row.update(duration_h=s["expected_duration_h"], stationary=s["stationary_prob"])
            rows.append(row)
        return pd.DataFrame(rows, index=pd.RangeIndex(self.n_states, name="state"))

    # ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "format": _FORMAT,
            "n_states": self.n_states, "columns": self.columns,
            "covariance_type": self.covariance_type, "n_iter": self.n_iter, "tol": self.tol,
            "n_fits": self.n_fits, "seed": self.seed,
            "input_mean": self.input_mean.tolist(), "input_std": self.input_std.tolist(),
            "startprob": self.startprob.tolist(), "transmat": self.transmat.tolist(),
            "means": self.means.tolist(), "covars": self.covars.tolist(),
            "log_likelihood": self.log_likelihood, "n_train": self.n_train,
            "fit_scores": self.fit_scores, "converged": self.converged,
            "relabel_order": self.relabel_order,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegimeModel:
        if data.get("format") != _FORMAT:
            raise ValueError(f"RegimeModel.from_dict: format {data.get('format')!r}, expected "
                             f"{_FORMAT!r}")
        model = cls(n_states=data["n_states"], columns=data["columns"],
                    covariance_type=data["covariance_type"], n_iter=data["n_iter"],
                    tol=data["tol"], n_fits=data["n_fits"], seed=data["seed"])
        for key in ("input_mean", "input_std", "startprob", "transmat", "means", "covars"):
            setattr(model, key, np.asarray(data[key], dtype=np.float64))
        model.log_likelihood = float(data["log_likelihood"])
        model.n_train = int(data["n_train"])
        model.fit_scores = [float(v) for v in data["fit_scores"]]
        model.converged = data["converged"]
        model.relabel_order = data.get("relabel_order")
        return model

    def save(self, path: str | Path) -> Path:
        """Write the fitted model as JSON (floats round-trip exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict()))  # whole or not at all (core.io)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RegimeModel:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a saved RegimeModel ({type(exc).__name__}: {exc})"
                             ) from None


def _run_lengths(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in mask (the contiguous observed stretches)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [int(b - a) for a, b in zip(edges[::2], edges[1::2])]


def regime_frame(model: RegimeModel, features: pd.DataFrame) -> pd.DataFrame:
    """The filtered probabilities as columns Prob_0..Prob_{K-1} on features.index."""
    proba = model.filter_proba(features)
    return pd.DataFrame(proba, index=features.index,
                        columns=[f"Prob_{k}" for k in range(model.n_states)])
