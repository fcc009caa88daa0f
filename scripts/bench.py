"""Benchmarks, as ratios against a baseline measured in the same run.

    python scripts/bench.py env        # jitted vmapped env vs a lean numpy env loop
    python scripts/bench.py pendulum   # TQC learning quality and speed on Pendulum-v1
    python scripts/bench.py train      # the fused training step (env + replay + TQC [+ MAE])
    python scripts/bench.py train --population 4   # P members in one step vs P = 1
    python scripts/bench.py tune       # an 8-trial study: one trial at a time vs populations

Each sub-benchmark lives in scripts/benches/<name>.py and ends with one JSON line.
Never put speed into a timed test: this script is where speed is measured.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

BENCHES = ("env", "pendulum", "train", "tune")


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    modules = {}
    for name in BENCHES:
        module = importlib.import_module(f"benches.{name}")
        modules[name] = module
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
    args = parser.parse_args(argv)
    modules[args.bench].main(args)


if __name__ == "__main__":
    main()
