"""Machine load during benchmarks: cores used by OTHER processes, and waiting for quiet.

Used by scripts/bench.py's sub-benchmarks so that a figure taken on a busy machine is flagged
(the peers' harness measures it the same way, from /proc/stat).
"""

from __future__ import annotations

import os
import time


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Load:
    """Context manager: `cores` used by other processes during the block, `cpu` and `wall` s."""

    def __enter__(self) -> Load:
        self.busy0, self.total0 = busy_jiffies()
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy1, total1 = busy_jiffies()
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0
        machine = (os.cpu_count() or 1) * (busy1 - self.busy0) / max(total1 - self.total0, 1)
        self.cores = max(machine - self.cpu / max(self.wall, 1e-9), 0.0)
        self.cpu_s = self.cpu


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait until other processes use < threshold cores (1 s samples); returns the last load."""
    deadline = time.time() + max_wait
    while True:
        with Load() as load:
            time.sleep(1.0)
        if load.cores < threshold or time.time() >= deadline:
            return load.cores
