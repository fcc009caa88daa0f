"""The declaration of dynamic hyperparameters (`hyper`) and a section with them neutralised."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

_NO_NEUTRAL = object()


def hyper(default: Any, neutral: Any = _NO_NEUTRAL) -> Any:
    """Declare a dynamic hyperparameter: a traced leaf of `training.spec.Hyper`, not part of
    the compiled training step, so configs that differ only in such keys share one compilation
    and a population's members may differ in them. This declaration is the only list:
    `hyper_keys()` (`training.spec.HYPER_KEYS`, the keys population tuning may search) and
    `neutralised` (the TrainerSpec's copy of a section, each key at its `neutral` value) are
    derived from it; `Hyper.from_config` reads them (tests/training/test_population.py checks
    that every declared key moves the Hyper and that every other step key moves the spec).
    `neutral` is needed in the sections the spec copies whole (env, tqc). docs/config.md marks
    the keys dynamic from `training.spec.HYPER_KEYS` (scripts/config_reference.py)."""
    metadata: dict[str, Any] = {"hyper": True}
    if neutral is not _NO_NEUTRAL:
        metadata["neutral"] = neutral
    return field(default=default, metadata=metadata)


def neutralised(section: Any) -> Any:
    """A config section with every dynamic hyperparameter at its declared neutral value."""
    return dataclasses.replace(section, **{f.name: f.metadata["neutral"]
                                           for f in dataclasses.fields(section)
                                           if "neutral" in f.metadata})

