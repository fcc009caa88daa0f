"""YAML values to the annotated field types: `build` makes a section from a mapping, naming the
key of any unknown key or wrong type."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from cryptorl_jax.config.errors import ConfigError


def _type_name(tp: Any) -> str:
    """A field type as a config file spells it: "list of int", "float | None", "'a' | 'b'"."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} values"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    try:
        return _coerce_inner(value, tp, key, source)
    except _Mismatch:
        raise ConfigError(
            key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", source
        ) from None


def _coerce_inner(value: Any, tp: Any, key: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # Literal members first (so "auto" is not taken for a float), then the rest in order.
        ordered = sorted(args, key=lambda a: 0 if get_origin(a) is Literal else 1)
        for arg in ordered:
            if arg is type(None):
                continue
            try:
                return _coerce_inner(value, arg, key, source)
            except (_Mismatch, ConfigError):
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(tp)):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in
                     enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return build(tp, value, key, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _Mismatch from None
                if f.is_integer():
                    return int(f)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML reads an unquoted 2024-01-01 (in a file or a --set) as a date: the ISO text
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        raise _Mismatch
    raise _Mismatch


def close_name_hint(key: str, names: Iterable[str]) -> str:
    """" (did you mean 'name'?)" for the name closest to an unknown key, "" when none is close.
    The standard library's fuzzy match over the sorted names: deterministic (ties break on the
    name, never on a set's order) and silent when nothing is close."""
    close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cls: type, raw: dict, prefix: str, source: str | None) -> Any:
    """An instance of the dataclass `cls` from a mapping; keys are named `prefix`.key in errors."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(key, f"unknown key{close_name_hint(str(k), names)}", source)
        kwargs[k] = _coerce(v, hints[k], key, source)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(prefix or "<root>", str(exc), source) from None


