"""The step rate a finished segment measured on this machine, for the dry run's estimate of a
run's time (`walkforward.plan`). Nothing here imports JAX.

Each finished segment's DONE record holds its host, the env steps per agent and its timings:
`train_s` (the batch's training wall time), `train_compile_s` (its first chunk: compilation
plus that chunk's run) and `segment_s` (the whole segment). The runs under an output directory
whose DONE records name this host give

    rate      = sum(env steps x members) / sum(train_s - train_compile_s)   member env steps / s
    compile   = median(train_compile_s)                                     per compiled batch
    other     = median(segment_s - train_s)                                 per segment

where members = the run's train.n_seeds x the segments trained with it (`train_batch`). The
step's cost depends on its shapes, so runs whose `step_shape` equals the planned config's are
used when there are any (the estimate says which it used); a rate measured under another
load, on other shapes or with another number of members per step is a rough guide only.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cryptorl_jax.core.rundir import DONE

NO_RATE = "no recorded step rate on this machine"


def step_shape(raw: dict[str, Any]) -> tuple:
    """What sets the cost of one vectorised env step and its updates, from a config's plain
    dict: the observation window, envs, chunk, network, batch, quantiles, critics, updates per
    step, the encoder's mode and size, the assets (the feature count) and the devices."""
    def get(section: str, key: str) -> Any:
        value = (raw.get(section) or {}).get(key)
        return tuple(value) if isinstance(value, list) else value

    assets = tuple(a.get("name") for a in (raw.get("data") or {}).get("assets") or ()
                   if isinstance(a, dict))
    return (get("env", "window"), get("train", "n_envs"), get("train", "steps_per_chunk"),
            get("tqc", "net_arch"), get("tqc", "batch_size"), get("tqc", "n_quantiles"),
            get("tqc", "n_critics"), get("tqc", "gradient_steps"), get("encoder", "mode"),
            get("encoder", "d_model"), get("encoder", "depth"), assets, get("train", "devices"),
            *_learner_shape(raw.get("agent") or {}))


def _learner_shape(agent: dict[str, Any]) -> tuple:
    """The learner's part of the shape: TQC (a config from before the agent section too), or
    the direct learner with its episode length and network."""
    if agent.get("kind", "tqc") == "tqc":
        return ()
    direct = agent.get("direct") or {}
    arch = direct.get("net_arch")
    return ("direct", direct.get("horizon"), tuple(arch) if isinstance(arch, list) else arch)


@dataclass(frozen=True)
class Measured:
    """One finished segment's figures (a DONE record on this host)."""

    run: Path
    segment: int
    member_env_steps: float
    train_s: float  # training after the first chunk
    compile_s: float
    other_s: float
    same_shape: bool


@dataclass(frozen=True)
class Rate:
    env_steps_per_s: float  # member env steps per second of training, compilation excluded
    compile_s: float
    other_s: float
    segments: int  # DONE records it comes from
    runs: list[str] = field(hash=False)
    same_shape: bool
    host: str


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _run_config(run: Path) -> dict[str, Any] | None:
    try:
        raw = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return raw if isinstance(raw, dict) else None


def recorded_segments(roots: Iterable[Path], shape: tuple, host: str) -> list[Measured]:
    """The finished segments of the runs directly under `roots` recorded on `host`."""
    out: list[Measured] = []
    seen: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for run in sorted(p for p in root.iterdir() if p.is_dir()):
            if run.resolve() in seen:
                continue
            seen.add(run.resolve())
            dones = sorted(run.glob(f"segment_*/{DONE}"))
            raw = _run_config(run) if dones else None
            if raw is None:
                continue
            seeds = (raw.get("train") or {}).get("n_seeds") or 1
            same = step_shape(raw) == shape
            for path in dones:
                meta = _read_json(path)
                if meta is None or meta.get("host") != host:
                    continue
                t = meta.get("timings") or {}
                try:
                    train_s, compile_s = float(t["train_s"]), float(t["train_compile_s"])
                    other_s = float(t["segment_s"]) - train_s
                    steps = float(meta["env_steps"]) * seeds * int(t.get("train_batch", 1))
                except (KeyError, TypeError, ValueError):
                    continue
                if train_s - compile_s > 0 and steps > 0:
                    out.append(Measured(run, int(meta.get("segment", -1)), steps,
                                        train_s - compile_s, compile_s, max(other_s, 0.0), same))
    return out


def recorded_rate(raw: dict[str, Any], roots: Iterable[Path],
                  host: str | None = None) -> Rate | None:
    """This host's rate from the runs under `roots` (those of the same step shape as the
    config `raw` when there are any); None when nothing was recorded here."""
    host = host or platform.node()
    found = recorded_segments(roots, step_shape(raw), host)
    same = [m for m in found if m.same_shape]
    use = same or found
    if not use:
        return None
    return Rate(env_steps_per_s=sum(m.member_env_steps for m in use) / sum(m.train_s for m in use),
                compile_s=statistics.median(m.compile_s for m in use),
                other_s=statistics.median(m.other_s for m in use), segments=len(use),
                runs=sorted({m.run.name for m in use}), same_shape=bool(same), host=host)


def estimate_seconds(rate: Rate, *, member_env_steps: float, batches: int,
                     segments: int) -> float:
    """compile x batches + member env steps / rate + other x segments."""
    return (rate.compile_s * batches + member_env_steps / rate.env_steps_per_s
            + rate.other_s * segments)


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_text(rate: Rate | None, seconds: float | None) -> str:
    """The estimate's line: the time and where the rate came from, or NO_RATE."""
    if rate is None or seconds is None:
        return f"estimate: {NO_RATE} (a finished run on this host records one)"
    runs = ", ".join(rate.runs[:3]) + (f" and {len(rate.runs) - 3} more" if len(rate.runs) > 3
                                       else "")
    shape = ("the same step shape" if rate.same_shape else
             "another step shape (network, batch, envs or assets differ): a rough guide")
    return (f"estimate: about {duration_text(seconds)} on this machine ({rate.host}), from "
            f"{rate.segments} finished segment(s) of {runs} recorded here with {shape}: "
            f"{rate.env_steps_per_s:,.0f} member env steps/s, {rate.compile_s:.0f} s to compile "
            f"a batch, {rate.other_s:.0f} s a segment outside training; other load on the "
            f"machine changes it")
