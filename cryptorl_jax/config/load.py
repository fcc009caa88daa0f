"""Configs into the program: a YAML file merged over its `base:` chain, dotted overrides, built
and validated (`load_config`, `with_overrides`, `from_dict`)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from cryptorl_jax.config.coerce import build
from cryptorl_jax.config.errors import ConfigError
from cryptorl_jax.config.overrides import check_override_key, parse_override, set_dotted
from cryptorl_jax.config.schema import Config
from cryptorl_jax.config.validation import validate

BASE_KEY = "base"


def _read_yaml(p: Path, source: str) -> dict:
    if not p.is_file():
        raise ConfigError("<file>", f"config file not found: {p}", source)
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"invalid YAML: {exc}", source) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError("<root>", "the top level must be a mapping of sections", source)
    return loaded


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: sections merge key by key, any other value (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_with_bases(p: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The YAML at `p` merged over its `base:` file (relative to p's folder), recursively."""
    source = str(p)
    resolved = p.resolve()
    if resolved in chain:
        loop = " -> ".join(str(c) for c in (*chain, resolved))
        raise ConfigError(BASE_KEY, f"the base chain loops back: {loop}", source)
    raw = _read_yaml(p, source)
    base = raw.pop(BASE_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(BASE_KEY, f"must name a YAML file, got {base!r}", source)
    base_path = Path(base) if Path(base).is_absolute() else p.parent / base
    if not base_path.is_file():
        raise ConfigError(BASE_KEY, f"the base file {base_path} (named by {p}) does not exist",
                          source)
    return _merge(_read_with_bases(base_path, (*chain, resolved)), raw)


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (None = all defaults), apply dotted overrides, validate, freeze.

    A config may start with `base: other.yaml` (a path relative to its own folder): the base is
    read first (it may have a base of its own) and this file's keys are merged over it, section
    by section; a list replaces the base's list.
    """
    overrides = list(overrides)
    source = str(path) if path is not None else None
    raw: dict = {}
    if path is not None:
        raw = _read_with_bases(Path(path))
    override_source = f"{source} (--set)" if source else "--set"
    for item in overrides:
        key, value = parse_override(item, override_source)
        check_override_key(key, override_source)
        set_dotted(raw, key, value, override_source)
    override_keys = {parse_override(item, override_source)[0] for item in overrides}
    try:
        cfg = build(Config, raw, "", source)
    except ConfigError as exc:
        if exc.key.split("[")[0] in override_keys:  # the bad value came from --set
            raise ConfigError(exc.key, str(exc).split(": ", 1)[1], override_source) from None
        raise
    cfg = dataclasses.replace(cfg, source=source)
    validate(cfg)
    return cfg


def with_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    """A new Config with dotted overrides applied to an existing one (validated)."""
    raw = cfg.to_dict()
    src = f"{cfg.source} (--set)" if cfg.source else "--set"
    for item in overrides:
        key, value = parse_override(item, src)
        check_override_key(key, src)
        set_dotted(raw, key, value, src)
    out = build(Config, raw, "", cfg.source)
    out = dataclasses.replace(out, source=cfg.source)
    validate(out)
    return out


def from_dict(raw: dict, source: str | None = None) -> Config:
    """Build and validate a Config from a plain dict (as written by Config.to_dict)."""
    cfg = dataclasses.replace(build(Config, raw, "", source), source=source)
    validate(cfg)
    return cfg
