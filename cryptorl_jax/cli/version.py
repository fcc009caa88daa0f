"""`cryptorl --version`: the package's version, the git commit when it runs from a checkout,
Python, JAX and the backend and devices JAX sees."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_version() -> str:
    try:
        return metadata.version("cryptorl_jax")
    except metadata.PackageNotFoundError:
        return "(not installed: run from the source tree)"


def checkout_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """'<sha> [modified]' when the package runs from a git checkout of this project (the
    checkout's root holds this package), else None (an installed wheel)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=package_dir, capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None or Path(root).resolve() != package_dir.parent:
        return None
    sha = git("rev-parse", "--short=12", "HEAD")
    if sha is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return sha + (" (modified)" if dirty else "")


def jax_text() -> str:
    """JAX's version, default backend and devices, or why JAX could not start."""
    try:
        import jax

        devices = jax.devices()
        kinds = ", ".join(sorted({d.device_kind for d in devices}))
        return (f"jax {jax.__version__} (jaxlib {metadata.version('jaxlib')}); backend "
                f"{jax.default_backend()}, {len(devices)} device(s): {kinds}")
    except Exception as exc:  # a broken CUDA install: say so instead of a traceback
        return f"jax: could not start ({type(exc).__name__}: {exc})"


def version_text() -> str:
    commit = checkout_commit()
    first = f"cryptorl_jax {package_version()}"
    first += f", git {commit}" if commit else ""
    return "\n".join([first, f"from {PACKAGE_DIR}",
                      f"python {platform.python_version()}; {jax_text()}"])
