"""Where a number came from: versions, devices, git commit, command line, times, memory.

`run_info(...)` gathers what `<run>/run_info.json` records for one invocation of a run;
`rss_mb()` / `peak_rss_mb()` are the process's resident memory now and at its peak, which
each finished segment records so a long study shows whether memory grows segment by segment.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("cryptorl_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "pandas", "hmmlearn", "optuna", "ray")


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(path: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10)
        return {"sha": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def devices() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {"backend": jax.default_backend(), "count": len(devs),
            "kinds": sorted({d.device_kind for d in devs}),
            "process_count": jax.process_count()}


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux /proc; else the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine slows a run)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_info(argv: list[str] | None = None) -> dict[str, Any]:
    """One invocation's provenance (the end time and memory are added when it finishes)."""
    return {"started": now(), "finished": None,
            "command": list(sys.argv if argv is None else argv),
            "cwd": os.getcwd(), "host": platform.node(), "platform": platform.platform(),
            "git": git_info(), "versions": versions(), "devices": devices(),
            "xla_flags": os.environ.get("XLA_FLAGS"), "cpu_count": os.cpu_count(),
            "loadavg_start": loadavg(),
            "jax_platforms": os.environ.get("JAX_PLATFORMS")}
