"""Which keys identify an experiment: `identity` resets the ones that only say how this
process runs."""

from __future__ import annotations

import dataclasses
from typing import Any

from cryptorl_jax.config.schema import Config

# Keys that say how or where THIS process runs, not what an experiment computes: which segments
# it runs (processes given disjoint --segments share a run), whether it shows progress bars,
# where it caches the aligned market (data.cache_dir) and the `study` section (adding a run to a
# study does not change the runs it already holds).
LOCAL_KEYS = ("wfo.segments", "output.progress", "data.cache_dir", "study")
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

