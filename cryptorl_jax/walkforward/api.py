"""The walk-forward study from Python: `run_walkforward(config_or_path, ...) -> report.Run`.

    from cryptorl_jax import run_walkforward
    run = run_walkforward("configs/quick.yaml", overrides=["train.n_seeds=2"])
    run.verdict.edge, run.metrics.loc["all", "sharpe"]

A thin wrapper over `walkforward.driver.run` that does what `cryptorl wfo` does (cli/wfo.py):
the config with its overrides, the run directory `<out or output.dir>/<run_name>/`, `--resume`
and `--segments`, then the finished run read back as a `report.Run`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import Config, load_config, with_overrides
from cryptorl_jax.report import Run
from cryptorl_jax.walkforward import driver
from cryptorl_jax.walkforward.executor import Executor


def run_walkforward(config_or_path: Config | str | Path, out: str | Path | None = None, *,
                    resume: bool = False, segments: Sequence[int] | None = None,
                    overrides: Iterable[str] = (), market: pd.DataFrame | None = None,
                    executor: Executor | None = None) -> Run:
    """Run (or resume) the walk-forward study of a config and return the finished run.

    config_or_path: a `Config` (from `load_config`) or a YAML file's path.
    out: the results directory (`cryptorl wfo --out`); the run goes to `<out>/<run_name>/`,
        by default `<output.dir>/<run_name>/`.
    resume: keep the segments finished before and resume an unfinished one from its
        checkpoint (`--resume`); without it a pending segment's old files are removed.
    segments: run only these segment numbers (`--segments 0,3`, i.e. `wfo.segments`).
    overrides: dotted `section.key=value` strings (`--set`), applied to the config.
    market: an aligned hourly frame to use instead of the config's data files (synthetic or
        planted markets, tests).
    executor: where the batches of segments run (None: here, one after the other;
        `cluster.RayExecutor` for Ray).

    Returns `report.Run` of the run directory (its report rebuilt from every finished
    segment). Errors are the command's: ConfigError, DataValidationError, ValueError. Imports
    JAX (it trains).
    """
    extra = list(overrides)
    if segments is not None:
        extra.append("wfo.segments=[" + ",".join(str(int(k)) for k in segments) + "]")
    if isinstance(config_or_path, Config):
        cfg = with_overrides(config_or_path, extra) if extra else config_or_path
    else:
        cfg = load_config(config_or_path, extra)
    workdir = Path(out if out is not None else cfg.output.dir) / cfg.run_name
    result = driver.run(cfg, workdir, resume=resume, market=market, executor=executor)
    return Run.load(result.workdir)
