"""The entry scripts exit non-zero with a clear message on bad input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wfo_bad_config_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tqc:\n  learning_rat: 0.1\n")
    rc = load_script("wfo").main(["--config", str(cfg), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "tqc.learning_rat" in err and "bad.yaml" in err


def test_wfo_bad_override_and_missing_data(tmp_path, capsys):
    rc = load_script("wfo").main(["--config", str(ROOT / "configs" / "quick.yaml"),
                                  "--set", "env.window=abc", "--out", str(tmp_path)])
    assert rc == 2 and "env.window" in capsys.readouterr().err
    rc = load_script("wfo").main(["--config", str(ROOT / "configs" / "quick.yaml"),
                                  "--set", f"data.data_dir={tmp_path}", "--set",
                                  "data.cache_dir=null", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "BTC_1h.csv.gz: file not found" in err


def test_evaluate_not_a_run_dir(tmp_path, capsys):
    rc = load_script("evaluate").main(["--run", str(tmp_path)])
    assert rc == 2 and "not a walk-forward run directory" in capsys.readouterr().err


def test_bench_dispatcher_lists_benches(capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        with pytest.raises(SystemExit):
            load_script("bench").main(["--help"])
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = capsys.readouterr().out
    assert all(name in out for name in ("env", "pendulum", "train"))


def test_stock_tqc_flop_model_counts_sb3_contrib_update():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from benches.train import stock_tqc_update_flops
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    # by hand, obs 3, action 1, net [4], 2 critics x 5 quantiles, batch 2 (2 B in out a layer):
    # actor 3->4 (48) + mean and log_std 4->1 (16 + 16) = 80, first 48;
    # critics 2 x (4->4 (64) + 4->5 (80)) = 288, first 128.
    actor, actor_first, critic, critic_first = 80, 48, 288, 128
    by_hand = (actor + critic + actor                        # forwards on s', (s', a'), s
               + critic + critic + (critic - critic_first)   # critic loss fwd, dW, dX
               + 3 * critic                                  # actor loss through the critics
               + actor + (actor - actor_first))              # actor dW, dX
    assert stock_tqc_update_flops(3, 1, (4,), 2, 5, 2) == by_hand == 2160
    # the peers' settings: the issue's "about 2.7 GFLOP per update"
    peers = stock_tqc_update_flops(1025, 1, (256, 256), 2, 25, 256)
    assert 2.6e9 < peers < 2.75e9


def test_the_cli_shows_its_info_lines_after_a_library_configured_logging():
    """Importing orbax makes absl call a bare logging.basicConfig() (a stderr handler, the root
    at WARNING); the CLI's logging replaces that handler, so the run's INFO lines (a segment
    skipped by --resume, training resumed from a checkpoint) reach the user. Before: none did."""
    import os
    import subprocess

    code = ("import logging, sys\n"
            "import orbax.checkpoint\n"
            "assert logging.getLogger().handlers, 'orbax no longer configures logging'\n"
            "from cryptorl_jax.cli.common import run_command\n"
            "log = logging.getLogger('cryptorl_jax.walkforward')\n"
            "sys.exit(run_command('wfo', lambda: log.info('segment 0: finished before')))\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line, = [s for s in done.stderr.splitlines() if "segment 0: finished before" in s]
    assert line.endswith("cryptorl_jax.walkforward: segment 0: finished before")  # our format
