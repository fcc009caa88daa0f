"""Dotted overrides (`section.key=value`): parse one, check its key names a field, set it."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args, get_type_hints

import yaml

from cryptorl_jax.config.coerce import close_name_hint
from cryptorl_jax.config.errors import ConfigError
from cryptorl_jax.config.schema import Config


def set_dotted(raw: dict, dotted: str, value: Any, source: str | None) -> None:
    """Set `raw[a][b]...[key] = value` for the dotted key a.b...key, making sections on the way."""
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"'{p}' is not a section", source)
        node = child
    node[parts[-1]] = value


def parse_override(item: str, source: str | None) -> tuple[str, Any]:
    """`section.key=value` to (key, the value read as YAML); an empty value is the empty string."""
    if "=" not in item:
        raise ConfigError(item, "override must look like section.key=value", source)
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(item, "override has an empty key", source)
    try:
        value = yaml.safe_load(text) if text.strip() != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse override value {text!r}: {exc}", source) from None
    return key, value


def check_override_key(dotted: str, source: str) -> None:
    """Raise ConfigError unless the dotted key names a field of Config, through its sections."""
    cls: Any = Config
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        hints = get_type_hints(cls)
        if p not in hints or p == "source":
            names = [n for n in hints if n != "source"]
            raise ConfigError(".".join(parts[: i + 1]),
                              f"unknown key{close_name_hint(p, names)}", source)
        tp = hints[p]
        inner = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
        cls = inner[0]
        if i < len(parts) - 1 and not dataclasses.is_dataclass(cls):
            raise ConfigError(".".join(parts[: i + 2]), f"'{p}' is not a section", source)

