"""The one error a config raises: it names the key and the file (or `--set`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or holds an impossible value."""

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key = key
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: {message}")

