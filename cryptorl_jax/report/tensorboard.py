"""The run's TensorBoard hparams record: its main settings beside its stitched-OOS metrics
(tensorboardX is imported on first use; the report does not depend on TensorBoard)."""

from __future__ import annotations

import logging
import math
import shutil
from typing import Any

from cryptorl_jax.config import Config
from cryptorl_jax.core.rundir import RunDir

log = logging.getLogger("cryptorl_jax.report")

HPARAM_KEYS = ("seed", "encoder.mode", "env.window", "env.fee_bps", "env.slippage_bps",
               "env.target_volatility", "env.max_leverage", "env.reward_scale",
               "env.borrow_rate_annual", "tqc.learning_rate", "tqc.gamma", "tqc.tau",
               "tqc.batch_size", "tqc.net_arch", "train.total_env_steps", "train.n_envs",
               "train.n_seeds", "wfo.train_months", "wfo.test_months", "features.ffd_d",
               "regimes.n_states")
HPARAM_METRICS = ("sharpe", "total_return", "max_drawdown", "psr", "dsr", "timing_p_value",
                  "turnover", "cost_per_year", "financing_per_year")


def hparams(cfg: Config) -> dict[str, Any]:
    """The run's main settings as flat scalars (TensorBoard's hparams take str/int/float/bool)."""
    raw = cfg.to_dict()
    out: dict[str, Any] = {}
    for key in HPARAM_KEYS:
        node: Any = raw
        for part in key.split("."):
            node = node[part]
        out[key] = node if isinstance(node, (int, float, str, bool)) else str(node)
    out["run_name"] = cfg.run_name
    return out


def log_hparams(cfg: Config, rd: RunDir, agg: dict[str, Any]) -> None:
    """The run's hparams with its stitched-OOS metrics, so `tensorboard --logdir <output dir>`
    compares runs in its HPARAMS tab (one event file, rewritten with each report)."""
    from tensorboardX import SummaryWriter

    metrics = {}
    for k in HPARAM_METRICS:
        try:
            v = float(agg.get(k, math.nan))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            metrics[f"oos/{k}"] = v
    target = rd.tensorboard / "hparams"
    shutil.rmtree(target, ignore_errors=True)  # one record per run, the latest report's
    try:
        with SummaryWriter(str(target)) as w:
            w.add_hparams(hparams(cfg), metrics, name=".")
    except Exception as exc:  # the report does not depend on TensorBoard
        log.warning("tensorboard hparams not written: %s: %s", type(exc).__name__, exc)

