"""report: what a finished walk-forward run is, read from its directory (above backtest).

    from cryptorl_jax.report import Run, compare_runs

Modules: `write` (write_report: every aggregate output of a run), `read` (its segments),
`trials` (a tuning study's trial log), `registry` (the runs over an OOS window: the N of the
Deflated Sharpe), `tables` (metrics.csv, comparison.csv), `evidence` (the sceptic's tables),
`verdict`, `calibration` (the verdict's rule, size, power and minimum detectable Sharpe),
`summary` (summary.md, no file access), `markdown`, `plots`, `tearsheet`,
`tensorboard` (hparams), `html` (report.html), `paper` (a paper book's status.json) and `runs`
(finished runs as objects). Loading a finished run imports no JAX.
"""

from cryptorl_jax.report.runs import Comparison, NotARunError, Run, compare_runs
from cryptorl_jax.report.verdict import Verdict

__all__ = ["Comparison", "NotARunError", "Run", "Verdict", "compare_runs"]
