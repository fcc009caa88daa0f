"""The search space of a tuning study: `tune.space` checked against the config's types, a
trial's sampled values as dotted overrides, and the keys population mode may search."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from cryptorl_jax.config import (
    Config,
    ConfigError,
    SearchParam,
    with_overrides,
)
from cryptorl_jax.training.spec import HYPER_KEYS, enters_the_step, is_hyper_key


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key (already known to exist)."""
    cls: Any = Config
    tp: Any = None
    for part in key.split("."):
        tp = get_type_hints(cls)[part]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        cls = inner[0] if inner else tp
    return tp


def _accepts(tp: Any, kind: type) -> bool:
    if tp is kind:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(_accepts(a, kind) for a in get_args(tp))
    return False


def override_text(key: str, value: Any) -> str:
    """`key=value` for config.with_overrides; a string choice is YAML text (e.g. "[64, 64]")."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return f"{key}={text}"


def check_space(cfg: Config) -> None:
    """Raise ConfigError naming tune.space[i] if a bound or choice gives an invalid config."""
    src = cfg.source
    if not cfg.tune.space:
        raise ConfigError("tune.space", "is empty: declare the search space (see "
                          "configs/tune_quick.yaml)", src)
    keys = [p.key for p in cfg.tune.space]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError("tune.space", f"key(s) {dup} appear more than once", src)
    for i, p in enumerate(cfg.tune.space):
        name = f"tune.space[{i}]"
        tp = _field_type(p.key)
        if p.type in ("float", "loguniform") and not _accepts(tp, float) and _accepts(tp, int):
            raise ConfigError(f"{name}.type", f"'{p.key}' is an integer key: use type int", src)
        if p.type == "int":
            if not _accepts(tp, int):
                raise ConfigError(f"{name}.type", f"'{p.key}' is not an integer key", src)
            if not (float(p.low).is_integer() and float(p.high).is_integer()):
                raise ConfigError(f"{name}.low", f"int bounds must be whole numbers, got "
                                  f"[{p.low}, {p.high}]", src)
            values: Sequence[Any] = (int(p.low), int(p.high))
        elif p.type == "categorical":
            values = p.choices or ()
        else:
            values = (float(p.low), float(p.high))
        for v in values:
            try:
                with_overrides(cfg, [override_text(p.key, v)])
            except ConfigError as exc:
                raise ConfigError(name, f"{p.key} = {v!r} is not a valid value: {exc}",
                                  src) from None


def suggest_overrides(trial: Any, space: Sequence[SearchParam]) -> list[str]:
    """Sample every dimension of the space with the trial; returns dotted overrides."""
    out = []
    for p in space:
        if p.type == "categorical":
            value = trial.suggest_categorical(p.key, list(p.choices or ()))
        elif p.type == "int":
            value = trial.suggest_int(p.key, int(p.low), int(p.high))
        else:
            value = trial.suggest_float(p.key, float(p.low), float(p.high),
                                        log=p.type == "loguniform")
        out.append(override_text(p.key, value))
    return out


def check_population_space(cfg: Config) -> None:
    """In population mode every searched key must be a dynamic hyperparameter (a Hyper leaf):
    the members share one compiled step and one data pipeline. Names the first key that is not."""
    for i, p in enumerate(cfg.tune.space):
        if not is_hyper_key(p.key):
            what = ("changes a shape or a code path of the training step"
                    if enters_the_step(p.key) else "changes the data the members share")
            raise ConfigError(f"tune.space[{i}].key", f"'{p.key}' {what}, so it cannot be "
                              "searched in population mode (--population); population keys: "
                              f"{', '.join(HYPER_KEYS)}. Search it one trial at a time.",
                              cfg.source)



def check_study(cfg: Config, n_trials: int, population: int | None) -> None:
    """What a study (`tuning.driver.run_study`) and its dry run (`tuning.plan.plan_tune`) check
    before anything else: a positive trial count and population, a valid search space, and in
    population mode only dynamic keys."""
    if n_trials < 1:
        raise ValueError(f"n_trials (--trials) must be >= 1, got {n_trials}")
    check_space(cfg)
    if population is not None:
        if population < 1:
            raise ValueError(f"population (--population) must be >= 1, got {population}")
        check_population_space(cfg)
