"""Typed, validated configuration: YAML + dotted overrides -> frozen, hashable dataclasses.

`load_config(path, overrides=())` is the only way configs enter the program. Every section is a
frozen dataclass whose fields are scalars, tuples or nested frozen dataclasses, so a Config is
hashable and can be a static argument of a jitted function. Errors name the key and the file.

One job per module: `errors` (ConfigError), `dynamic` (the declaration of dynamic
hyperparameters), `schema_inputs` / `schema_agent` / `schema_runs` (the sections and their
defaults), `schema` (the root Config), `run_identity` (which keys identify an experiment), `coerce`
(YAML values to field types), `overrides` (dotted `--set` keys), `validation` (impossible
values), `load` (files, `base:` chains and overrides in, a validated Config out).
docs/config.md lists every key, its default and its field's docstring
(scripts/config_reference.py writes it).
"""

from cryptorl_jax.config.dynamic import hyper, neutralised
from cryptorl_jax.config.errors import ConfigError
from cryptorl_jax.config.load import from_dict, load_config, with_overrides
from cryptorl_jax.config.run_identity import LOCAL_KEYS, STUDY_LOCAL_KEYS, identity
from cryptorl_jax.config.schema import Config, digest_dict, hyper_keys
from cryptorl_jax.config.schema_agent import (
    AgentConfig,
    CurriculumConfig,
    DirectConfig,
    EncoderConfig,
    EnvConfig,
    TQCConfig,
    TrainConfig,
)
from cryptorl_jax.config.schema_inputs import (
    AssetSpec,
    DataConfig,
    FeaturesConfig,
    RegimesConfig,
)
from cryptorl_jax.config.schema_runs import (
    BaselinesConfig,
    OutputConfig,
    SearchParam,
    StudyConfig,
    StudyRun,
    TuneConfig,
    WFOConfig,
)
from cryptorl_jax.config.validation import check_rows, validate

__all__ = [
    "LOCAL_KEYS",
    "STUDY_LOCAL_KEYS",
    "AgentConfig",
    "AssetSpec",
    "BaselinesConfig",
    "Config",
    "ConfigError",
    "CurriculumConfig",
    "DataConfig",
    "DirectConfig",
    "EncoderConfig",
    "EnvConfig",
    "FeaturesConfig",
    "OutputConfig",
    "RegimesConfig",
    "SearchParam",
    "StudyConfig",
    "StudyRun",
    "TQCConfig",
    "TrainConfig",
    "TuneConfig",
    "WFOConfig",
    "check_rows",
    "digest_dict",
    "from_dict",
    "hyper",
    "hyper_keys",
    "identity",
    "load_config",
    "neutralised",
    "validate",
    "with_overrides",
]
