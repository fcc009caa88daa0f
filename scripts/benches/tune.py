"""tune: an 8-trial study one trial at a time, then as populations, in the same process.

    cryptorl bench tune [--config configs/tune_quick.yaml] [--trials 8] [--population 8]

Both studies search the config's dynamic-hyperparameter keys only (population mode refuses
the others; the same space is used for both, so the comparison is fair), on the same market,
with the same seeds and storage layout, each in its own temporary directory. The trainer cache
is cleared before each study, so each pays its own compilation. Reports both wall times, the
speed-up and how many times each study compiled the training step, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/tune_quick.yaml",
                        help="the tuning config (default configs/tune_quick.yaml)")
    parser.add_argument("--trials", type=int, default=8,
                        help="trials in each of the two studies (default 8)")
    parser.add_argument("--population", type=int, default=8,
                        help="trials per population batch")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted config overrides")


def hyper_space_config(cfg):
    """The config with its search space cut to the dynamic-hyperparameter keys."""
    import dataclasses

    from cryptorl_jax.training.spec import is_hyper_key

    space = tuple(p for p in cfg.tune.space if is_hyper_key(p.key))
    dropped = [p.key for p in cfg.tune.space if not is_hyper_key(p.key)]
    return dataclasses.replace(cfg, tune=dataclasses.replace(cfg.tune, space=space)), dropped


def _study(cfg, market, trials: int, population: int | None) -> dict:
    from cryptorl_jax.tuning.driver import run_study
    from cryptorl_jax.walkforward import stages

    stages._TRAINERS.clear()
    built = []
    make_train = stages.make_train

    def recording(*a, **k):  # every trainer the study builds, evicted from the cache or not
        built.append(make_train(*a, **k))
        return built[-1]

    stages.make_train = recording
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = run_study(cfg, trials, workdir=Path(tmp), market=market, progress=False,
                               population=population)
            wall = time.perf_counter() - t0
    finally:
        stages.make_train = make_train
    compiles = sum(t.trace_counts["train_chunk"] for t in built)
    return {"wall_s": wall, "compiles": compiles, "best_value": result.best_value,
            "n_trials": result.n_trials}


def main(args: argparse.Namespace) -> None:
    import jax

    from cryptorl_jax.config import load_config
    from cryptorl_jax.market import load_market

    cfg, dropped = hyper_space_config(load_config(args.config, ["output.progress=false",
                                                                *args.overrides]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"space: {[p.key for p in cfg.tune.space]} (dropped, not population keys: {dropped})")
    market = load_market(cfg.data)
    seq = _study(cfg, market, args.trials, None)
    print(f"one trial at a time: {seq['wall_s']:.0f} s, {seq['compiles']} compilation(s), "
          f"best {seq['best_value']:.4g}")
    pop = _study(cfg, market, args.trials, args.population)
    print(f"populations of {args.population}: {pop['wall_s']:.0f} s, {pop['compiles']} "
          f"compilation(s), best {pop['best_value']:.4g}")
    speedup = seq["wall_s"] / pop["wall_s"]
    print(f"speed-up: {speedup:.2f}x (target >= 2x on a 2-core CPU)")
    print(json.dumps({"trials": args.trials, "population": args.population,
                      "sequential_s": seq["wall_s"], "population_s": pop["wall_s"],
                      "speedup": speedup, "compiles": {"sequential": seq["compiles"],
                                                       "population": pop["compiles"]}}))
