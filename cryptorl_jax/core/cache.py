"""Where cryptorl_jax keeps what it can rebuild (the aligned market frames): the user's cache
directory, `$XDG_CACHE_HOME/cryptorl_jax` (else `~/.cache/cryptorl_jax`), never the working
directory. `data.cache_dir: auto` (the default) names it; a path names another folder; null
turns the cache off."""

from __future__ import annotations

import os
from pathlib import Path

AUTO = "auto"  # data.cache_dir's default: <user cache dir>/market
PACKAGE = "cryptorl_jax"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/cryptorl_jax, or ~/.cache/cryptorl_jax where it is unset or relative
    (the XDG base-directory rule: a relative value is ignored)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / PACKAGE


def market_cache_dir(setting: str | None) -> Path | None:
    """The folder data.cache_dir names: `auto` -> <user cache dir>/market; None or '' -> no
    cache; any other value -> that path."""
    if not setting:
        return None
    if setting == AUTO:
        return user_cache_dir() / "market"
    return Path(setting)
