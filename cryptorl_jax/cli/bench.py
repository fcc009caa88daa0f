"""`cryptorl bench NAME ...` runs scripts/bench.py of the source checkout this package is
installed from (the benchmarks compare against reference code in tests/ and scripts/benches/,
which a wheel does not ship)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from cryptorl_jax.cli.common import run_command


def main(argv: list[str] | None = None) -> int:
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
    if not script.is_file():
        print(f"bench: error: {script} does not exist: the benchmarks run from a source "
              "checkout (git clone, then pip install -e .)", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("cryptorl_bench_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # a bad --config or --set prints one line naming the key and gives 2, as every command does
    return run_command("bench", lambda: module.main(argv), interrupted="nothing was written")
