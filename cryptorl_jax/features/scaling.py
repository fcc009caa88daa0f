"""A robust scaler fitted on a segment's train rows only: (x - median) / IQR, clipped.

Bounded columns (calendar sin/cos, binary flags, regime probabilities) pass through unscaled;
the patterns that select them are explicit (`PASSTHROUGH`) and saved with the scaler.
Where the IQR is 0 (e.g. an equity's hourly return: more than half of the hours are closed,
so both quartiles are 0) the scale falls back to 1.349 * std (the IQR of a normal with that
std), and to 1 for a constant column.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryptorl_jax.core.io import write_atomic

PASSTHROUGH = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "us_market_open", "*_fresh",
               "Prob_*")
_IQR_PER_STD = 1.349  # IQR of a standard normal
_TINY = 1e-12


class RobustScaler:
    """Median / IQR scaler with clipping to +-clip; fit on train rows, then transform any rows."""

    def __init__(self, clip: float = 5.0, passthrough: Sequence[str] = PASSTHROUGH):
        if not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"RobustScaler: clip must be a finite number > 0, got {clip!r}")
        self.clip = float(clip)
        self.passthrough = tuple(passthrough)
        self.columns: list[str] | None = None
        self.center: dict[str, float] = {}
        self.scale: dict[str, float] = {}

    @classmethod
    def from_config(cls, features_config: Any) -> RobustScaler:
        """A scaler with features.scaler_clip."""
        return cls(clip=features_config.scaler_clip)

    def is_passthrough(self, column: str) -> bool:
        return any(fnmatch.fnmatchcase(column, p) for p in self.passthrough)

    def fit(self, frame: pd.DataFrame) -> RobustScaler:
        """Fit on `frame`, which must be the train rows only (NaN warm-up rows are ignored)."""
        if len(frame) == 0:
            raise ValueError("RobustScaler.fit: empty frame")
        self.columns = [str(c) for c in frame.columns]
        self.center, self.scale = {}, {}
        for col in self.columns:
            if self.is_passthrough(col):
                continue
            values = frame[col].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                raise ValueError(f"RobustScaler.fit: column '{col}' has no finite value in the "
                                 f"{len(frame)} fit rows")
            q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            scale = q75 - q25
            if not scale > _TINY * max(abs(median), 1.0):
                scale = _IQR_PER_STD * float(values.std())
            if not scale > _TINY * max(abs(median), 1.0):
                scale = 1.0
            self.center[col] = float(median)
            self.scale[col] = float(scale)
        return self

    def transform(self, frame: pd.DataFrame, dtype: Any = np.float32) -> pd.DataFrame:
        """Scaled and clipped copy (NaN stays NaN); columns must be the fitted ones."""
        if self.columns is None:
            raise RuntimeError("RobustScaler.transform: call fit() first")
        got = [str(c) for c in frame.columns]
        if got != self.columns:
            missing = [c for c in self.columns if c not in got]
            extra = [c for c in got if c not in self.columns]
            raise ValueError(f"RobustScaler.transform: columns differ from the fitted ones "
                             f"(missing {missing}, unexpected {extra}"
                             f"{', same set in another order' if not missing + extra else ''})")
        out = {}
        for col in self.columns:
            values = frame[col].to_numpy(dtype=np.float64)
            if col in self.scale:
                values = np.clip((values - self.center[col]) / self.scale[col], -self.clip,
                                 self.clip)
            out[col] = values.astype(dtype)
        return pd.DataFrame(out, index=frame.index)

    def fit_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.fit(frame).transform(frame)

    def to_dict(self) -> dict[str, Any]:
        return {"clip": self.clip, "passthrough": list(self.passthrough),
                "columns": self.columns, "center": self.center, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustScaler:
        scaler = cls(clip=data["clip"], passthrough=tuple(data["passthrough"]))
        scaler.columns = None if data["columns"] is None else list(data["columns"])
        scaler.center = {k: float(v) for k, v in data["center"].items()}
        scaler.scale = {k: float(v) for k, v in data["scale"].items()}
        return scaler

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), indent=1))  # whole or not at all (core.io)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RobustScaler:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a saved RobustScaler ({type(exc).__name__}: {exc})"
                             ) from None
