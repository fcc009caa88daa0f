"""The root `Config`: every section, its plain-dict / YAML / digest forms, and the dotted keys
declared dynamic (`hyper_keys`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from cryptorl_jax.config.schema_agent import (
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


@dataclass(frozen=True)
class Config:
    """The whole configuration: two top-level keys, then the sections (in the order
    `Config.to_yaml` writes them)."""

    seed: int = 0
    """Root seed of the run's random streams (PRNG keys per segment and stage, HMM restarts,
    bootstraps)."""
    run_name: str = "run"
    """Name of the run directory (`<output dir>/<run_name>/`); no '/'."""
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    regimes: RegimesConfig = field(default_factory=RegimesConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
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
        return to_plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                         if f.name != "source"})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """Stable short hash of the resolved values (not of the source path nor of where the
        market cache lives: `digest_dict`)."""
        blob = json.dumps(digest_dict(self.to_dict()), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Where the market cache lives cannot change a number (the cache is keyed on the data section
# and the files' bytes), so a digest reads data.cache_dir as this constant: the default it had
# before the cache moved to the user's cache directory, so that every digest stays the one its
# config had then (a run directory or a tuning study made before still resumes).
DIGEST_CACHE_DIR = ".cache/market"


def digest_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """A config's plain dict as its digest reads it: data.cache_dir set to DIGEST_CACHE_DIR,
    and the `agent` section left out while it is at its defaults (TQC), so that every config
    keeps the digest it had before the section existed."""
    if raw.get("agent") == to_plain(AgentConfig()):
        raw = {k: v for k, v in raw.items() if k != "agent"}
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    return {**raw, "data": {**data, "cache_dir": DIGEST_CACHE_DIR}}


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


def to_plain(value: Any) -> Any:
    """Dataclasses to dicts and tuples to lists, recursively (`source` left out)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name != "source"}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value

