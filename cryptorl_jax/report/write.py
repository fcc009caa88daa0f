"""The walk-forward report under results/<run_name>/ (the files: cryptorl_jax/core/rundir.py).

Built only from the finished segments (those with a DONE marker whose files match it: a
damaged one is refused, `core.rundir.SegmentDamagedError`), so it can be rebuilt at any
time (`cryptorl wfo --report-only`) and by concurrent processes: every file is written to a
temp file and renamed into place. `write_report` reads (`report.read`, `report.trials`),
registers (`report.registry`), computes (`report.tables`, `report.evidence`,
`report.verdict`), writes the tables, the plots and the tearsheet, then renders summary.md
(`report.summary`, no file access) and report.html (`report.html`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryptorl_jax.backtest.diagnostics import flags_in
from cryptorl_jax.backtest.inference import MEAN_RETURN
from cryptorl_jax.backtest.memory import policy_memory_hours
from cryptorl_jax.config import Config
from cryptorl_jax.core.io import write_atomic, write_parquet
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report.evidence import sceptic_evidence, write_sceptic
from cryptorl_jax.report.html import write_report_html
from cryptorl_jax.report.plots import plot_equity
from cryptorl_jax.report.read import gaps, read_segment_tables, segment_diagnostics, stitch
from cryptorl_jax.report.registry import market_key, oos_deflation
from cryptorl_jax.report.summary import ReportData, render_summary
from cryptorl_jax.report.tables import as_written, comparison_table, metrics_table
from cryptorl_jax.report.tearsheet import write_tearsheet
from cryptorl_jax.report.tensorboard import log_hparams
from cryptorl_jax.report.trials import tuning_overfitting
from cryptorl_jax.report.verdict import verdict

log = logging.getLogger("cryptorl_jax.report")


def write_report(cfg: Config, workdir: str | Path) -> dict[str, Any]:
    """Rebuild every aggregate output from the finished segments; returns a small summary.

    Steps: check the finished segments against their DONE records (a damaged one raises
    `SegmentDamagedError` naming the file, before anything is read or written), read them
    (`stitch`, `read_segment_tables`, their diagnostics), register the run and count the runs
    over its OOS window (`oos_deflation`), compute the tables and the evidence
    (`metrics_table`, `comparison_table`, `sceptic_evidence`), write them, then render
    summary.md (`render_summary`, no file access) and report.html.
    """
    workdir = Path(workdir)
    rd = RunDir(workdir)
    segments = rd.finished_segments()
    if not segments:
        log.warning("report: no finished segment in %s", workdir)
        return {"segments": []}
    for k in segments:  # a damaged finished segment is refused, named, before anything is read
        rd.segment(k).check()
    # read
    oos = stitch(workdir, segments)
    tables = read_segment_tables(rd, segments)
    diag = segment_diagnostics(rd, oos, segments)
    tuning = tuning_overfitting(cfg.wfo.trial_log, workdir)
    # register
    digest = (rd.config_digest.read_text().strip() if rd.config_digest.is_file()
              else cfg.digest())
    deflation = oos_deflation(workdir, oos, digest, cfg.run_name, segments,
                              market_key(cfg.data))
    # compute
    table = metrics_table(oos, segments, deflation, cfg.env, seed=cfg.seed,
                          memory_hours=policy_memory_hours(cfg))
    comparison = comparison_table(oos)
    sceptic = sceptic_evidence(cfg, workdir, oos, segments, comparison, table, deflation)
    agg = table[table["segment"] == "all"].iloc[0].to_dict()
    run_flags = flags_in(diag)
    edge, verdict_text = verdict(agg, run_flags, deflation.n_runs)
    # write
    write_parquet(rd.oos, oos)
    write_atomic(rd.comparison, comparison.to_csv())
    write_sceptic(rd, sceptic)
    write_atomic(rd.metrics, as_written(table).to_csv(index=False))
    write_atomic(rd.diagnostics, diag.to_csv())
    title = f"{cfg.run_name}: walk-forward OOS, {len(segments)} segments"
    tearsheet_error = None
    if cfg.output.plots:
        plot_equity(oos, segments, rd.equity_png, title)
    if cfg.output.tearsheet:
        tearsheet_error = write_tearsheet(oos, rd.tearsheet, title)
    oos_gaps = gaps(oos)
    data = ReportData(cfg=cfg, segments=segments, oos=oos, table=table, comparison=comparison,
                      gaps=oos_gaps, deflation=deflation, tuning=tuning, diag=diag,
                      verdict=verdict_text, sceptic=sceptic, tables=tables,
                      equity_plot=rd.equity_png.name if rd.equity_png.is_file() else None,
                      tearsheet_error=tearsheet_error)
    summary = render_summary(data)
    write_atomic(rd.summary, summary)
    write_report_html(rd, summary, title)
    if cfg.output.tensorboard:
        log_hparams(cfg, rd, agg)
    return {"segments": segments, "sharpe": agg["sharpe"], "total_return": agg["total_return"],
            "psr": agg.get("psr"), "dsr": agg.get("dsr"), "n_trials": agg.get("n_trials"),
            "timing_p_value": agg.get("timing_p_value"), "gaps": oos_gaps, "edge": edge,
            "dsr_sceptic": agg.get("dsr_sceptic"), "n_trials_sceptic": agg.get("n_trials_sceptic"),
            "n_trials_effective": agg.get("n_trials_effective"),
            "mde_sharpe": agg.get("mde_sharpe"),
            "stepm_superior": {t.benchmark: list(t.superior) for t in sceptic.tests
                               if t.footing == MEAN_RETURN},
            "stepm_superior_risk_adjusted": {t.benchmark: list(t.superior)
                                             for t in sceptic.tests
                                             if t.footing != MEAN_RETURN},
            "verdict": verdict_text, "flags": run_flags,
            "insample_sharpe": float(diag.loc["all", "insample_sharpe"])}
