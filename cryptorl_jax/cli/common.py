"""What the subcommands share: the config arguments (--config, --set, --out, -q, -v), loading
the config they name (and applying -v), and the one rule that turns an outcome into an exit
code: 0 done, 1 a file or folder could not be written (a read-only folder, a full disk: one line
naming it), 2 the user's input was refused (bad config, data, file or value, a run directory
another process is writing, a missing optional package: one line naming it), 130 interrupted.
The project's modules are imported on first use, so `--help` stays fast."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from typing import Any

RESUME_HINT = "run again with --resume to continue"
# what the machine refuses, not the program: one line, no traceback
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                         errno.EIO, errno.EFBIG})


def add_config_arguments(p: argparse.ArgumentParser, *,
                         config_help: str = "YAML config (e.g. configs/quick.yaml)",
                         set_help: str = "dotted override, e.g. tqc.learning_rate=3e-4",
                         out_help: str = "results directory (default: output.dir)",
                         quiet: bool = True) -> None:
    """--config FILE, repeatable --set KEY=VALUE (args.overrides), --out DIR, -q/--quiet and
    -v/--verbose."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", default=None, help=out_help)
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_verbose_argument(p)


def add_verbose_argument(p: argparse.ArgumentParser) -> None:
    """-v/--verbose: show the data-window notices (`core.notices`) and other DEBUG lines."""
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also log the data-window notices (bars dropped to the common window, "
                        "hours forward-filled, stale context rows; once per asset) and other "
                        "debug lines")


def apply_verbose(args: argparse.Namespace) -> None:
    """Set the package's log level from -v (`core.notices.set_verbose`)."""
    from cryptorl_jax.core.notices import set_verbose

    set_verbose(bool(getattr(args, "verbose", False)))


def load_cli_config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    """The config of --config with the --set overrides, then `extra`, then -q's (and -v's log
    level, `apply_verbose`)."""
    from cryptorl_jax.config import load_config

    apply_verbose(args)
    quiet = ["output.progress=false"] if getattr(args, "quiet", False) else []
    return load_config(args.config, [*args.overrides, *extra, *quiet])


def run_command(name: str, body: Callable[[], int | None], *,
                errors: tuple[type[BaseException], ...] = (),
                interrupted: str = RESUME_HINT) -> int:
    """Run a subcommand's body with CLI logging; an input error (ConfigError,
    DataValidationError, FileNotFoundError, ValueError, RunLockedError and `errors`) prints
    `NAME: error: ...` and gives 2, as does a missing optional package (`core.extras`: one line
    naming the module and the extra that installs it); a write the system refused
    (`core.io.WriteError`, or an OSError of DISK_ERRNOS) prints `NAME: error: ...` naming the
    file and gives 1; Ctrl-C prints `NAME: interrupted; <interrupted>` and gives 130."""
    from cryptorl_jax.config import ConfigError
    from cryptorl_jax.core.extras import known_missing, missing_text
    from cryptorl_jax.core.io import WriteError
    from cryptorl_jax.core.runlock import RunLockedError
    from cryptorl_jax.market import DataValidationError
    from cryptorl_jax.training.logging import configure_cli_logging

    configure_cli_logging()
    try:
        rc = body()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    except (ConfigError, DataValidationError, FileNotFoundError, ValueError, RunLockedError,
            *errors) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        module = known_missing(exc)
        if module is None:
            raise
        text = str(exc) if str(exc).startswith(f"{module} is not installed") else \
            missing_text(module, f"cryptorl {name}")
        print(f"{name}: error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not isinstance(exc, WriteError) and exc.errno not in DISK_ERRNOS:
            raise
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    return 0 if rc is None else int(rc)
