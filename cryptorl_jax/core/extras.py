"""The packages a command may need beyond the base install, and the one line it prints when one
is missing.

`EXTRAS` maps each optional module to the extra of pyproject.toml that installs it
(tests/cli/test_extras.py checks the table against pyproject.toml); `BASE` names the modules
that only some commands import although the base install has them (`pip install -e .` brings
them back). `missing_text(module)` is the message: the module, the extra and both install
commands, a checkout's and a released package's.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"optuna": "tune", "ray": "cluster", "lightgbm": "baselines",
          "tensorboard": "tensorboard"}
"""Optional module -> the extra that installs it (pip install -e ".[EXTRA]")."""

BASE = {"ccxt": "ccxt", "yfinance": "yfinance", "tensorboardX": "tensorboardX"}
"""Modules of the base install's dependencies that are imported only on use -> their pip name."""

INSTEAD = {"lightgbm": "or set baselines.lightgbm=false",
           "tensorboardX": "or set output.tensorboard=false"}
"""What to do instead of installing, where a setting turns the module's use off."""


def install_hint(module: str) -> str:
    """How to install `module`: its extra's two pip commands (or the base install's)."""
    if module in EXTRAS:
        extra = EXTRAS[module]
        return (f"pip install -e \".[{extra}]\" in a checkout, or pip install "
                f"\"cryptorl_jax[{extra}]\"")
    if module in BASE:
        return f"pip install -e . in a checkout, or pip install {BASE[module]}"
    return f"pip install {module}"


def missing_text(module: str, needed_by: str | None = None) -> str:
    """The one line for a missing module: 'optuna is not installed (cryptorl tune needs it;
    the 'tune' extra): pip install -e ".[tune]" in a checkout, or pip install
    "cryptorl_jax[tune]"'."""
    what = [f"{needed_by} needs it"] if needed_by else []
    if module in EXTRAS:
        what.append(f"the '{EXTRAS[module]}' extra")
    elif module in BASE:
        what.append("a dependency of the base install")
    text = f"{module} is not installed" + (f" ({'; '.join(what)})" if what else "")
    text += f": {install_hint(module)}"
    return text + (f" ({INSTEAD[module]})" if module in INSTEAD else "")


def known_missing(exc: BaseException) -> str | None:
    """The module of EXTRAS or BASE whose absence raised `exc` (a ModuleNotFoundError, or an
    ImportError naming it), None for any other error."""
    if not isinstance(exc, ImportError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return name if name in EXTRAS or name in BASE else None


def require(module: str, needed_by: str | None = None) -> ModuleType:
    """Import `module`, or raise ModuleNotFoundError with `missing_text` as its message."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if known_missing(exc) is None and getattr(exc, "name", None) != module:
            raise  # the module is there but one of its own imports failed: show that
        raise ModuleNotFoundError(missing_text(module, needed_by), name=module) from None
