"""The one help style of every subcommand: `usage: cryptorl NAME ...`, what the command does (its
text as written, not re-wrapped), its options (each with a help text), then an `examples:` block
and a `packages:` block naming the extra it needs (`core.extras`), if any."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cryptorl_jax.core.extras import EXTRAS, install_hint

BASE_ONLY = "the base install (pip install -e .) runs it"


def needs(module: str, what: str) -> str:
    """'MODULE (the 'EXTRA' extra), for WHAT:' and, on the next line, how to install it."""
    extra = f" (the '{EXTRAS[module]}' extra)" if module in EXTRAS else " (the base install)"
    return f"{module}{extra}, for {what}:\n    {install_hint(module)}"


def epilog(examples: Sequence[str], packages: Sequence[str] = ()) -> str:
    """The `examples:` and `packages:` blocks (no packages: the base install is enough)."""
    lines = ["examples:", *[f"  {e}" for e in examples], "", "packages:"]
    lines += [f"  {line}" for p in packages for line in p.splitlines()] if packages else \
        [f"  {BASE_ONLY}"]
    return "\n".join(lines)


def command_parser(name: str, description: str, examples: Sequence[str],
                   packages: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of `cryptorl NAME` in the common style."""
    return argparse.ArgumentParser(prog=f"cryptorl {name}", description=description.strip(),
                                   epilog=epilog(examples, packages),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommand_parser(sub: argparse._SubParsersAction, name: str, help_text: str,
                      description: str, examples: Sequence[str],
                      packages: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A sub-subcommand (`cryptorl download ccxt`) in the same style."""
    return sub.add_parser(name, help=help_text, description=description.strip(),
                          epilog=epilog(examples, packages),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


RAY = needs("ray", "--executor ray")
LIGHTGBM = needs("lightgbm", "baselines.lightgbm=true")
TENSORBOARD = needs("tensorboard", "tensorboard --logdir RUN/tensorboard")
OPTUNA = needs("optuna", "cryptorl tune")
