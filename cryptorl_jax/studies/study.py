"""A study: several walk-forward runs of one config that differ by a few keys, then one
comparison (`cryptorl study --config configs/study.yaml`).

Run `r` of `study.runs` is the config with `r.set` applied and run_name `<run_name>-<r.name>`,
written to `<out>/<run_name>-<r.name>/` exactly as `cryptorl wfo --config FILE --set ...
--set run_name=...` would (the `study` section is not part of a run's identity, so the two
commands share finished segments). When every run has finished, `compare_runs` writes the
comparison to `<out>/<run_name>-compare/`, and `study.doc` (e.g. docs/study.md) gets the
comparison with a reading generated from the numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryptorl_jax.config import Config
from cryptorl_jax.report.runs import write_comparison
from cryptorl_jax.studies.cells import study_configs
from cryptorl_jax.studies.study_doc import write_study_doc
from cryptorl_jax.walkforward import driver

log = logging.getLogger("cryptorl_jax.study")


@dataclass
class StudyResult:
    run_dirs: list[Path]
    compare_dir: Path
    doc: Path | None
    seconds: dict[str, float]


def run_study(cfg: Config, out_dir: str | Path, *, resume: bool = False,
              progress: bool | None = None, doc: str | Path | None = None,
              market: pd.DataFrame | None = None) -> StudyResult:
    """Run (or resume) every run of the study, then compare them and write the study doc."""
    out_dir = Path(out_dir)
    run_dirs, seconds = [], {}
    for name, run_cfg in study_configs(cfg):
        workdir = out_dir / run_cfg.run_name
        log.info("study %s: run %s -> %s", cfg.run_name, name, workdir)
        t0 = time.perf_counter()
        driver.run(run_cfg, workdir, resume=resume, progress=progress, market=market)
        seconds[name] = time.perf_counter() - t0
        run_dirs.append(workdir)
    compare_dir = out_dir / f"{cfg.run_name}-compare"
    comparison = write_comparison(run_dirs, compare_dir,
                                  labels=[r.name for r in cfg.study.runs],
                                  title=f"{cfg.run_name}: " + ", ".join(
                                      r.name for r in cfg.study.runs))
    doc_path = Path(doc) if doc is not None else (
        Path(cfg.study.doc) if cfg.study.doc else None)
    if doc_path is not None:
        write_study_doc(cfg, comparison, compare_dir, doc_path)
    return StudyResult(run_dirs=run_dirs, compare_dir=compare_dir, doc=doc_path,
                       seconds=seconds)
