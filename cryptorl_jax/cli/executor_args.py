"""The --executor options shared by `cryptorl wfo` and `cryptorl tune`."""

from __future__ import annotations

import argparse
from typing import Any


def add_executor_arguments(p: argparse.ArgumentParser, *, tuning: bool = False) -> None:
    g = p.add_argument_group("executor (Ray: pip install -e \".[cluster]\")")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: in this process (default); ray: each "
                        + ("population batch" if tuning else "pending segment")
                        + " is a Ray task")
    g.add_argument("--address", default=None,
                   help="the Ray cluster's head, HOST:PORT (default: start a local Ray "
                        "instance on this host, one task per GPU)")
    g.add_argument("--gpus-per-task", type=float, default=None,
                   help="GPUs per task (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per task (1)")
    g.add_argument("--max-retries", type=int, default=2,
                   help="retries of a task whose worker died (2)")
    g.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to wait for --address to answer (10)")
    if tuning:
        g.add_argument("--max-in-flight", type=int, default=None,
                       help="population batches in flight at once (default: as many as the "
                            "cluster runs at once)")
    else:
        g.add_argument("--shared-fs", action="store_true",
                       help="the run directory is on a filesystem every worker sees: tasks "
                            "write into it (and resume from its checkpoints) instead of "
                            "shipping their results back")


def executor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"address": args.address, "gpus_per_task": args.gpus_per_task,
                          "cpus_per_task": args.cpus_per_task, "max_retries": args.max_retries,
                          "connect_timeout_s": args.connect_timeout}
    if hasattr(args, "shared_fs"):
        kw["shared_fs"] = args.shared_fs
    if hasattr(args, "max_in_flight"):
        kw["max_in_flight"] = args.max_in_flight
    return kw
